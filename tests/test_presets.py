"""Every study preset in conf/experiment/ composes, names itself, every value on its sweep axes
composes, and it trains a few steps on synthetic data."""

import pytest
from omegaconf import OmegaConf

from initsuite.configure import CONF_DIR, compose
from initsuite.sweep import grid

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# Tiny data and net (conf/debug/tiny.yaml): what is tested is that the preset's settings run, not its scale.
SYNTHETIC = ["debug=tiny", "train.max_steps=3", "train.progress=false"]


def test_the_issue_presets_exist():
    assert {"default", "tn_vs_xavier", "cnn_cifar10", "mlp_cifar10", "cnn_mnist", "depth_limits", "smoke"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_names_itself_and_sweeps_axes(name):
    cfg = compose([f"experiment={name}"], return_hydra_config=True)
    assert cfg.experiment == name  # the sweep folder and the tables' experiment column
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params and all(isinstance(v, str) for v in params.values()), "sweep axes are comma-separated strings"


def _axis_value(cfg, key):
    """What a composed config says for a sweep axis: a group's option name (an init's label), else the value."""
    if key == "net":  # a bundle of model settings (conf/net/): the option Hydra chose
        return cfg.hydra.runtime.choices[key]
    if key == "init":
        return cfg.init.label or cfg.init.name
    if key in ("dataset", "model", "activation", "optimizer"):
        return cfg[key].name
    return str(OmegaConf.select(cfg, key))


@pytest.mark.parametrize("name", PRESETS)
def test_every_value_on_every_axis_composes(name):
    params = OmegaConf.to_container(compose([f"experiment={name}"], return_hydra_config=True).hydra.sweeper.params)
    first = grid(name)[0]
    for key, values in params.items():
        for value in values.split(","):
            point = [o for o in first if not o.startswith(f"{key}=")] + [f"{key}={value}"]
            assert _axis_value(compose(point, return_hydra_config=True), key) == value, (key, value)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_a_few_steps_on_synthetic_data(name, tmp_path):
    from initsuite.run.train import run

    point = grid(name)[0]
    cfg = compose([*point, *SYNTHETIC, f"paths.results={tmp_path}"])
    assert cfg.experiment == name
    r = run(cfg)
    assert r.status in ("done", "diverged")
    assert r.info["steps"] >= 1
    assert len(r.metrics) and len(r.layer_stats)


def test_default_preset_is_the_issue_grid():
    """The thread's question: truncated_normal at TF1's, the tutorial's and Keras' stddev against Xavier
    as Caffe and as Keras draw it, and He, in tanh and ReLU MLPs of depth 3 and 10, over two seeds."""
    jobs = grid("default")
    assert len(jobs) == 6 * 2 * 2 * 2
    axes = {k: sorted({o.split("=", 1)[1] for j in jobs for o in j if o.startswith(k + "=")})
            for k in ("init", "activation", "model.depth", "seed")}
    assert axes["init"] == sorted(["truncated_normal_tf1", "truncated_normal_tutorial", "truncated_normal",
                                   "caffe_xavier", "glorot_uniform", "he_normal"])
    assert axes["activation"] == ["relu", "tanh"]
    assert axes["model.depth"] == ["10", "3"] and axes["seed"] == ["0", "1"]
    cfg = compose(["experiment=default"])
    assert cfg.dataset.name == "mnist" and cfg.model.name == "mlp"
    tutorial = compose(["experiment=default", "init=truncated_normal_tutorial"]).init
    assert tutorial.name == "truncated_normal" and tutorial.stddev == 0.1


def test_tn_vs_xavier_asks_the_seed_question():
    cfg = compose(["experiment=tn_vs_xavier"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    stddevs = sorted(compose([f"init={i}"]).init.stddev for i in params["init"].split(",")
                     if i.startswith("truncated_normal"))
    assert stddevs == [0.05, 0.1, 1.0]
    assert {"glorot_uniform", "glorot_normal"} <= set(params["init"].split(","))
    assert set(params["model"].split(",")) == {"mlp", "cnn"}
    depths = [int(d) for d in params["model.depth"].split(",")]
    assert min(depths) == 2 and max(depths) == 20
    assert len(params["seed"].split(",")) >= 3


def test_depth_limits_goes_past_50_layers():
    cfg = compose(["experiment=depth_limits"], return_hydra_config=True)
    assert max(int(d) for d in cfg.hydra.sweeper.params["model.depth"].split(",")) > 50


def test_caffe_to_tensorflow_asks_the_threads_question():
    from initsuite.setup import initializers

    cfg = compose(["experiment=caffe_to_tensorflow"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    inits = params["init"].split(",")
    thread = {"caffe_xavier", "caffe_msra", "caffe_gaussian", "tf_contrib_xavier", "tf_contrib_xavier_normal",
              "prettytensor_xavier_normal", "xavier_sigmoid4"}
    assert thread | {"truncated_normal_tf1", "truncated_normal_tutorial", "glorot_uniform", "he_normal"} <= set(inits)
    assert all(initializers.get(compose([f"init={i}"]).init.name) for i in inits)
    nets = {}
    for net in params["net"].split(","):
        m = compose(["experiment=caffe_to_tensorflow", f"net={net}"]).model
        nets[net] = (m.name, m.depth)
    assert {"caffe_lenet", "tf_deep_mnist"} <= {name for name, _ in nets.values()}
    mlp_depths = sorted(d for name, d in nets.values() if name == "mlp")
    assert mlp_depths[0] <= 2 and mlp_depths[-1] >= 10
    assert set(params["activation"].split(",")) == {"relu", "tanh"}
    assert len(params["seed"].split(",")) >= 3
    assert len(grid("caffe_to_tensorflow")) == len(inits) * len(nets) * 2 * len(params["seed"].split(","))
