"""The per-step NaN/Inf check (initsuite.measure.instrument): a large tensor is screened by the
finiteness of its sum, so a finite tensor whose float32 sum overflows must not be flagged; an
activation that maps finite s to finite z is not checked apart from s, so every registry entry that
claims it must keep float32/float16 extremes finite, and one that does not (selu) is still located
at its activation."""

import numpy as np
import pytest
import tensorflow as tf

from initsuite.measure import instrument
from initsuite.setup import activations


@pytest.mark.parametrize("name", activations.names())
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_an_activation_claiming_finite_outputs_keeps_every_finite_input_finite(name, dtype):
    spec = activations.get(name)
    big = float(tf.as_dtype(dtype).max)
    s = tf.cast(tf.constant([-big, -big / 2, -1e4, -1.0, -1e-30, 0.0, 1e-30, 1.0, 1e4, big / 2, big], tf.float64), dtype)
    s = s[tf.math.is_finite(tf.cast(s, tf.float32))]
    z = tf.cast(spec.tensor_fn()(s), tf.float32).numpy()
    if spec.finite_preserving():
        assert np.isfinite(z).all(), (name, dtype, z)
    elif name == "selu" and dtype == "float32":  # why selu is checked: scale 1.05 overflows near the max
        assert not np.isfinite(z).all()


def test_leaky_relu_keeps_finite_only_with_a_slope_of_at_most_one():
    spec = activations.get("leaky_relu")
    assert spec.finite_preserving(0.2) and spec.finite_preserving(1.0) and not spec.finite_preserving(3.0)


@pytest.mark.parametrize("screen_min", [0, 1 << 30])  # every tensor screened by its sum / none
def test_finite_check_equals_the_exact_test(monkeypatch, screen_min):
    monkeypatch.setattr(instrument, "SCREEN_MIN", screen_min)
    rng = np.random.default_rng(0)
    n = 1 << 17
    cases = {"normal": rng.standard_normal(n), "overflowing sum": np.full(n, 1e34),
             "overflowing, mixed signs": np.where(rng.random(n) < 0.9, 3e38, -1.0)}
    for where in (0, n // 2, n - 1):
        for bad in (np.nan, np.inf, -np.inf):
            x = rng.standard_normal(n)
            x[where] = bad
            cases[f"{bad} at {where}"] = x
    x = np.full(n, 1e34)
    x[7] = -np.inf
    cases["-inf among values whose sum overflows"] = x
    check = tf.function(lambda t: instrument.finite_check(t))
    for label, values in cases.items():
        t = tf.constant(values.astype(np.float32).reshape(256, -1))
        want = bool(np.isfinite(values.astype(np.float32)).all())
        assert bool(check(t)) == want == bool(instrument._all_finite(t)), label


def _instrument(make_cfg, activation, *extra):
    import keras

    from initsuite.measure.instrument import Instrument
    from initsuite.setup import models

    cfg = make_cfg("dataset=synthetic", "model.depth=2", "model.width=64", f"activation={activation}",
                   "init=glorot_uniform", "probes.enabled=false", *extra)
    built = models.build(cfg, (3, 2, 1), 4)
    optimizer = keras.optimizers.SGD(0.0)  # lr 0: each step sees the weights set here
    optimizer.build(built.model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return built, Instrument(built, loss_fn, optimizer, cfg)


def _step(inst, batch=16):
    x = tf.ones([batch, 3, 2, 1])
    y = tf.ones([batch], tf.int64)
    inst.train_step(x, y, 0)
    return inst.first_nonfinite()


def _huge_forward(built):
    k = built.model.get_layer("dense_00").kernel
    k.assign(tf.fill(k.shape, 5e37))  # s = 6 inputs x 5e37 = 3e38: finite; 16 x 64 of them sum past float32's max


def _huge_gradient(built):
    first = built.model.get_layer("dense_00").kernel
    first.assign(tf.zeros(first.shape))  # z_0 = 0, so every later layer and the logits stay finite
    w = np.zeros(built.model.get_layer("dense_01").kernel.shape, np.float32)
    w[:, 0] = 1e38  # dC/ds_0 = dC/ds_1 W_1^T = 1e38 dC/ds_1[:, 0]: ~1e36 per entry, one sign (one input, one label)
    built.model.get_layer("dense_01").kernel.assign(w)


@pytest.mark.parametrize("screen_min", [0, 1 << 30])
@pytest.mark.parametrize("activation,setup", [("tanh", _huge_forward), ("linear", _huge_gradient)])
def test_a_finite_tensor_whose_sum_overflows_is_not_a_nan(make_cfg, monkeypatch, screen_min, activation, setup):
    monkeypatch.setattr(instrument, "SCREEN_MIN", screen_min)
    built, inst = _instrument(make_cfg, activation)
    setup(built)
    assert _step(inst) is None


@pytest.mark.parametrize("screen_min", [0, 1 << 30])
def test_a_true_overflow_is_located_at_its_tensor_whether_screened_or_not(make_cfg, monkeypatch, screen_min):
    monkeypatch.setattr(instrument, "SCREEN_MIN", screen_min)
    built, inst = _instrument(make_cfg, "tanh")
    k = built.model.get_layer("dense_01").kernel
    k.assign(tf.fill(k.shape, 1e37))  # z_0 = tanh(...) ~ 1 in 64 units: s_1 ~ 6e38 overflows
    first = built.model.get_layer("dense_00").kernel
    first.assign(tf.fill(first.shape, 1.0))
    got = _step(inst)
    assert (got["phase"], got["layer"], got["tensor"], got["step"]) == ("forward", "dense_01", "preactivation", 0)


def test_an_activation_that_can_overflow_is_checked_on_its_own(make_cfg):
    built, inst = _instrument(make_cfg, "selu")
    assert not any(p.act_keeps_finite for p in built.points)
    k = built.model.get_layer("dense_00").kernel
    k.assign(tf.fill(k.shape, 3.3e38 / 6))  # s = 3.3e38 (finite), selu(s) = 1.05 s = inf
    got = _step(inst)
    assert (got["phase"], got["layer"], got["tensor"]) == ("forward", "dense_00", "activation")


def test_models_mark_the_activations_that_keep_finite_values(make_cfg):
    from initsuite.setup import models

    for name in ("tanh", "relu", "selu", "gelu"):
        built = models.build(make_cfg("dataset=synthetic", "model.depth=2", f"activation={name}"), (3, 2, 1), 4)
        hidden = [p for p in built.points if p.act_layer is not None]
        assert hidden and all(p.act_keeps_finite == activations.get(name).finite_preserving() for p in hidden)
        assert not any(p.act_keeps_finite for p in built.points if p.act_layer is None)


def test_a_users_model_marks_only_the_activations_it_knows_keep_finite_values():
    import keras

    from initsuite.setup import custom

    inp = keras.Input((6,))
    h = inp
    for name, act in (("relu", keras.layers.ReLU()), ("selu", keras.layers.Activation("selu")),
                      ("tanh", keras.layers.Activation("tanh")), ("leaky", keras.layers.LeakyReLU(3.0))):
        h = act(keras.layers.Dense(8, name=f"dense_{name}")(h))
    model = keras.Model(inp, keras.layers.Dense(3, name="out")(h))
    built = custom.describe(model, input_shape=(6,))
    got = {p.name: p.act_keeps_finite for p in built.points}
    assert got == {"dense_relu": True, "dense_selu": False, "dense_tanh": True, "dense_leaky": False, "out": False}
