"""Bring-your-own-model: builder loading and errors, re-initialization with the right fans,
probes on functional / subclassed / nested / residual models, the example, the Python API."""

import json
import math
import sys

import keras
import numpy as np
import pytest

from conftest import TINY
from initsuite.setup import custom, initializers
from initsuite.setup.custom import BuilderError

THIS = "test_custom"  # this module, importable as a builder path (tests/ is on sys.path)
FAST = [*TINY, "model=custom", "train.max_steps=2", "probes.every=1", "probes.hist_steps=[]", "train.eval_examples=64"]


# --------------------------------------------------------------------------- builders under test


def residual_functional(input_shape, num_classes, activation=None):
    """conv -> f -> conv, added to a 1x1 projection of the input; dense head. Zeros/ones init, so a
    layer the suite missed is caught by the variance check."""
    act = activation or "tanh"
    k = dict(kernel_initializer="zeros", bias_initializer="ones")
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv_a", **k)(inputs)
    h = keras.layers.Activation(act, name="act_a")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv_b", **k)(h)
    shortcut = keras.layers.Conv2D(16, 1, name="proj", **k)(inputs)
    h = keras.layers.Add(name="add")([h, shortcut])
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation=act, name="dense", **k)(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits", **k)(h))


class Block(keras.layers.Layer):
    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="zeros", name="conv_a")
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.conv_b = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="zeros", name="conv_b")

    def call(self, x, training=False):
        return x + self.conv_b(keras.ops.relu(self.bn(self.conv_a(x), training=training)))


class SubclassedNet(keras.Model):
    def __init__(self, num_classes):
        super().__init__(name="subnet")
        # attributes are declared in an order unrelated to depth; the suite orders by call
        self.head = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="logits")
        self.block_2 = Block(16, name="block_2")
        self.block_1 = Block(16, name="block_1")
        self.stem = keras.layers.Conv2D(16, 3, padding="same", kernel_initializer="zeros", name="stem")

    def call(self, x, training=False):
        h = self.block_2(self.block_1(self.stem(x), training=training), training=training)
        return self.head(keras.ops.mean(h, axis=(1, 2)))


def subclassed(input_shape, num_classes):  # no activation argument: runs with activation=keep
    return SubclassedNet(num_classes)


def nested(input_shape, num_classes, activation="relu"):
    """A Sequential trunk (no Input: built when first called) inside a functional model."""
    trunk = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(48, activation=activation, name="d1"),
                              keras.layers.Dense(48, activation=activation, name="d2")], name="trunk")
    inputs = keras.Input(input_shape)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probs")(trunk(inputs))
    return keras.Model(inputs, out)


def exotic(input_shape, num_classes):
    """Kernels whose right fans differ from Keras': depthwise, separable, transposed."""
    inputs = keras.Input(input_shape)
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=4, padding="same", name="dw")(inputs)
    h = keras.layers.SeparableConv2D(32, 3, depth_multiplier=2, padding="same", name="sep")(h)
    h = keras.layers.Conv2DTranspose(8, 3, padding="same", name="tr")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h))


def deep(input_shape, num_classes, depth=60, width=8):
    inputs = keras.Input(input_shape)
    h = inputs
    for i in range(depth):
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv_{i:02d}")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h))


def fused(input_shape, num_classes):
    """No separate activation layers: every Dense applies its own tanh, the logits none."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Dense(16, activation="tanh", name="h1")(keras.layers.Flatten()(inputs))
    h = keras.layers.Dense(16, activation="tanh", name="h2")(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="out")(h))


def not_a_model(input_shape, num_classes):
    return keras.layers.Dense(num_classes)


# --------------------------------------------------------------------------- helpers


def kernels_match_formula(model, init_cfg, fans_of):
    """Every re-initialized kernel's empirical variance against the initializer's formula at the
    given fans (5 standard errors of a sample variance), and mean ~ 0."""
    spec = initializers.get(init_cfg.name)
    checked = []
    for path, layer in custom.layer_paths(model):
        rule = custom.kernel_rule(layer)
        if rule is None:
            continue
        for attr in rule.kernels:
            w = np.asarray(getattr(layer, attr), dtype=np.float64)
            fan_in, fan_out = fans_of(layer, attr, w.shape)
            want = spec.variance(fan_in, fan_out, init_cfg)
            tol = 5 * math.sqrt(2.0 / w.size)
            assert w.var() == pytest.approx(want, rel=tol), (path, attr, w.shape)
            assert abs(w.mean()) < 5 * math.sqrt(want / w.size), (path, attr)
            checked.append(f"{path}/{attr}")
    return checked


def keras_fans(layer, attr, shape):
    return initializers.compute_fans(shape)


def build(make_cfg, builder, *overrides):
    cfg = make_cfg(*FAST, f"model.builder={THIS}:{builder}", *overrides)
    return cfg, custom.build(cfg, (8, 8, 4), 10)


# --------------------------------------------------------------------------- builder errors


@pytest.mark.parametrize("ref,needles", [
    ("nosuchmodule_xyz:build", ["nosuchmodule_xyz", "cannot import module", "No module named"]),
    ("experiments.custom_resnet:biuld", ["biuld", "experiments.custom_resnet", "Did you mean build"]),
    (f"{THIS}:not_a_model", ["not_a_model", "Dense", "not a keras.Model"]),
    ("experiments.custom_resnet", ["package.module:function"]),
    (f"{THIS}:subclassed", ["activation=keep", "activation"]),  # activation=tanh passed to a builder without it
])
def test_bad_builder_names_the_problem(make_cfg, tmp_path, ref, needles):
    from initsuite.run.train import run

    cfg = make_cfg(*FAST, f"model.builder={ref}", "activation=" + ("keep" if "not_a_model" in ref else "tanh"))
    with pytest.raises(BuilderError) as err:
        run(cfg)
    for needle in needles:
        assert needle in str(err.value)
    if "not_a_model" not in ref:  # caught by validate, before any run folder exists
        assert not (tmp_path / "results" / "runs").exists()


def test_missing_builder_and_bad_kwargs(make_cfg):
    with pytest.raises(BuilderError, match="model.builder=package.module:function"):
        custom.validate(make_cfg(*FAST))
    cfg = make_cfg(*FAST, f"model.builder={THIS}:deep", "activation=keep", "+model.kwargs.depht=3")
    with pytest.raises(BuilderError, match="depht"):
        custom.validate(cfg)


def test_import_error_inside_the_builder_module(tmp_path, monkeypatch):
    (tmp_path / "broken_builder_mod.py").write_text("import not_installed_pkg_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BuilderError, match="broken_builder_mod.*not_installed_pkg_xyz"):
        custom.load_builder("broken_builder_mod:build")


def test_example_path_resolves_from_the_launch_directory(monkeypatch):
    """The ``initsuite`` command does not put the launch directory on sys.path; the builder path still imports."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.delitem(sys.modules, "experiments.custom_resnet", raising=False)
    monkeypatch.delitem(sys.modules, "experiments", raising=False)
    fn = custom.load_builder("experiments.custom_resnet:build")
    assert fn.__name__ == "build"


# --------------------------------------------------------------------------- re-initialization


@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal"])
def test_functional_residual_model_is_reinitialized(make_cfg, init):
    cfg, built = build(make_cfg, "residual_functional", f"init={init}")
    checked = kernels_match_formula(built.model, cfg.init, keras_fans)
    assert checked == ["conv_a/kernel", "conv_b/kernel", "proj/kernel", "dense/kernel", "logits/kernel"]
    assert built.reinitialized == ["conv_a", "conv_b", "proj", "dense", "logits"]
    for name in built.reinitialized:  # the builder's ones -> init.bias (0)
        assert np.all(np.asarray(built.model.get_layer(name).bias) == 0.0)
    bn = built.model.get_layer("bn")  # not a kernel layer: left as built
    assert np.all(np.asarray(bn.gamma) == 1.0) and np.all(np.asarray(bn.moving_variance) == 1.0)


def test_subclassed_and_nested_models_are_reinitialized(make_cfg):
    cfg, built = build(make_cfg, "subclassed", "activation=keep", "init=lecun_normal")
    assert sorted(kernels_match_formula(built.model, cfg.init, keras_fans)) == [
        "block_1/conv_a/kernel", "block_1/conv_b/kernel", "block_2/conv_a/kernel", "block_2/conv_b/kernel",
        "logits/kernel", "stem/kernel"]
    assert [p.name for p in built.points] == [  # ordered by depth (call order), not by attribute
        "stem", "block_1/conv_a", "block_1/conv_b", "block_2/conv_a", "block_2/conv_b", "logits"]
    cfg, built = build(make_cfg, "nested", "init=truncated_normal_tutorial")
    kernels_match_formula(built.model, cfg.init, keras_fans)
    assert [p.name for p in built.points] == ["trunk/d1", "trunk/d2", "probs"]
    assert np.allclose(np.asarray(built.model.get_layer("trunk").get_layer("d1").bias), 0.1)  # preset's bias


def test_right_fans_for_depthwise_separable_transposed_and_embedding(make_cfg):
    """Oracle: the fans written out by hand for each kernel shape."""
    cfg, built = build(make_cfg, "exotic", "activation=keep", "init=he_uniform")

    def right_fans(layer, attr, shape):
        rf = math.prod(shape[:-2])
        if attr in ("depthwise_kernel",) or layer.name == "dw":  # (k, k, in, mult): one input channel per output
            return rf, rf * shape[-1]
        if layer.name == "tr":  # (k, k, out, in)
            return shape[-1] * rf, shape[-2] * rf
        return initializers.compute_fans(shape)

    checked = kernels_match_formula(built.model, cfg.init, right_fans)
    assert checked == ["dw/kernel", "sep/depthwise_kernel", "sep/pointwise_kernel", "tr/kernel", "logits/kernel"]
    # Keras' own fans would give the depthwise kernel 4x (= in channels) too small a variance
    dw = np.asarray(built.model.get_layer("dw").kernel)
    assert dw.var() > 3 * initializers.get("he_uniform").variance(*initializers.compute_fans(dw.shape), cfg.init)

    emb = keras.layers.Embedding(1000, 32)
    emb.build((None, 5))
    holder = keras.Sequential([emb])
    custom.reinitialize(holder, cfg.init, 0)
    table = np.asarray(emb.embeddings)
    assert table.var() == pytest.approx(2.0 / 1, rel=0.05)  # he: 2 / fan_in, fan_in = 1 for a lookup


def test_registering_a_new_kernel_layer(make_cfg):
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(int(shape[-1]), 64), initializer="zeros")

        def call(self, x):
            return x @ self.w

    name = "ScaleForTest"
    Scale.__name__ = name
    custom.register_kernel_layer(Scale, {"w": custom.keras_fans}, biases=())
    try:
        layer = Scale()
        layer.build((None, 128))
        custom.reinitialize(keras.Sequential([layer]), make_cfg("init=glorot_uniform").init, 0)
        assert np.asarray(layer.w).var() == pytest.approx(2.0 / (128 + 64), rel=0.1)
    finally:
        custom.KERNEL_LAYERS._items.pop(name)


# --------------------------------------------------------------------------- instrumented runs


def test_functional_residual_run_measures_every_kernel_layer(make_cfg):
    from initsuite.run.train import run

    result = run(make_cfg(*FAST, f"model.builder={THIS}:residual_functional", "activation=tanh"))
    assert result.status == "done"
    ls = result.layer_stats
    order = ls.drop_duplicates("layer").sort_values("layer_index").layer.tolist()
    assert order == ["conv_a", "conv_b", "proj", "dense", "logits"]
    at0 = ls[ls.step == 0]
    for layer in order:
        tensors = set(at0[at0.layer == layer].tensor)
        assert {"backprop_grad", "weight", "weight_grad"} <= tensors, layer
        # the last kernel layer is the output (the logits): measured, but not as a hidden layer
        assert ("activation" in tensors) == (layer != "logits"), layer
    assert "preactivation" in set(at0[at0.layer == "logits"].tensor)
    # conv_a feeds a separate Activation layer: s and z = f(s) as in the built-in models, with saturation
    conv_a = at0[at0.layer == "conv_a"]
    assert {"preactivation", "activation"} <= set(conv_a.tensor)
    assert "saturated_frac" in set(conv_a[conv_a.tensor == "activation"].stat)
    # dense has its activation fused: its output is the activation, no preactivation
    assert "preactivation" not in set(at0[at0.layer == "dense"].tensor)
    record = json.loads((result.path / "reinitialized.json").read_text())
    assert [m["layer"] for m in record["measured"]] == order
    assert {r["layer"] for r in record["reinitialized"]} == set(order)
    assert "bn" in {r["layer"] for r in record["left_as_built"]}
    assert json.loads((result.path / "status.json").read_text())["reinitialized"] == order


def test_subclassed_and_nested_runs(make_cfg):
    from initsuite.run.train import run

    sub = run(make_cfg(*FAST, f"model.builder={THIS}:subclassed", "activation=keep"))
    names = sub.layer_stats.drop_duplicates("layer").sort_values("layer_index").layer.tolist()
    assert names == ["stem", "block_1/conv_a", "block_1/conv_b", "block_2/conv_a", "block_2/conv_b", "logits"]
    # the back-propagated gradient is read at each layer's output: non-zero, finite
    g = sub.layer_stats[(sub.layer_stats.tensor == "backprop_grad") & (sub.layer_stats.stat == "var")]
    assert (g.value > 0).all() and np.isfinite(g.value).all()

    nest = run(make_cfg(*FAST, f"model.builder={THIS}:nested", "activation=relu"))
    assert set(nest.layer_stats.layer) == {"trunk/d1", "trunk/d2", "probs"}
    record = json.loads((nest.path / "reinitialized.json").read_text())
    assert record["output_softmax_removed"] == "probs"  # the loss takes logits
    assert nest.info["final_train_loss"] < 5  # softmax twice would still train; logits train properly


@pytest.mark.slow  # ~1 min on 2 cores: tracing the instrumented steps grows with the layer count
def test_deep_model_trains_within_memory(make_cfg):
    """50 narrow conv layers + logits at batch 8: builds, is instrumented, trains 2 steps."""
    from initsuite.run.train import run

    result = run(make_cfg(*FAST, f"model.builder={THIS}:deep", "activation=keep", "init=he_normal",
                          "train.batch_size=8", "probes.batch_size=16", "+model.kwargs.depth=50"))
    assert result.status == "done" and result.info["steps"] == 2
    assert result.layer_stats.layer.nunique() == 51


def test_the_example_runs_a_few_steps(make_cfg):
    from initsuite.run.train import run

    result = run(make_cfg(*FAST, "model.builder=experiments.custom_resnet:build", "activation=keep",
                          "dataset.image_shape=[8,8,3]", "+model.kwargs.width=4"))
    assert result.status == "done"
    layers = result.layer_stats.drop_duplicates("layer").sort_values("layer_index").layer.tolist()
    assert layers[0] == "stem_conv" and layers[-1] == "logits" and "s1b0_proj" in layers
    assert len(layers) == 10


# --------------------------------------------------------------------------- Python API


def test_compare_runs_the_cli_code_path(tmp_path):
    import initsuite.sweep.api as api

    def tiny_net(input_shape, num_classes, activation=None):  # a "notebook" function
        inputs = keras.Input(input_shape)
        h = keras.layers.Dense(32, activation=activation or "tanh", name="hidden")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h))

    kwargs = dict(inits=["standard", "glorot_uniform"], dataset="synthetic", steps=3, activation="keep",
                  results_dir=str(tmp_path), overrides=[o for o in TINY if not o.startswith("model.")])
    tables = api.compare(tiny_net, **kwargs)
    runs = tables["runs"]
    assert runs.init.tolist() == ["standard", "glorot_uniform"] and (runs.status == "done").all()
    assert runs.model.str.startswith("initsuite.setup.custom:registered.tiny_net#").all()
    ls = tables["layer_stats"]
    assert {"init", "activation", "seed", "run_id"} <= set(ls.columns)
    assert set(ls.layer) == {"hidden", "logits"} and set(ls.init) == {"standard", "glorot_uniform"}
    # standard init has n Var[W] = 1/3, Glorot's 2/(n_in+n_out): the weight tables say so
    w = ls[(ls.step == 0) & (ls.tensor == "weight") & (ls.stat == "var") & (ls.layer == "hidden")]
    v = dict(zip(w.init, w.value))
    n_in = 8 * 8 * 1
    assert v["standard"] == pytest.approx(1 / (3 * n_in), rel=0.1)
    assert v["glorot_uniform"] == pytest.approx(2 / (n_in + 32), rel=0.1)
    again = api.compare(tiny_net, **kwargs)  # same code, same run ids: read back, not rerun
    assert again["runs"].skipped.all() and again["runs"].run_id.tolist() == runs.run_id.tolist()
    assert list(api.summary(tables).columns)[:3] == ["init", "activation", "seed"]


def test_the_last_kernel_layer_of_a_custom_model_is_the_output(make_cfg):
    """A model without separate activation layers: its logits are the output layer, not a hidden
    one -- no activation rows, a histogram axis of their own, never the "top hidden layer"."""
    from initsuite import tables
    from initsuite.analysis import verdicts
    from initsuite.run.train import run

    result = run(make_cfg(*FAST, f"model.builder={THIS}:fused", "activation=keep", "init=glorot_uniform",
                          "probes.hist_steps=[0]"))
    assert result.status == "done"
    ls = result.layer_stats
    tensors = ls.groupby("layer").tensor.agg(set)
    assert "activation" in tensors["h1"] and "activation" in tensors["h2"]
    assert "activation" not in tensors["out"] and {"preactivation", "backprop_grad", "weight"} <= tensors["out"]
    assert tables.hidden_layer_names(ls) == ["h1", "h2"]
    assert set(tables.hidden_rows(ls).layer) == {"h1", "h2"}
    h = result.histograms[(result.histograms.tensor == "backprop_grad") & (result.histograms.step == 0)]
    span = h.groupby("layer").agg(lo=("left", "min"), hi=("right", "max"))
    assert span.loc["h1"].tolist() == span.loc["h2"].tolist()  # the hidden layers share one axis
    assert span.loc["out"].tolist() != span.loc["h1"].tolist()  # the output has its own
    ev = {k: v for x in verdicts.diagnose({"status": "done", "activation": "tanh"}, ls, result.metrics)
          for k, v in x.evidence.items()}
    assert verdicts._Stats(ls).hidden == ["h1", "h2"] and ev.get("top_layer", "h2") == "h2"
