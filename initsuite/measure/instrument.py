"""The compiled pieces of a run: the training step with NaN/Inf forensics, the probe
measurement and the evaluation pass, all ``tf.function``s over one model.

What they cost is measured by ``make bench`` (:mod:`initsuite.bench`); three choices
keep it small:

* **NaN/Inf forensics, every step, nearly free.** The step checks only what it
  already holds: each measured layer's outputs, the loss and the back-propagated
  gradients dC/ds (``is_finite`` over the activations, never a pass over the
  weights). Only when that check fails for the first time do two ``tf.cond``
  branches run the full ordered search:

  1. the weights as the previous update left them (phase ``update``, step t-1;
     ``init`` at step 0), read at the start of the step;
  2. forward: each layer's pre-activation then activation, from the input up;
  3. the loss;
  4. backward: from the top layer down, dC/ds, then the layer's weight gradients.

  A non-finite weight always shows in its layer's output (inf times anything,
  NaN plus anything), so (1) is looked at only when the forward pass or the loss
  is non-finite, and from the values read at the start of the step: a branch
  that read the variables themselves would have to run before the update and
  would make every update wait for the whole backward pass (about 5 % of a step
  on CPU). The weight gradients of (4) are seen as weights that this step's
  update made non-finite, in a second branch after the update (W - lr g is
  non-finite for a finite W exactly when lr g is), so the gradients are not
  kept for the branch either. A weight gradient that overflows while everything
  else is finite is caught one step later, as a non-finite weight left by that
  update. The first failing item is stored in two variables the host reads now
  and then.

* **Statistics without sorting.** Percentiles are exact (NumPy's linear rule, bit
  for bit what the sort in :func:`initsuite.measure.probes.tensor_stats` gives) but found by
  selection: one binning pass locates the bins that hold the wanted ranks and only
  those values are sorted (:func:`select_quantiles`); a tensor whose sum is finite
  needs no NaN mask at all (:func:`summarize`). On a 1000x1000 kernel that is ~15x
  faster than sorting, and the probe reads every kernel and kernel gradient: the
  paper MLP's probe fell from ~1.5 s to ~0.13 s on 2 CPU cores. The statistics are
  one ``tf.function`` (:func:`stats_function`) that the probe calls per tensor, so
  they are traced once per process instead of once per tensor and layer.

* **One transfer per measurement.** A probe returns all its numbers stacked in one
  tensor, so the host waits for the device once, not once per statistic.

Mixed precision (``train.mixed_precision``) computes in bfloat16 with float32
variables; every statistic and check is taken in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from initsuite.measure.probes import BASE_STATS, CheckItem, Taps, main_kernel, percentile_name, slope

HIST_TENSORS = ("activation", "preactivation", "backprop_grad", "weight_grad")
SELECT_BINS = 1024  # histogram bins of the selection pass: ~n/1024 values are sorted per percentile
HIST_TAIL = 0.1  # a histogram's common axis spans the layers' [p0.1, p99.9] (extreme outliers go to the edge bins)


def precision_policy(cfg) -> str:
    """The Keras dtype policy a run uses: ``mixed_bfloat16`` when ``train.mixed_precision``
    is on, else ``float32``. bfloat16 keeps float32's exponent range, so it needs no loss
    scaling (float16 would, and its skipped overflow steps would hide the very NaNs the
    forensics look for); variables stay float32."""
    return "mixed_bfloat16" if bool(cfg.train.get("mixed_precision", False)) else "float32"


@contextlib.contextmanager
def precision_scope(cfg):
    """Build layers under the run's dtype policy (:func:`precision_policy`). A layer keeps
    the policy it was built with, so the global policy is put back on leaving: one run's
    choice never leaks into the next run or into models built afterwards."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision_policy(cfg))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _all_finite(t) -> tf.Tensor:
    t = tf.convert_to_tensor(t)
    if not t.dtype.is_floating:
        t = tf.cast(t, tf.float32)
    return tf.reduce_all(tf.math.is_finite(t))


class Finite:
    """A tensor's finite entries, without copying them out: ``up`` is the flat tensor in
    float32 with every non-finite entry replaced by +inf (so the finite values keep their
    ranks 0..n-1), ``mask`` marks the finite entries, ``n`` counts them, ``lo`` / ``hi``
    are their min / max."""

    def __init__(self, x):
        flat = tf.cast(tf.reshape(tf.convert_to_tensor(x), [-1]), tf.float32)  # statistics always in float32
        self.flat = flat
        self.mask = tf.math.is_finite(flat)
        inf = tf.constant(float("inf"))
        self.up = tf.where(self.mask, flat, inf)
        self.size = tf.size(flat)
        self.n = tf.reduce_sum(tf.cast(self.mask, tf.int32))
        self.lo = tf.reduce_min(self.up)
        self.hi = tf.reduce_max(tf.where(self.mask, flat, -inf))


def select_quantiles(v, n, lo, hi, qs: Sequence[float], bins: int = SELECT_BINS) -> tf.Tensor:
    """Percentiles ``qs`` (0-100) of the ``n`` finite entries of ``v`` (min ``lo``, max
    ``hi``; any other entry is +inf) by NumPy's default rule: linear interpolation
    between the sorted values at ranks floor(p) and floor(p)+1, p = q/100 (n-1). Bit for
    bit what sorting gives, without sorting everything; NaN where n = 0.

    Selection: each value goes to one of ``bins`` equal bins over [lo, hi] by a monotone
    formula, so bin order is value order; the cumulative counts name the bins that hold the wanted ranks and only
    the values in those bins are sorted: O(n) plus a sort of about n/bins values per
    percentile (of every value only if they all crowd into one bin).
    """
    qs = [float(q) for q in qs]
    k = len(qs)
    n1 = tf.maximum(n, 1)
    nf = tf.cast(n1, tf.float32)
    pos = [(q / 100.0) * (nf - 1.0) for q in qs]
    r_lo = [tf.cast(tf.floor(p), tf.int32) for p in pos]
    ranks = tf.stack(r_lo + [tf.minimum(r + 1, n1 - 1) for r in r_lo])
    frac = tf.stack([p - tf.floor(p) for p in pos])
    lo = tf.where(n > 0, lo, 0.0)
    spread = tf.logical_and(n > 0, hi > lo)
    # bin = v a - b with a = bins / (hi - lo), b = lo a: the scalars in float64, where hi - lo
    # cannot overflow; per value one multiply and one subtract, both monotone, so bin order
    # is value order however the rounding falls (+inf lands in the last bin).
    lo64, hi64 = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
    a64 = float(bins) / tf.where(spread, hi64 - lo64, 1.0)
    a, b = tf.cast(a64, tf.float32), tf.cast(lo64 * a64, tf.float32)
    idx = tf.cast(tf.clip_by_value(v * a - b, 0.0, bins - 1.0), tf.int32)
    counts = tf.math.bincount(idx, minlength=bins, maxlength=bins, dtype=tf.int32)
    cum = tf.cumsum(counts)
    want = tf.minimum(tf.searchsorted(cum, ranks, side="right"), bins - 1)  # the bin holding each rank
    keep_bin = tf.logical_and(tf.scatter_nd(want[:, None], tf.ones_like(want), [bins]) > 0, spread)
    part = tf.concat([tf.sort(tf.boolean_mask(v, tf.gather(keep_bin, idx))), [lo]], 0)  # never empty
    kept_before = tf.cumsum(tf.where(keep_bin, counts, 0), exclusive=True)
    at = ranks - tf.gather(cum - counts, want) + tf.gather(kept_before, want)
    got = tf.gather(part, tf.clip_by_value(at, 0, tf.size(part) - 1))
    a, b = got[:k], got[k:]
    out = tf.where(spread, a + (b - a) * frac, lo)  # all values equal: no bins needed
    return tf.where(n > 0, out, float("nan"))


def stat_names(percentiles: Sequence[float]) -> List[str]:
    """The order :func:`summarize` stacks its values in (``saturated_frac`` is separate)."""
    return list(BASE_STATS) + [percentile_name(q) for q in percentiles] + ["zero_frac", "nonfinite_count"]


def summarize(x, percentiles: Sequence[float] = (2.0, 50.0, 98.0)) -> tf.Tensor:
    """The statistics of :func:`initsuite.measure.probes.tensor_stats`, same values, stacked in
    :func:`stat_names` order: mean, var (ddof 0), std, percentiles and zero_frac of the
    finite entries (NaN if none), and the count of the others.

    Cheaper than sorting: percentiles by :func:`select_quantiles`, and when the sum is
    finite (no NaN/Inf anywhere, the usual case) no mask is built at all.
    """
    flat = tf.cast(tf.reshape(tf.convert_to_tensor(x), [-1]), tf.float32)  # statistics always in float32
    total = tf.reduce_sum(flat)

    def all_finite():
        n = tf.size(flat)
        nf = tf.cast(tf.maximum(n, 1), tf.float32)
        lo, hi = tf.reduce_min(flat), tf.reduce_max(flat)
        mean = total / nf
        var = tf.reduce_sum(tf.math.squared_difference(flat, mean)) / nf
        zero = tf.reduce_sum(tf.cast(tf.equal(flat, 0.0), tf.float32)) / nf
        qs = select_quantiles(flat, n, lo, hi, percentiles) if len(percentiles) else tf.zeros([0])
        out = tf.concat([tf.stack([mean, var, tf.sqrt(var)]), qs, tf.stack([zero])], 0)
        out = tf.where(n > 0, out, float("nan"))
        return tf.concat([out, [0.0]], 0)

    def some_nonfinite():
        f = Finite(flat)
        nf = tf.cast(tf.maximum(f.n, 1), tf.float32)
        mean = tf.reduce_sum(tf.where(f.mask, flat, 0.0)) / nf
        var = tf.reduce_sum(tf.where(f.mask, tf.math.squared_difference(flat, mean), 0.0)) / nf
        zero = tf.reduce_sum(tf.cast(tf.equal(flat, 0.0), tf.float32)) / nf
        qs = select_quantiles(f.up, f.n, f.lo, f.hi, percentiles) if len(percentiles) else tf.zeros([0])
        out = tf.concat([tf.stack([mean, var, tf.sqrt(var)]), qs, tf.stack([zero])], 0)
        out = tf.where(f.n > 0, out, float("nan"))
        return tf.concat([out, [tf.cast(f.size - f.n, tf.float32)]], 0)

    return tf.cond(tf.math.is_finite(total), all_finite, some_nonfinite)


def finite_histogram(f: Finite, lo, hi, bins: int):
    """Counts of the finite entries over ``bins`` equal bins on [lo, hi]; values outside go
    to the edge bins. The +inf placeholders land in the last bin and are taken out."""
    counts = tf.histogram_fixed_width(f.up, tf.stack([lo, hi]), nbins=bins, dtype=tf.int32)
    return counts - tf.one_hot(bins - 1, bins, dtype=tf.int32) * (f.size - f.n)


_COMPILED: Dict[tuple, Any] = {}
# Called, not inlined, where the probe uses them: inlined at each of its ~30 call sites,
# their kernels took ~110 MB more memory (the benchmark's peak-memory target) for no speed.
_NOINLINE = {"_noinline": True}


def _flat32(x):
    return tf.cast(tf.reshape(tf.convert_to_tensor(x), [-1]), tf.float32)


def stats_function(percentiles: Sequence[float]):
    """:func:`summarize` as a ``tf.function`` over flat float32 vectors, traced once per
    process and percentile list. The probe calls it for every tensor of every layer: as
    one function its ops are traced once, not once per tensor (tracing them all took
    longer than a whole small run)."""
    key = ("stats",) + tuple(float(q) for q in percentiles)
    if key not in _COMPILED:
        qs = key[1:]
        _COMPILED[key] = tf.function(lambda flat: summarize(flat, qs),
                                     input_signature=[tf.TensorSpec([None], tf.float32)],
                                     experimental_attributes=_NOINLINE)
    return _COMPILED[key]


def _range_function(tail: float = HIST_TAIL):
    key = ("range", float(tail))
    if key not in _COMPILED:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)], experimental_attributes=_NOINLINE)
        def tails(flat):  # [p(tail), p(100-tail)] of the finite entries, (0, 0) if none
            f = Finite(flat)
            return tf.where(f.n > 0, select_quantiles(f.up, f.n, f.lo, f.hi, (tail, 100.0 - tail)), 0.0)

        _COMPILED[key] = tails
    return _COMPILED[key]


def _histogram_function(bins: int):
    key = ("hist", int(bins))
    if key not in _COMPILED:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32),
                                      tf.TensorSpec([], tf.float32)], experimental_attributes=_NOINLINE)
        def hist(flat, lo, hi):
            return finite_histogram(Finite(flat), lo, hi, int(bins))

        _COMPILED[key] = hist
    return _COMPILED[key]


class Instrument:
    def __init__(self, built, loss_fn, optimizer, cfg):
        self.built = built
        self.model = built.model
        self.points = list(built.points)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.percentiles = [float(q) for q in cfg.probes.percentiles]
        self.hist_bins = int(cfg.probes.hist_bins)
        self.layer_index = {p.name: i for i, p in enumerate(self.points)}
        tap_layers = {}
        for p in self.points:
            if p.pre_layer is not None:
                tap_layers[(p.name, "pre")] = p.pre_layer
            if p.act_layer is not None:
                tap_layers[(p.name, "act")] = p.act_layer
        self.taps = Taps(tap_layers)
        self.kernels = {p.name: main_kernel(p.kernel_layer) for p in self.points}
        owner = {}
        for p in self.points:
            for v in p.kernel_layer.trainable_weights:
                owner.setdefault(id(v), p.name)
        self.var_owner = owner
        self.nf_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="first_nonfinite_step")
        self.nf_index = tf.Variable(-1, dtype=tf.int32, trainable=False, name="first_nonfinite_item")
        self.check_items: Optional[List[CheckItem]] = None
        # What the stacked outputs hold, recorded when the functions are traced.
        self._ratio_names: List[str] = []
        self._probe_layout: Dict[bool, Tuple[list, list]] = {}
        jit = bool(cfg.train.jit_compile)
        self._train = {
            False: tf.function(lambda x, y, s: self._train_step(x, y, s, False), jit_compile=jit),
            True: tf.function(lambda x, y, s: self._train_step(x, y, s, True), jit_compile=jit),
        }
        # The batch taken from the iterator inside the graph, as model.fit does: no Python-side
        # tensors per step. An outer function, because XLA cannot compile the iterator op.
        self._train_on = {m: tf.function(lambda it, s, m=m: self._train[m](*next(it), s)) for m in (False, True)}
        self._probe = {
            False: tf.function(lambda x, y: self._probe_step(x, y, False)),
            True: tf.function(lambda x, y: self._probe_step(x, y, True)),
        }
        shape = [None] + [int(d) for d in self.model.inputs[0].shape[1:]] if getattr(self.model, "inputs", None) else None
        sig = [tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int64)] if shape else None
        self._eval = tf.function(self._eval_batch, input_signature=sig, reduce_retracing=sig is None)

    # -- helpers --------------------------------------------------------------------------
    def _grad_key(self, p) -> Tuple[str, str]:
        return (p.name, "pre") if p.pre_layer is not None else (p.name, "act")

    def _var_label(self, v) -> Tuple[str, str]:
        layer = self.var_owner.get(id(v), getattr(v, "path", v.name))
        tensor = "weight" if len(v.shape) >= 2 else "bias" if len(v.shape) == 1 else "scalar"
        return layer, tensor

    def _layer_index_of(self, layer: str) -> int:
        return self.layer_index.get(layer, -1)

    # -- training -------------------------------------------------------------------------
    def _forward(self, x, training: bool):
        with self.taps.record() as rec:
            logits = self.model(x, training=training)
        return logits, rec

    def _train_step(self, x, y, step, measure: bool):
        tvars = self.model.trainable_variables
        # The weights this step starts from, for the forensics' "update" items: a read now
        # keeps the check off the path of the update (see the module docstring).
        start = [tf.convert_to_tensor(v) for v in tvars]
        with tf.GradientTape() as tape:
            logits, rec = self._forward(x, True)
            loss = self.loss_fn(y, tf.cast(logits, tf.float32))
        targets = [rec[self._grad_key(p)] for p in self.points if self._grad_key(p) in rec]
        grads, tgrads = tape.gradient(loss, (tvars, targets))

        # The cheap check, in the order of the search: forward items, the loss, dC/ds.
        fwd_items, back_grads = [], {}
        for p in self.points:
            for key, tensor in (((p.name, "pre"), "preactivation"), ((p.name, "act"), "activation")):
                if key in rec:
                    fwd_items.append((CheckItem("forward", p.name, self._layer_index_of(p.name), tensor), rec[key]))
        for p, g in zip([p for p in self.points if self._grad_key(p) in rec], tgrads):
            if g is not None:
                back_grads[p.name] = g
        fwd_ok = tf.stack([_all_finite(t) for _, t in fwd_items] + [_all_finite(loss)])
        back_ok = tf.stack([_all_finite(g) for g in back_grads.values()] or [tf.constant(True)])
        first_time = self.nf_index < 0
        fresh = tf.logical_and(first_time, tf.logical_not(tf.logical_and(tf.reduce_all(fwd_ok), tf.reduce_all(back_ok))))
        start_bad = tf.cond(  # (1) only if the forward pass or the loss is non-finite
            tf.logical_and(first_time, tf.logical_not(tf.reduce_all(fwd_ok))),
            lambda: tf.stack([tf.logical_not(_all_finite(w)) for w in start]),
            lambda: tf.zeros([len(start)], tf.bool))

        before = {}
        if measure:
            before = {n: tf.identity(tf.convert_to_tensor(k)) for n, k in self.kernels.items() if k is not None}
        pairs = [(g, v) for g, v in zip(grads, tvars) if g is not None]
        self.optimizer.apply_gradients(pairs)
        tf.cond(fresh, lambda: self._forensics(step, tvars, fwd_items, fwd_ok, back_grads, back_ok, start_bad),
                lambda: tf.constant(0))
        ratios = []
        for name, w0 in before.items():
            w1 = tf.convert_to_tensor(self.kernels[name])
            ratios.append(tf.norm(w1 - w0) / tf.maximum(tf.norm(w0), 1e-30))
        if measure:
            self._ratio_names = list(before)
        return loss, (tf.stack(ratios) if ratios else tf.zeros([0]))

    def _forensics(self, step, tvars, fwd_items, fwd_ok, back_grads, back_ok, start_bad):
        """The ordered search, after the update: the first non-finite item wins."""
        items: List[CheckItem] = []
        flags: List[tf.Tensor] = []
        index_of_var = {}
        for i, v in enumerate(tvars):  # (1) what the previous update left
            layer, tensor = self._var_label(v)
            items.append(CheckItem("update", layer, self._layer_index_of(layer), tensor, -1))
            flags.append(start_bad[i])
            index_of_var[id(v)] = i
        fwd_bad = tf.logical_not(fwd_ok)
        for i, (item, _) in enumerate(fwd_items):  # (2)
            items.append(item)
            flags.append(fwd_bad[i])
        items.append(CheckItem("loss", "loss", -1, "loss"))  # (3)
        flags.append(fwd_bad[len(fwd_items)])
        # (4) a weight gradient is non-finite when this update turned a finite weight non-finite
        made_bad = [tf.logical_and(tf.logical_not(_all_finite(v)), tf.logical_not(start_bad[i]))
                    for i, v in enumerate(tvars)]
        by_layer: Dict[str, list] = {}
        for v in tvars:
            layer, tensor = self._var_label(v)
            by_layer.setdefault(layer, []).append((tensor, index_of_var[id(v)]))
        back_bad = tf.logical_not(back_ok)
        back_pos = {name: i for i, name in enumerate(back_grads)}
        for p in reversed(self.points):
            if p.name in back_pos:
                items.append(CheckItem("backward", p.name, self._layer_index_of(p.name), "backprop_grad"))
                flags.append(back_bad[back_pos[p.name]])
            for tensor, i in by_layer.pop(p.name, []):
                items.append(CheckItem("backward", p.name, self._layer_index_of(p.name), f"{tensor}_grad"))
                flags.append(made_bad[i])
        for layer, rest in by_layer.items():  # variables outside the measured layers
            for tensor, i in rest:
                items.append(CheckItem("backward", layer, -1, f"{tensor}_grad"))
                flags.append(made_bad[i])
        if self.check_items is None:
            self.check_items = items
        bad = tf.stack(flags)
        idx = tf.cast(tf.argmax(tf.cast(bad, tf.int32)), tf.int32)
        offsets = tf.constant([it.step_offset for it in items], tf.int64)
        self.nf_step.assign(step + tf.gather(offsets, idx))
        self.nf_index.assign(idx)
        return tf.constant(0)

    def train_step_on(self, iterator, step, measure: bool):
        """One update on the next batch of a ``tf.data`` iterator; returns (loss tensor,
        {layer: ||dW|| / ||W||} at measured steps, else None). Only a measured step waits for the
        device (one transfer for all the ratios)."""
        loss, ratios = self._train_on[bool(measure)](iterator, step)
        if measure:
            return loss, dict(zip(self._ratio_names, (float(v) for v in ratios.numpy())))
        return loss, None

    def first_nonfinite(self) -> Optional[Dict[str, Any]]:
        idx = int(self.nf_index.numpy())
        if idx < 0 or self.check_items is None:
            return None
        item = self.check_items[idx]
        step = int(self.nf_step.numpy())
        phase = item.phase
        if phase == "update" and step < 0:  # non-finite before the first update: the initializer
            phase, step = "init", 0
        return dict(step=step, phase=phase, layer=item.layer, layer_index=item.layer_index, tensor=item.tensor)

    # -- measurement ----------------------------------------------------------------------
    def _probe_step(self, x, y, with_hist: bool):
        kernels = [self.kernels[p.name] for p in self.points]
        with tf.GradientTape() as tape:
            logits, rec = self._forward(x, False)
            loss = self.loss_fn(y, tf.cast(logits, tf.float32))
        keys = [self._grad_key(p) for p in self.points]
        targets = [rec.get(k) for k in keys]
        present = [t for t in targets if t is not None]
        kvars = [k for k in kernels if k is not None]
        tg, kg = tape.gradient(loss, (present, kvars))
        tgrad, kgrad = {}, {}
        it_t, it_k = iter(tg), iter(kg)
        for p, t, k in zip(self.points, targets, kernels):
            tgrad[p.name] = next(it_t) if t is not None else None
            kgrad[p.name] = next(it_k) if k is not None else None

        stats_of = stats_function(self.percentiles)
        names = stat_names(self.percentiles)
        stat_keys: List[Tuple[str, str, str]] = []
        stat_values: List[tf.Tensor] = []
        flats: Dict[str, Dict[str, Any]] = {t: {} for t in HIST_TENSORS}
        fn, thr = self.built.activation_fn, self.built.saturation_threshold

        def measure(layer, tensor, t, sat=None):
            flat = _flat32(t)
            stat_keys.extend((layer, tensor, name) for name in names)
            stat_values.append(stats_of(flat))
            if sat is not None:
                stat_keys.append((layer, tensor, "saturated_frac"))
                stat_values.append(tf.reduce_mean(tf.cast(tf.reshape(sat, [-1]), tf.float32))[None])
            if tensor in flats:
                flats[tensor][layer] = flat

        for p, k in zip(self.points, kernels):
            s = rec.get((p.name, "pre"))
            z = rec.get((p.name, "act"))
            if s is not None:
                measure(p.name, "preactivation", s)
            if z is not None:
                sat = None
                if s is not None and fn is not None and thr is not None:
                    sat = tf.abs(slope(fn, tf.cast(s, tf.float32))) < thr
                measure(p.name, "activation", z, sat)
            if tgrad[p.name] is not None:
                measure(p.name, "backprop_grad", tgrad[p.name])
            if k is not None:
                measure(p.name, "weight", k)
                if kgrad[p.name] is not None:
                    measure(p.name, "weight_grad", kgrad[p.name])
        hist_keys, ranges, counts = [], [], []
        if with_hist:
            tails, hist = _range_function(), _histogram_function(self.hist_bins)
            # One common axis for the hidden layers (the paper draws them on one), and its own for
            # the output layer, whose gradients are 10-30x wider and would squeeze the rest into a
            # few bins.
            hidden = {p.name: p.act_layer is not None for p in self.points}
            for tensor, by_layer in flats.items():
                groups = ({n: f for n, f in by_layer.items() if hidden.get(n, True)},
                          {n: f for n, f in by_layer.items() if not hidden.get(n, True)})
                for group in groups:
                    if not group:
                        continue
                    ends = tf.stack([tails(flat) for flat in group.values()])
                    lo = tf.reduce_min(ends[:, 0])
                    # A non-empty range even when every value is equal (saturated tanh: all 1.0), with a
                    # width float32 can represent next to lo (1 + 1e-12 == 1 would make the op fail).
                    hi = tf.maximum(tf.reduce_max(ends[:, 1]), lo + tf.maximum(tf.abs(lo) * 1e-6, 1e-12))
                    for name, flat in group.items():
                        hist_keys.append((name, tensor))
                        ranges.append(tf.stack([lo, hi]))
                        counts.append(hist(flat, lo, hi))
        self._probe_layout[with_hist] = (stat_keys, hist_keys)
        return (tf.concat(stat_values, 0) if stat_values else tf.zeros([0]),
                tf.stack(ranges) if ranges else tf.zeros([0, 2]),
                tf.stack(counts) if counts else tf.zeros([0, self.hist_bins], tf.int32))

    def probe(self, x, y, with_hist: bool):
        """Statistics {(layer, tensor): {stat: float}} and histograms
        {(layer, tensor): (edges, counts)} of the probe batch at the current weights."""
        values, ranges, counts = self._probe[bool(with_hist)](x, y)
        stat_keys, hist_keys = self._probe_layout[bool(with_hist)]
        out_stats: Dict[Tuple[str, str], Dict[str, float]] = {}
        for (layer, tensor, stat), v in zip(stat_keys, values.numpy().tolist()):
            out_stats.setdefault((layer, tensor), {})[stat] = v
        out_hists = {}
        if hist_keys:
            ranges, counts = ranges.numpy(), counts.numpy()
            for (layer, tensor), (lo, hi), c in zip(hist_keys, ranges, counts):
                edges = np.linspace(float(lo), float(hi), self.hist_bins + 1)
                out_hists[(layer, tensor)] = (edges, c)
        return out_stats, out_hists

    # -- evaluation -----------------------------------------------------------------------
    def _eval_batch(self, x, y):
        logits = tf.cast(self.model(x, training=False), tf.float32)
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        errors = tf.reduce_sum(tf.cast(tf.not_equal(tf.argmax(logits, axis=-1), y), tf.float32))
        return tf.reduce_sum(losses), errors

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int) -> Tuple[float, float]:
        """Mean loss and error rate over (x, y)."""
        total_loss, total_err = 0.0, 0.0
        for i in range(0, len(x), batch):
            l, e = self._eval(tf.constant(x[i:i + batch]), tf.constant(y[i:i + batch].astype(np.int64)))
            total_loss += float(l)
            total_err += float(e)
        n = max(len(x), 1)
        return total_loss / n, total_err / n
