"""Training-batch statistics inside the train step (initsuite.measure.step_stats): every value
against a NumPy recomputation on the same batch, the device buffer's read-back (every recorded
step exactly once, the partial last buffer included), a divergence mid-buffer, the log-spaced
probe cadence."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import TINY
from initsuite import tables
from initsuite.measure.step_stats import MOMENTS, _Sums, masked_moments, numpy_moments, use_gram, vector_moments
from initsuite.run.train import log_spaced_steps, run


def _softmax(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _instrument(make_cfg, width, optimizer, *extra):
    import keras

    from initsuite.measure.instrument import Instrument
    from initsuite.setup import models

    cfg = make_cfg("dataset=synthetic", "model.depth=2", f"model.width={width}", "activation=tanh",
                   "init=glorot_uniform", "init.bias=0.05", "probes.train_every=1", "probes.train_buffer=2", *extra)
    built = models.build(cfg, (3, 2, 1), 4)
    optimizer.build(built.model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return built, Instrument(built, loss_fn, optimizer, cfg)


def _numpy_step(W, b, x, y):
    """Forward and backward of the 2-hidden-layer tanh MLP in float64: per layer s, z, dC/ds, dC/dW."""
    h = x.reshape(len(x), -1).astype(np.float64)
    inputs, pre, act = [], [], []
    for i in range(3):
        inputs.append(h)
        pre.append(h @ W[i] + b[i])
        if i < 2:
            h = np.tanh(pre[-1])
            act.append(h)
    dS = [None, None, (_softmax(pre[2]) - np.eye(4)[y]) / len(y)]
    for i in (1, 0):
        dS[i] = (dS[i + 1] @ W[i + 1].T) * (1 - act[i] ** 2)
    dW = [inputs[i].T @ dS[i] for i in range(3)]
    db = [dS[i].sum(axis=0) for i in range(3)]
    return pre, act, dS, dW, db


class _Adam:
    """Keras' Adam in NumPy (the update the captured assign_sub must equal)."""

    def __init__(self, lr, shapes, b1=0.9, b2=0.999, eps=1e-7):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = [np.zeros(s) for s in shapes]
        self.v = [np.zeros(s) for s in shapes]

    def step(self, grads):
        self.t += 1
        alpha = self.lr * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        out = []
        for i, g in enumerate(grads):
            self.m[i] += (g - self.m[i]) * (1 - self.b1)
            self.v[i] += (g * g - self.v[i]) * (1 - self.b2)
            out.append(-alpha * self.m[i] / (np.sqrt(self.v[i]) + self.eps))
        return out


@pytest.mark.parametrize("width,batch,opt,decided", [(7, 13, "sgd", "host"), (64, 3, "sgd", "host"),
                                                     (7, 13, "adam", "host"), (7, 13, "sgd", "device"),
                                                     (7, 13, "adam", "device")])
def test_in_step_statistics_equal_numpy_on_the_training_batch(make_cfg, width, batch, opt, decided):
    """``decided``: whether a step writes its row is a Python bool (the suite's loop) or a tensor
    decided on the device (a watched model.fit, where step 1 here writes none)."""
    import keras

    optimizer = keras.optimizers.SGD(0.1) if opt == "sgd" else keras.optimizers.Adam(0.01)
    built, inst = _instrument(make_cfg, width, optimizer)
    names = ("dense_00", "dense_01", "logits")
    layers = [built.model.get_layer(n) for n in names]
    # (64, 3): the Gram identity gives the Dense weight gradients' sums; (7, 13): they are read
    assert [use_gram(l, batch) for l in layers] == [width == 64] * 3
    W = [np.asarray(l.kernel, np.float64) for l in layers]
    b = [np.asarray(l.bias, np.float64) for l in layers]
    adam = _Adam(0.01, [w.shape for w in W] + [v.shape for v in b]) if opt == "adam" else None
    rng = np.random.default_rng(4)
    want, recorded = [], [0, 1, 2] if decided == "host" else [0, 2]
    on_device = tf.function(lambda x, y, s, r: inst._train_step(x, y, s, r))
    for step in range(3):
        x = rng.uniform(0, 1, (batch, 3, 2, 1)).astype(np.float32)
        y = rng.integers(0, 4, batch).astype(np.int64)
        if decided == "host":
            inst.train_step(tf.constant(x), tf.constant(y), step, record=True)
        else:
            on_device(tf.constant(x), tf.constant(y), tf.constant(step, tf.int64), tf.constant(step in recorded))
            if step in recorded:
                inst.stats.note(step)
        pre, act, dS, dW, db = _numpy_step(W, b, x, y)
        if adam is None:
            upd = [-0.1 * g for g in dW] + [-0.1 * g for g in db]
        else:
            upd = adam.step(dW + db)
        ref = {}
        for i, n in enumerate(names):
            ref[(n, "preactivation")] = pre[i]
            if i < 2:
                ref[(n, "activation")] = act[i]
            ref[(n, "backprop_grad")] = dS[i]
            ref[(n, "weight")] = W[i].copy()
            ref[(n, "weight_grad")] = dW[i]
            ref[(n, "update")] = upd[i]
        if step in recorded:
            want.append((ref, [np.mean(1 - a ** 2 < 0.05) for a in act]))
        W = [W[i] + upd[i] for i in range(3)]
        b = [b[i] + upd[3 + i] for i in range(3)]
    steps, values, _, _ = inst.stats.take()
    assert steps.tolist() == recorded  # two rows read when the buffer filled, the third at the end
    layout = inst.stats.layout
    for row, (ref, sat) in zip(values, want):
        got = {key: float(v) for key, v in zip(layout, row)}
        for (layer, tensor), r in ref.items():
            for stat, w in numpy_moments(r).items():
                tol = 1e-5 * r.std() if stat == "mean" else 1e-9  # a mean near 0 (the logits' rows sum to 0)
                assert got[(layer, tensor, stat)] == pytest.approx(w, rel=3e-4, abs=tol), (layer, tensor, stat)
            ratio = np.linalg.norm(ref[(layer, "update")]) / np.linalg.norm(ref[(layer, "weight")])
            assert got[(layer, "update_ratio", "ratio")] == pytest.approx(ratio, rel=3e-4)
        for i in range(2):
            assert got[(names[i], "activation", "saturated_frac")] == pytest.approx(sat[i])
            assert got[(names[i], "activation", "zero_frac")] == pytest.approx(np.mean(ref[(names[i], "activation")] == 0))
    assert inst.stats.take()[0].size == 0  # handed over once


def test_moments_stay_accurate_for_a_wide_tensor_with_a_large_mean():
    rng = np.random.default_rng(0)
    x = (1e4 + rng.standard_normal(1_000_000)).astype(np.float32)
    small = rng.standard_normal(1000).astype(np.float32)  # beside it, one that needs no second pass
    got = vector_moments([_Sums.of(tf.constant(x)), _Sums.of(tf.constant(small))]).numpy().reshape(2, -1)
    for values, data in zip(got, (x, small)):
        values, ref = dict(zip(MOMENTS, values)), numpy_moments(data)
        assert values["mean"] == pytest.approx(ref["mean"], rel=1e-5, abs=1e-6)
        assert values["var"] == pytest.approx(ref["var"], rel=1e-3)  # E[x^2] - E[x]^2 in float32: off by ~100 %
        assert values["norm"] == pytest.approx(ref["norm"], rel=1e-5)
        assert values["nonfinite_count"] == 0


def test_nonfinite_entries_are_counted_and_left_out_of_the_moments():
    x = np.array([1.0, 2.0, 0.0, np.nan, np.inf], np.float32)
    got = dict(zip(MOMENTS, masked_moments(tf.constant(x)).numpy()))
    ref = numpy_moments(x)
    assert got["nonfinite_count"] == 2 == ref["nonfinite_count"]
    for stat in ("mean", "var", "std", "norm"):
        assert got[stat] == pytest.approx(ref[stat], rel=1e-6)
    big = np.array([1e30, 1e30, -1e30], np.float32)  # sum(x^2) overflows float32; the norm must not
    assert float(masked_moments(tf.constant(big)).numpy()[3]) == pytest.approx(np.linalg.norm(big.astype(np.float64)),
                                                                              rel=1e-5)
    nan = masked_moments(tf.constant([np.nan], tf.float32)).numpy()
    assert nan[4] == 1 and np.isnan(nan[0]) and np.isnan(nan[3])


@pytest.mark.parametrize("every,buffer", [(1, 3), (2, 4), (3, 100)])
def test_every_recorded_step_is_read_exactly_once(make_cfg, every, buffer):
    # 16 steps: 16 // every recorded steps through a buffer of `buffer` rows, the last buffer partial
    r = run(make_cfg(*TINY, "train.epochs=2", f"probes.train_every={every}", f"probes.train_buffer={buffer}",
                     "probes.every=1000"))
    tr = tables.batch_rows(r.layer_stats, tables.TRAIN)
    probe_steps = {0}  # probes.every=1000: step 0 and the last (which trains no more)
    want = sorted({s for s in range(16) if s % every == 0} | probe_steps)
    assert sorted(tr.step.unique()) == want
    per_step = tr.groupby("step").size()
    assert per_step.nunique() == 1  # every row complete, none twice
    assert not tr.duplicated(["step", "layer", "tensor", "stat"]).any()


def test_a_run_that_diverges_mid_buffer_keeps_its_rows_and_its_nan_step(make_cfg):
    # Constant(1e5) weights in a 5-layer ReLU stack (as Keras' TerminateOnNaN test): non-finite in the
    # first forward pass; the rows before the NaN are flushed and the NaN step has its own row.
    r = run(make_cfg(*TINY, "model.depth=6", "model.width=64", "activation=relu", "init=constant", "init.value=1e5",
                     "probes.train_every=3", "probes.train_buffer=100", "probes.every=1000"))
    assert r.status == "diverged"
    ev = r.events[r.events.kind == "first_nonfinite"]
    nan_step = int(ev.step.iloc[0])
    tr = tables.batch_rows(r.layer_stats, tables.TRAIN)
    assert nan_step in set(tr.step)
    row = tr[tr.step == nan_step]
    counts = row[row.stat == "nonfinite_count"]
    assert (counts.value > 0).any()  # the non-finite entries are counted, not hidden


def test_a_run_that_diverges_later_records_the_nan_step_between_cadence_steps(make_cfg):
    # lr 1e3 with ReLU: finite at first, non-finite after some updates; the cadence (every 7th step)
    # does not need to hit the NaN step for it to have a row when the forward pass found it
    r = run(make_cfg(*TINY, "train.epochs=4", "activation=relu", "init=he_normal", "optimizer.lr=1000",
                     "probes.train_every=7", "probes.train_buffer=2", "probes.every=1000"))
    ev = r.events[r.events.kind == "first_nonfinite"]
    if not len(ev):
        pytest.skip("this seed did not diverge")
    nan_step = int(ev.step.iloc[0])
    tr = tables.batch_rows(r.layer_stats, tables.TRAIN)
    steps = set(tr.step)
    assert {s for s in range(nan_step) if s % 7 == 0} <= steps
    # an update item is seen one step late, through the weights; a NaN first seen in the backward
    # pass of a step off the cadence has no row (docs/measurements.md)
    if ev.phase.iloc[0] in ("forward", "loss") or nan_step % 7 == 0:
        assert nan_step in steps
        row = tr[tr.step == nan_step]
        if ev.phase.iloc[0] != "loss":  # (a non-finite loss from finite logits has no non-finite tensor)
            assert (row[row.stat == "nonfinite_count"].value > 0).any()


def test_log_spaced_probe_steps():
    assert log_spaced_steps(5) == {0}
    assert log_spaced_steps(1000) == {0, 10, 30, 100, 300, 1000}
    assert log_spaced_steps(2999) == {0, 10, 30, 100, 300, 1000}


def test_default_cadence_probes_log_spaced_and_at_epoch_ends(make_cfg):
    r = run(make_cfg(*TINY, "train.epochs=5", "probes.every=null"))  # 8 steps per epoch, 40 in all
    probe = tables.batch_rows(r.layer_stats, tables.PROBE)
    assert sorted(probe.step.unique()) == [0, 8, 10, 16, 24, 30, 32, 40]
    assert isinstance(r.layer_stats, pd.DataFrame) and set(r.layer_stats.batch) == set(tables.BATCHES)


@pytest.mark.parametrize("shape", [(7, 13), (128, 28, 28, 32), (256, 127), (65537,), (300, 1000)])
def test_a_masks_fraction_is_exact_whichever_way_it_is_counted(shape):
    from initsuite.measure.step_stats import COUNT_MIN, _slice_width, true_fraction

    rng = np.random.default_rng(1)
    n = int(np.prod(shape))
    for p in (0.0, 0.37, 1.0):
        mask = rng.random(shape) < p
        got = float(tf.function(true_fraction)(tf.constant(mask)))
        assert got == pytest.approx(mask.mean(), abs=0.5 / n), (shape, p)
    k = _slice_width(n)
    assert (k is not None and n % k == 0 and 16 <= k <= 127) or k is None
    if n >= COUNT_MIN and shape != (65537,):  # 65537 is prime: no slice width, the float mean
        assert k is not None


def test_in_step_percentiles_and_histograms_equal_numpy_on_the_training_batch(make_cfg):
    """``probes.train_quantiles``: every tensor's exact percentiles (the fused XLA selection)
    and its histogram, against the NumPy recomputation of the same two SGD steps."""
    import keras

    built, inst = _instrument(make_cfg, 64, keras.optimizers.SGD(0.1), "probes.train_quantiles=true")
    names = ("dense_00", "dense_01", "logits")
    layers = [built.model.get_layer(n) for n in names]
    W = [np.asarray(l.kernel, np.float64) for l in layers]
    b = [np.asarray(l.bias, np.float64) for l in layers]
    rng = np.random.default_rng(5)
    want = []
    for step in range(2):
        x = rng.uniform(0, 1, (9, 3, 2, 1)).astype(np.float32)
        y = rng.integers(0, 4, 9).astype(np.int64)
        inst.train_step(tf.constant(x), tf.constant(y), step, record=True)
        pre, act, dS, dW, db = _numpy_step(W, b, x, y)
        ref = {}
        for i, n in enumerate(names):
            ref.update({(n, "preactivation"): pre[i], (n, "backprop_grad"): dS[i], (n, "weight"): W[i].copy(),
                        (n, "weight_grad"): dW[i]})
            if i < 2:
                ref[(n, "activation")] = act[i]
        want.append(ref)
        W = [W[i] - 0.1 * dW[i] for i in range(3)]
        b = [b[i] - 0.1 * db[i] for i in range(3)]
    steps, values, ranges, counts = inst.stats.take()
    assert steps.tolist() == [0, 1]
    qkeys = [(i, k) for i, k in enumerate(inst.stats.layout) if k[2].startswith("p") and k[1] != "update"]
    assert {(k[0], k[1]) for _, k in qkeys} == set(want[0])  # every tensor has its percentiles
    for row, ref in zip(values, want):
        for i, (layer, tensor, stat) in qkeys:
            r = ref[(layer, tensor)]
            w = np.percentile(r, float(stat[1:]))
            assert row[i] == pytest.approx(w, rel=1e-4, abs=1e-6 * max(r.std(), 1e-12)), (layer, tensor, stat)
    hist_keys = list(inst.stats.hist_keys)
    assert hist_keys and counts.shape[:2] == (2, len(hist_keys))
    for s, ref in enumerate(want):
        for h, key in enumerate(hist_keys):
            r = ref[key]
            lo, hi = ranges[s, h]
            # the axis spans [p0.1, p99.9]; values outside go to the edge bins, so every value is counted
            assert lo == pytest.approx(np.percentile(r, 0.1), rel=1e-4, abs=1e-6 * r.std())
            assert counts[s, h].sum() == r.size, key
            inner = np.histogram(np.clip(r, lo, hi), bins=counts.shape[2], range=(lo, hi))[0]
            assert np.abs(counts[s, h] - inner).sum() <= 2, key  # bin edges within float32 rounding
