"""Data-driven and theory-chosen initializers: LSUV (Mishkin & Matas 2015) and `critical`."""

import json

import numpy as np
import pytest
import yaml

from conftest import TINY
from initsuite.analysis import theory
from initsuite.configure import compose
from initsuite.setup import lsuv


def _output_var(model, layer, x) -> float:
    """Oracle: the layer's output variance from a separate sub-model (not LSUV's taps)."""
    import keras

    return float(np.var(np.asarray(keras.Model(model.inputs, layer.output)([x]), dtype=np.float64)))


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_lsuv_makes_every_layer_unit_variance_on_its_batch(act):
    from initsuite.setup import models

    cfg = compose(["init=lsuv", f"activation={act}", "model.depth=4", "model.width=64"])
    built = models.build(cfg, (8, 8, 1), 10)
    x = np.random.default_rng(0).uniform(0, 1, (48, 8, 8, 1)).astype(np.float32)
    before = {p.name: np.asarray(p.kernel_layer.kernel) for p in built.points}
    info = lsuv.lsuv(built, x, cfg)
    assert info["method"] == "lsuv" and info["converged"] and info["batch"] == 48
    assert (info["tol"], info["max_iter"]) == (lsuv.LSUV_TOL, lsuv.LSUV_MAX_ITER) == (0.1, 10)
    assert [r["layer"] for r in info["layers"]] == [p.name for p in built.points]
    for p, rec in zip(built.points, info["layers"]):
        measured = _output_var(built.model, p.pre_layer, x)
        assert abs(measured - 1.0) < lsuv.LSUV_TOL
        assert rec["var"] == pytest.approx(measured, rel=1e-4)
        assert rec["iterations"] >= 1 and abs(rec["var_initial"] - 1.0) >= lsuv.LSUV_TOL
        after = np.asarray(p.kernel_layer.kernel)
        assert np.allclose(after, before[p.name] * rec["scale"], rtol=1e-4, atol=1e-7)  # a pure rescaling
        assert rec["sigma_w2"] == pytest.approx(after.shape[0] * after.var(), rel=1e-4)
    # LSUV's taps are gone: the layers' own call is back
    assert all("call" not in vars(p.pre_layer) for p in built.points)


def test_lsuv_pre_init_is_orthonormal():
    from initsuite.setup import models

    built = models.build(compose(["init=lsuv", "model.depth=2", "model.width=32"]), (8, 8, 1), 10)
    w = np.asarray(built.model.get_layer("dense_01").kernel, dtype=np.float64)
    assert np.allclose(w.T @ w, np.eye(32), atol=1e-5)


def _custom_model(kind: str, activation: str):
    import keras

    from initsuite.setup.models import BuiltModel, ProbePoint

    if kind == "sequential":
        layers = [keras.layers.Conv2D(8, 3, activation=activation, name="conv"),
                  keras.layers.Flatten(name="flat"),
                  keras.layers.Dense(32, activation=activation, name="hidden"),
                  keras.layers.Dense(10, name="out")]
        model = keras.Sequential([keras.Input((8, 8, 1))] + layers)
        fused = [layers[0], layers[2], layers[3]]
    else:
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.a = keras.layers.Dense(48, activation=activation, name="a")
                self.b = keras.layers.Dense(48, activation=activation, name="b")
                self.out = keras.layers.Dense(10, name="out")

            def call(self, x):
                return self.out(self.b(self.a(keras.ops.reshape(x, (-1, 64)))))

        model = Net()
        model(np.zeros((1, 8, 8, 1), np.float32))
        fused = [model.a, model.b, model.out]
    # fused activations: no separate pre-activation layer, LSUV reads the layer's own output
    return BuiltModel(model, [ProbePoint(l.name, l, None, l) for l in fused])


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_lsuv_works_on_custom_models(kind):
    import keras

    keras.utils.set_random_seed(0)
    built = _custom_model(kind, "relu")
    x = np.random.default_rng(1).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    info = lsuv.lsuv(built, x)
    assert info["converged"]
    from initsuite.measure.probes import Taps

    taps = Taps({p.name: p.act_layer for p in built.points})  # an independent read of the outputs
    with taps.record() as out:
        built.model(x, training=False)
    for p, rec in zip(built.points, info["layers"]):
        assert abs(np.var(np.asarray(out[p.name], np.float64)) - 1.0) < lsuv.LSUV_TOL
        assert rec["var"] == pytest.approx(np.var(np.asarray(out[p.name], np.float64)), rel=1e-4)


def test_lsuv_records_a_layer_it_cannot_fix():
    """A fused tanh's output variance is below 1 whatever the scale: LSUV stops after 10 rescalings
    and says so instead of pretending."""
    import keras

    keras.utils.set_random_seed(0)
    built = _custom_model("sequential", "tanh")
    x = np.random.default_rng(1).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    info = lsuv.lsuv(built, x)
    conv = info["layers"][0]
    assert conv["iterations"] == lsuv.LSUV_MAX_ITER and not conv["converged"] and conv["var"] < 1
    assert not info["converged"]
    assert info["layers"][-1]["converged"]  # the linear output layer still reaches 1


def test_lsuv_run_records_init_info(make_cfg):
    from initsuite.run.train import run

    r = run(make_cfg(*TINY, "init=lsuv", "activation=tanh", "train.max_steps=2"))
    status = json.loads((r.path / "status.json").read_text())
    info = status["init_info"]
    assert info["method"] == "lsuv" and info["batch"] == 32 and info["converged"]
    assert [l["layer"] for l in info["layers"]] == ["dense_00", "dense_01", "dense_02", "logits"]
    assert all(abs(l["var"] - 1) < 0.1 and l["iterations"] >= 1 for l in info["layers"])
    # on the (different) probe batch at step 0 the pre-activations are still near unit variance
    pre = r.layer_stats.query("step == 0 and tensor == 'preactivation' and stat == 'var'").value
    assert ((pre > 0.6) & (pre < 1.6)).all(), pre.tolist()
    # the weights the probes measured are the rescaled ones the theory reads back
    w = r.layer_stats.query("step == 0 and tensor == 'weight' and stat == 'var' and layer == 'dense_01'").value
    assert info["layers"][1]["sigma_w2"] == pytest.approx(32 * float(w.iloc[0]), rel=1e-3)
    config = yaml.safe_load((r.path / "config.yaml").read_text())
    sig = theory.run_sigmas(config, fans=[(64, 32), (32, 32), (32, 32), (32, 10)], init_info=info)
    assert sig.sigma_w2 == pytest.approx([l["sigma_w2"] for l in info["layers"]])


@pytest.mark.parametrize("act,expected", [("tanh", 1.0), ("relu", 2.0), ("leaky_relu", 2 / 1.04)])
def test_critical_puts_the_activation_at_chi1_one(make_cfg, act, expected):
    from initsuite.setup import models

    cfg = make_cfg("init=critical", f"activation={act}", "model.depth=3", "model.width=256")
    built = models.build(cfg, (16, 16, 1), 10)
    info = lsuv.critical(built, None, cfg)
    assert info["method"] == "critical" and info["sigma_w2"] == pytest.approx(expected, rel=1e-4)
    assert info["chi1"] == pytest.approx(1.0, abs=1e-3) and info["phase"] == "critical"
    for name in ("dense_00", "dense_01", "dense_02"):  # realised sigma_w^2 = fan_in Var[W]
        w = np.asarray(built.model.get_layer(name).kernel, dtype=np.float64)
        assert w.shape[0] * w.var() == pytest.approx(expected, rel=0.03)


def test_critical_run_keeps_relu_signal_level(make_cfg):
    """Through the run's post_build hook: at sigma_w^2 = 2 a ReLU net keeps the pre-activation
    variance layer after layer (He et al. 2015), and status.json records what was done."""
    from initsuite.run.train import run

    r = run(make_cfg(*TINY, "init=critical", "activation=relu", "model.width=256", "model.depth=6",
                     "train.max_steps=0"))
    status = json.loads((r.path / "status.json").read_text())
    assert status["init_info"]["sigma_w2"] == pytest.approx(2.0, abs=1e-6)
    assert len(status["init_info"]["layers"]) == 7
    q = r.layer_stats.query("step == 0 and tensor == 'preactivation' and stat == 'var' and layer != 'logits'") \
        .sort_values("layer_index").value.to_numpy()
    assert 0.6 < q[-1] / q[0] < 1.6


def test_critical_gain_moves_off_the_edge(make_cfg):
    from initsuite.setup import models

    cfg = make_cfg("init=critical", "init.gain=1.5", "activation=tanh", "model.depth=2", "model.width=256")
    built = models.build(cfg, (16, 16, 1), 10)
    info = lsuv.critical(built, None, cfg)
    assert info["sigma_w2"] == pytest.approx(2.25, rel=1e-3) and info["phase"] == "chaotic"
    w = np.asarray(built.model.get_layer("dense_01").kernel, dtype=np.float64)
    assert 256 * w.var() == pytest.approx(2.25, rel=0.03)
