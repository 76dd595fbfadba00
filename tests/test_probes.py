"""Probe statistics against a NumPy recomputation on a tiny net."""

import numpy as np
import pytest
import tensorflow as tf

from initsuite.measure.probes import Taps, percentile_name, tensor_stats


def test_tensor_stats_match_numpy_and_skip_nonfinite():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 11)).astype(np.float32)
    x[0, 0] = 0.0
    x_bad = x.copy()
    x_bad[1, :3] = [np.nan, np.inf, -np.inf]
    s = {k: float(v) for k, v in tensor_stats(tf.constant(x_bad), (2, 50, 98)).items()}
    finite = x_bad[np.isfinite(x_bad)].astype(np.float64)
    assert s["nonfinite_count"] == 3
    assert s["mean"] == pytest.approx(finite.mean(), abs=1e-6)
    assert s["var"] == pytest.approx(finite.var(), rel=1e-5)
    assert s["std"] == pytest.approx(finite.std(), rel=1e-5)
    for q in (2, 50, 98):
        assert s[percentile_name(q)] == pytest.approx(np.percentile(finite, q), abs=1e-6)
    assert s["zero_frac"] == pytest.approx(np.mean(finite == 0.0))


def test_tensor_stats_all_nonfinite_gives_nan_not_error():
    s = tensor_stats(tf.constant([np.nan, np.inf], tf.float32))
    assert float(s["nonfinite_count"]) == 2 and np.isnan(float(s["mean"]))


def test_taps_record_only_inside_record():
    import keras

    inp = keras.Input((3,))
    d = keras.layers.Dense(2, name="d")
    model = keras.Model(inp, d(inp))
    taps = Taps({"d": d})
    x = np.ones((4, 3), np.float32)
    with taps.record() as out:
        y = model(x)
    assert np.allclose(np.asarray(out["d"]), np.asarray(y))
    model(x)  # outside record: nothing kept, nothing breaks
    with taps.record() as out2:
        pass
    assert out2 == {}


def _softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_probe_matches_numpy_backprop(make_cfg):
    """A 2-hidden-layer tanh MLP: every statistic the probe reports, recomputed by hand."""
    from initsuite.setup import models
    from initsuite.measure.instrument import Instrument

    import keras

    cfg = make_cfg("dataset=synthetic", "model.depth=2", "model.width=7", "activation=tanh",
                   "init=glorot_uniform", "init.bias=0.05")
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (13, 3, 2, 1)).astype(np.float32)
    y = rng.integers(0, 4, 13).astype(np.int64)
    built = models.build(cfg, (3, 2, 1), 4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    inst = Instrument(built, loss_fn, keras.optimizers.SGD(0.1), cfg)
    stats, hists = inst.probe(tf.constant(x), tf.constant(y), True)

    W = [np.asarray(built.model.get_layer(n).kernel, np.float64) for n in ("dense_00", "dense_01", "logits")]
    b = [np.asarray(built.model.get_layer(n).bias, np.float64) for n in ("dense_00", "dense_01", "logits")]
    h = x.reshape(13, -1).astype(np.float64)
    inputs, pre, act = [], [], []
    for i in range(2):
        inputs.append(h)
        s = h @ W[i] + b[i]
        h = np.tanh(s)
        pre.append(s)
        act.append(h)
    inputs.append(h)
    logits = h @ W[2] + b[2]
    delta = (_softmax(logits) - np.eye(4)[y]) / len(y)  # dC/dlogits for the mean cross-entropy
    dW = [None, None, inputs[2].T @ delta]
    dS = [None, None, delta]
    for i in (1, 0):
        dS[i] = (dS[i + 1] @ W[i + 1].T) * (1 - act[i] ** 2)
        dW[i] = inputs[i].T @ dS[i]

    def check(layer, tensor, ref, stat_names=("mean", "var", "std", "p02", "p50", "p98")):
        got = stats[(layer, tensor)]
        for st in stat_names:
            want = {"mean": ref.mean(), "var": ref.var(), "std": ref.std()}.get(st)
            if want is None:
                want = np.percentile(ref, float(st[1:]))
            assert got[st] == pytest.approx(want, rel=2e-4, abs=1e-7), (layer, tensor, st)

    for i, name in enumerate(("dense_00", "dense_01")):
        check(name, "preactivation", pre[i])
        check(name, "activation", act[i])
        check(name, "backprop_grad", dS[i])
        check(name, "weight_grad", dW[i])
        check(name, "weight", W[i])
        sat = np.mean(1 - act[i] ** 2 < 0.05)
        assert stats[(name, "activation")]["saturated_frac"] == pytest.approx(sat)
    check("logits", "backprop_grad", dS[2])
    check("logits", "weight_grad", dW[2])
    # histograms: every probe value counted once, on a common axis for all layers
    for name in ("dense_00", "dense_01"):
        edges, counts = hists[(name, "activation")]
        assert counts.sum() == act[0].size
        assert len(edges) == len(counts) + 1
    e0, _ = hists[("dense_00", "activation")]
    e1, _ = hists[("dense_01", "activation")]
    assert np.allclose(e0, e1)
    # dC/ds: hidden layers share an axis; the output layer, with far wider gradients, has its own
    g0, c0 = hists[("dense_00", "backprop_grad")]
    g1, _ = hists[("dense_01", "backprop_grad")]
    gl, cl = hists[("logits", "backprop_grad")]
    assert np.allclose(g0, g1) and not np.allclose(g0, gl)
    # the counts (a second forward/backward pass, Instrument._hist_step) are those of the NumPy
    # values on the reported axis, outliers in the edge bins; a value within float32 rounding of
    # an edge may fall on either side
    logits_s = inputs[2] @ W[2] + b[2]
    refs = {("logits", "preactivation"): logits_s, ("logits", "backprop_grad"): dS[2], ("logits", "weight_grad"): dW[2]}
    for i, name in enumerate(("dense_00", "dense_01")):
        refs.update({(name, "preactivation"): pre[i], (name, "activation"): act[i],
                     (name, "backprop_grad"): dS[i], (name, "weight_grad"): dW[i]})
    assert set(hists) == set(refs)
    for key, ref in refs.items():
        edges, counts = hists[key]
        want, _ = np.histogram(np.clip(ref, edges[0], edges[-1]), bins=edges)
        assert counts.sum() == ref.size and np.abs(counts - want).sum() <= 2, key
    assert c0.sum() == dS[0].size and cl.sum() == dS[2].size
    assert gl[0] <= np.percentile(dS[2], 1) and gl[-1] >= np.percentile(dS[2], 99)
