"""The compiled pieces of a run: the training step with NaN/Inf forensics, the probe
measurement and the evaluation pass, all ``tf.function``s over one model.

What they cost is measured by ``make bench`` (:mod:`initsuite.bench`); the choices that
keep it small:

* **NaN/Inf forensics, every step, nearly free.** The step checks only what it
  already holds: each measured layer's outputs, the loss and the back-propagated
  gradients dC/ds, never a pass over the weights (:func:`finite_check`: a large
  tensor is screened by the finiteness of its sum, one read, and tested entry by
  entry only when that sum is not finite; an activation z = f(s) whose f maps finite
  to finite is not checked apart from s). Only when that check fails for the first
  time do two ``tf.cond`` branches run the full ordered search:

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

* **Training-batch statistics inside the step** (:mod:`initsuite.measure.step_stats`): the
  step reduces the tensors it holds into a device buffer the host reads once per
  ``probes.train_buffer`` recorded steps.
* **Exact percentiles without sorting** (:mod:`initsuite.measure.summaries`), for the fixed probe.
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

from initsuite.measure.probes import CheckItem, Taps, main_kernel, slope
from initsuite.measure.step_stats import StepStats, called, plain_sgd, saturated_mask, static_size, watch_updates
from initsuite.measure.summaries import (  # noqa: F401  (re-exported: the probe's statistics)
    HIST_TAIL, SELECT_BINS, Finite, flat32, fold, histogram_function, finite_histogram, select_quantiles, stat_names,
    stats_function, summarize)

HIST_TENSORS = ("activation", "preactivation", "backprop_grad", "weight_grad")
# No tf.function here is converted by autograph (autograph=False, do_not_convert): the measurement's
# control flow is explicit tf.cond / tf.while_loop, and Keras 3's own model.fit traces its step
# with do_not_convert too (keras/src/backend/tensorflow/trainer.py), so a model that trains under
# fit traces the same way here. Converting took a quarter of a small run's time, once per process.
NOT_CONVERTED = tf.autograph.experimental.do_not_convert


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


# Values from which a tensor's check is screened by its sum (below, two small ops cost less than a
# branch). A module setting, so that tests can send every tensor through the screen.
SCREEN_MIN = 1 << 16


def finite_check(t) -> tf.Tensor:
    """Whether every entry of ``t`` is finite, as :func:`_all_finite`, in one pass for a large tensor:
    a finite sum means a finite tensor (NaN, and an infinity, propagate through a sum), so the sum
    screens, and only a non-finite sum (a NaN/Inf, or finite values whose float32 sum overflows)
    takes the exact test, in a branch decided as soon as the sum exists (the tensor is held no
    longer). One read of the tensor instead of a boolean copy and its reduction."""
    t = tf.convert_to_tensor(t)
    n = static_size(t)
    if n is None or n < SCREEN_MIN:
        return _all_finite(t)
    screen = tf.math.is_finite(tf.reduce_sum(flat32(t)))  # the same op as the moments' sum: one node
    return tf.cond(screen, lambda: tf.constant(True), lambda: called(lambda: _all_finite(t)))


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
        tap_layers, tap_inputs = {}, {}
        for p in self.points:
            if p.pre_layer is not None:
                tap_layers[(p.name, "pre")] = p.pre_layer
            if p.act_layer is not None:
                tap_layers[(p.name, "act")] = p.act_layer
            if type(p.kernel_layer) is keras.layers.Dense:  # its input: the Gram identity of step_stats
                tap_inputs[(p.name, "in")] = p.kernel_layer
        self.taps = Taps(tap_layers, tap_inputs)
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
        self._probe_layout: Dict[bool, Tuple[list, list]] = {}
        # Training-batch statistics (probes.train_every > 0): a row per recorded step, on the device.
        self.train_every = int(cfg.probes.get("train_every", 0) or 0) if cfg.probes.enabled else 0
        self.stats: Optional[StepStats] = None
        if self.train_every > 0:
            index = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
            self.stats = StepStats(
                self.points, self.kernels, {n: index.get(id(k)) for n, k in self.kernels.items() if k is not None},
                built.saturated_intervals or [], int(cfg.probes.get("train_buffer", 100)),
                quantiles=self.percentiles if cfg.probes.get("train_quantiles", False) else (),
                hist_bins=self.hist_bins if cfg.probes.get("train_quantiles", False) else 0)
        jit = bool(cfg.train.jit_compile)
        self._train = {r: tf.function(lambda x, y, s, r=r: self._train_step(x, y, s, r), jit_compile=jit, autograph=False)
                       for r in (False, True)}
        # The batch taken from the iterator inside the graph, as model.fit does: no Python-side
        # tensors per step. An outer function, because XLA cannot compile the iterator op.
        self._train_on = {r: tf.function(lambda it, s, r=r: self._train[r](*next(it), s), autograph=False)
                          for r in (False, True)}
        self._probe = {
            False: tf.function(lambda x, y: self._probe_step(x, y, False), autograph=False),
            True: tf.function(lambda x, y: self._probe_step(x, y, True), autograph=False),
        }
        self._hist = tf.function(self._hist_step, autograph=False)
        shape = [None] + [int(d) for d in self.model.inputs[0].shape[1:]] if getattr(self.model, "inputs", None) else None
        sig = [tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int64)] if shape else None
        self._eval = tf.function(self._eval_batch, input_signature=sig, reduce_retracing=sig is None, autograph=False)

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
        return self.forward_recorded(x, training)

    def records(self, step: int, measure: bool = False) -> bool:
        """Whether training step ``step`` writes a row of training-batch statistics: every
        ``probes.train_every``-th step and every fixed-probe step (``measure``; its update
        ratios come from that row)."""
        return self.stats is not None and (measure or step % self.train_every == 0)

    def _train_step(self, x, y, step, record: bool):
        tvars = self.model.trainable_variables
        start = self.start_of_step()
        with tf.GradientTape() as tape:
            logits, rec = self._forward(x, True)
            loss = self.loss_fn(y, tf.cast(logits, tf.float32))
        targets = self.grad_targets(rec)
        grads, tgrads = tape.gradient(loss, (tvars, targets))
        self.update(step, rec, loss, grads, tgrads, start, record)
        return loss

    # The pieces of a measured step, for any training step that calls them in this order (this
    # class's own, or a watched model.fit's: initsuite.run.watch):
    #   start = start_of_step(); forward under the tape (forward_recorded); loss;
    #   grads, tgrads = tape.gradient(loss, (trainable_variables, grad_targets(rec)));
    #   update(step, rec, loss, grads, tgrads, start, record)
    @NOT_CONVERTED
    def start_of_step(self) -> List[tf.Tensor]:
        """The weights this step starts from, for the forensics' "update" items (read now: a read
        kept off the path of the update, see the module docstring)."""
        return [tf.convert_to_tensor(v) for v in self.model.trainable_variables]

    def forward_recorded(self, x, training: bool = True, call=None):
        """``call(x)`` (default: the model) with the taps recording: (output, recorded tensors)."""
        with self.taps.record() as rec:
            out = self.model(x, training=training) if call is None else call(x)
        return out, rec

    @NOT_CONVERTED
    def grad_targets(self, rec) -> List[tf.Tensor]:
        """The recorded tensors whose gradients are dC/ds, in the order :meth:`update` expects."""
        return [rec[self._grad_key(p)] for p in self.points if self._grad_key(p) in rec]

    @NOT_CONVERTED
    def update(self, step, rec, loss, grads, tgrads, start, record, apply=None) -> None:
        """Check, apply the gradients, search on the first non-finite value, and (``record``: a
        Python bool, or a boolean tensor for a step that decides on the device) write the row of
        training-batch statistics. ``apply(pairs)`` applies the gradients (default: the optimizer)."""
        tvars = self.model.trainable_variables
        apply = apply or self.optimizer.apply_gradients
        # The cheap check, in the order of the search: forward items, the loss, dC/ds.
        fwd_items, back_grads, fwd_flags = [], {}, []
        for p in self.points:
            for key, tensor in (((p.name, "pre"), "preactivation"), ((p.name, "act"), "activation")):
                if key in rec:
                    fwd_items.append((CheckItem("forward", p.name, self._layer_index_of(p.name), tensor), rec[key]))
                    # z = f(s) with f finite on finite s: z is non-finite only after s, which the
                    # search meets first, so z's own flag never decides and is not computed
                    unneeded = tensor == "activation" and p.act_keeps_finite and (p.name, "pre") in rec
                    fwd_flags.append(tf.constant(True) if unneeded else finite_check(rec[key]))
        for p, g in zip([p for p in self.points if self._grad_key(p) in rec], tgrads):
            if g is not None:
                back_grads[p.name] = g
        fwd_ok = tf.stack(fwd_flags + [_all_finite(loss)])
        back_ok = tf.stack([finite_check(g) for g in back_grads.values()] or [tf.constant(True)])
        first_time = self.nf_index < 0
        fresh = tf.logical_and(first_time, tf.logical_not(tf.logical_and(tf.reduce_all(fwd_ok), tf.reduce_all(back_ok))))
        fwd_fresh = tf.logical_and(first_time, tf.logical_not(tf.reduce_all(fwd_ok)))  # known when the forward ends
        start_bad = tf.cond(  # (1) only if the forward pass or the loss is non-finite
            fwd_fresh,
            lambda: tf.stack([tf.logical_not(_all_finite(w)) for w in start]),
            lambda: tf.zeros([len(start)], tf.bool))

        pairs = [(g, v) for g, v in zip(grads, tvars) if g is not None]
        if self.stats is None or record is False:
            apply(pairs)
        elif record is True:
            self._recorded_update(step, rec, back_grads, grads, start, tvars, pairs, apply)
        else:  # decided on the device: the update outside any branch, the row in one
            # Inside a branch the update would wait for every gradient (a branch starts when all its
            # inputs are ready); outside, each layer's update starts as soon as its gradient exists,
            # as in model.fit's own step (the branch cost watched fits 10-17 % of their throughput).
            lr, updates = self._apply_capturing(pairs, apply)

            def recorded():
                self._write_row(step, rec, back_grads, grads, start, tvars, lr, updates)
                return tf.constant(0)

            tf.cond(record, lambda: called(recorded), lambda: tf.constant(0))  # one node when not taken

        if self.stats is not None and record is not True:
            # The first step whose forward pass (or loss) is non-finite gets its row even between
            # cadence steps: the forward tensors' moments over their finite entries and their
            # non-finite counts. Its predicate is known once the forward pass ends, so the branch
            # holds those tensors no longer than the backward pass does. A branch that also took
            # dC/ds and dC/dW would hold every tensor of the step until the backward pass ends
            # (its predicate's time), which slowed every unrecorded step; so a NaN first seen in
            # the backward pass of an unrecorded step has its event but no row.
            unrecorded_fresh = fwd_fresh if record is False else tf.logical_and(fwd_fresh, tf.logical_not(record))

            def nan_row():
                row, hists = self.stats.row(rec, {}, {}, [None] * len(grads), None, None, {}, masked=True)
                self.stats.write(step, row, hists)
                return tf.constant(0)

            tf.cond(unrecorded_fresh, lambda: called(nan_row), lambda: tf.constant(0))

        def found():
            self._forensics(step, tvars, fwd_items, fwd_ok, back_grads, back_ok, start_bad)
            return tf.constant(0)

        tf.cond(fresh, lambda: called(found), lambda: tf.constant(0))

    def _recorded_update(self, step, rec, tgrad, grads, start, tvars, pairs, apply) -> None:
        """The update of a recorded step, and its row of training-batch statistics."""
        # The weights' sums (from ``start``) need no ordering against the update: they are ready
        # (and run) long before it, while the backward pass computes; forcing the update to wait
        # for them cost more than it could save.
        lr, updates = self._apply_capturing(pairs, apply)
        self._write_row(step, rec, tgrad, grads, start, tvars, lr, updates)

    def _apply_capturing(self, pairs, apply):
        """Apply the gradients; return (this step's learning rate for plain SGD, whose update is
        -lr dC/dW, else None; the updates the optimizer wrote, for any other optimizer)."""
        stats = self.stats
        if plain_sgd(self.optimizer):  # nothing to capture
            lr = tf.identity(self.optimizer.learning_rate)  # this step's rate, read before the update
            apply(pairs)
            return lr, {}
        with watch_updates(self.optimizer, [self.kernels[n] for n in stats.kernel_index]) as updates:
            apply(pairs)
        return None, updates

    def _write_row(self, step, rec, tgrad, grads, start, tvars, lr, updates) -> None:
        """The step's row of training-batch statistics into the device buffer (after the update)."""
        stats = self.stats
        inputs = {name: t for (name, kind), t in rec.items() if kind == "in"}
        row, hists = stats.row(rec, inputs, tgrad, grads, start, lambda: [tf.convert_to_tensor(v) for v in tvars],
                               updates, sgd_lr=lr, weight_sums=stats.weight_sums(start))
        stats.write(step, row, hists)

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

    def train_step_on(self, iterator, step: int, record: bool = False):
        """One update on the next batch of a ``tf.data`` iterator; returns the loss tensor (the
        host does not wait for it). A recorded step (:meth:`records`) also writes its row of
        training-batch statistics into the device buffer."""
        loss = self._train_on[bool(record)](iterator, tf.constant(step, tf.int64))
        if record:
            self.stats.note(step)
        return loss

    def train_step(self, x, y, step: int, record: bool = False):
        """:meth:`train_step_on` on a given batch (tests, data-driven inits)."""
        loss = self._train[bool(record)](x, y, tf.constant(step, tf.int64))
        if record:
            self.stats.note(step)
        return loss

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
    def _probe_tensors(self, x, y):
        """The probe batch's forward and backward pass: (recorded outputs, dC/ds and dC/dW by layer)."""
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
        return rec, tgrad, kgrad

    def _hist_step(self, x, y, ranges, finite):
        """The probe's histograms over the axes ``ranges`` its statistics chose, from a second
        forward/backward pass: each tensor's histogram is taken as soon as the tensor exists,
        instead of keeping every layer's tensors until the common axes are known (that kept
        the probe's peak memory twice the statistics' own)."""
        rec, tgrad, kgrad = self._probe_tensors(x, y)
        by_key = {}
        for p in self.points:
            by_key.update({(p.name, "preactivation"): rec.get((p.name, "pre")),
                           (p.name, "activation"): rec.get((p.name, "act")),
                           (p.name, "backprop_grad"): tgrad[p.name], (p.name, "weight_grad"): kgrad[p.name]})
        hist = histogram_function(self.hist_bins)
        _, hist_keys = self._probe_layout[True]
        counts = [hist(flat32(by_key[key]), ranges[i, 0], ranges[i, 1], finite[i]) for i, key in enumerate(hist_keys)]
        return tf.stack(counts) if counts else tf.zeros([0, self.hist_bins], tf.int32)

    def _probe_step(self, x, y, with_hist: bool):
        """The probe's statistics (and, ``with_hist``, each histogram's axis and whether its tensor
        is finite, for :meth:`_hist_step`)."""
        rec, tgrad, kgrad = self._probe_tensors(x, y)
        kernels = [self.kernels[p.name] for p in self.points]

        stats_of = stats_function(self.percentiles)
        names = stat_names(self.percentiles)
        # A histogram's axis needs each tensor's tails, p(HIST_TAIL) and p(100 - HIST_TAIL): taken in
        # the same selection pass as the other percentiles, not in a second one.
        tail_qs = [HIST_TAIL, 100.0 - HIST_TAIL]
        with_tails = stats_function(self.percentiles + tail_qs)
        names_t = stat_names(self.percentiles + tail_qs)
        pick = [names_t.index(n) for n in names]
        pick_tails = [names_t.index(n) for n in stat_names(tail_qs) if n.startswith("p")]
        finite_at = names_t.index("nonfinite_count")
        stat_keys: List[Tuple[str, str, str]] = []
        stat_values: List[tf.Tensor] = []
        hist_layers: Dict[str, List[str]] = {t: [] for t in HIST_TENSORS}  # the layers with a histogram, by tensor
        tails_of: Dict[Tuple[str, str], tf.Tensor] = {}
        finite_of: Dict[Tuple[str, str], tf.Tensor] = {}
        fn, thr = self.built.activation_fn, self.built.saturation_threshold
        intervals = self.built.saturated_intervals

        def measure(layer, tensor, t, sat=None):  # sat: the pre-activation s of z = f(s)
            flat = flat32(t)
            stat_keys.extend((layer, tensor, name) for name in names)
            if with_hist and tensor in hist_layers:
                got = with_tails(flat)
                stat_values.append(tf.gather(got, pick))
                ends = tf.gather(got, pick_tails)
                tails_of[(layer, tensor)] = tf.where(tf.math.is_nan(ends), 0.0, ends)  # (0, 0) if none is finite
                finite_of[(layer, tensor)] = tf.equal(got[finite_at], 0.0)
            else:
                stat_values.append(stats_of(flat))
            if sat is not None:  # the fraction of units with |f'(s)| < threshold, s in slices
                stat_keys.append((layer, tensor, "saturated_frac"))
                if intervals:  # the rule as intervals of s, as in the training step: comparisons, not f'
                    def saturated(c):
                        return saturated_mask(c, intervals)
                else:
                    def saturated(c):
                        return tf.abs(slope(fn, c)) < thr
                count, = fold(flat32(sat), lambda c, acc: (acc + tf.math.count_nonzero(
                    saturated(c), dtype=tf.int32),), (0,))
                stat_values.append((tf.cast(count, tf.float32) / tf.cast(tf.maximum(tf.size(sat), 1), tf.float32))[None])
            if tensor in hist_layers:
                hist_layers[tensor].append(layer)

        for p, k in zip(self.points, kernels):
            s = rec.get((p.name, "pre"))
            z = rec.get((p.name, "act"))
            if s is not None:
                measure(p.name, "preactivation", s)
            if z is not None:
                sat = None
                if s is not None and fn is not None and thr is not None:
                    sat = s
                measure(p.name, "activation", z, sat)
            if tgrad[p.name] is not None:
                measure(p.name, "backprop_grad", tgrad[p.name])
            if k is not None:
                measure(p.name, "weight", k)
                if kgrad[p.name] is not None:
                    measure(p.name, "weight_grad", kgrad[p.name])
        hist_keys, ranges, finite = [], [], []
        if with_hist:
            # One common axis for the hidden layers (the paper draws them on one), and its own for
            # the output layer, whose gradients are 10-30x wider and would squeeze the rest into a
            # few bins.
            hidden = {p.name: p.act_layer is not None for p in self.points}
            for tensor, layers in hist_layers.items():
                groups = ([n for n in layers if hidden.get(n, True)], [n for n in layers if not hidden.get(n, True)])
                for group in groups:
                    if not group:
                        continue
                    ends = tf.stack([tails_of[(name, tensor)] for name in group])
                    lo = tf.reduce_min(ends[:, 0])
                    # A non-empty range even when every value is equal (saturated tanh: all 1.0), with a
                    # width float32 can represent next to lo (1 + 1e-12 == 1 would make the op fail).
                    hi = tf.maximum(tf.reduce_max(ends[:, 1]), lo + tf.maximum(tf.abs(lo) * 1e-6, 1e-12))
                    for name in group:
                        hist_keys.append((name, tensor))
                        ranges.append(tf.stack([lo, hi]))
                        finite.append(finite_of[(name, tensor)])
        self._probe_layout[with_hist] = (stat_keys, hist_keys)
        return (tf.concat(stat_values, 0) if stat_values else tf.zeros([0]),
                tf.stack(ranges) if ranges else tf.zeros([0, 2]),
                tf.stack(finite) if finite else tf.zeros([0], tf.bool))

    def probe(self, x, y, with_hist: bool):
        """Statistics {(layer, tensor): {stat: float}} and histograms
        {(layer, tensor): (edges, counts)} of the probe batch at the current weights."""
        values, ranges, finite = self._probe[bool(with_hist)](x, y)
        stat_keys, hist_keys = self._probe_layout[bool(with_hist)]
        counts = self._hist(x, y, ranges, finite) if hist_keys else None
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
