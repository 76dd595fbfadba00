"""Training-batch statistics from inside the compiled training step.

The training step already holds every measured layer's pre-activation s, activation
z = f(s), back-propagated gradient dC/ds, weight gradient dC/dW, the weights W it
started from and the update the optimizer applied. :class:`StepStats` reduces them, in
the same ``tf.function``, to a few numbers per layer and tensor (one *row*), writes the
row into a device buffer of ``K`` rows, and the host reads the buffer once every ``K``
recorded steps (:meth:`StepStats.take`): no host synchronisation per step.

Per tensor (:data:`MOMENTS`): mean, var (ddof 0), std, norm (L2) and nonfinite_count of
its entries; for activations also zero_frac and saturated_frac (the activation's
saturation rule, :meth:`initsuite.setup.activations.ActivationSpec.saturated_intervals`);
per kernel the update ratio ||dW|| / ||W||. With ``quantiles`` on, each tensor also gets
the probe's exact percentiles and a histogram (every statistic, every step).

How it stays cheap:

* **Two sums per tensor.** sum(x) and sum(x^2) (``tf.nn.l2_loss``: one fused pass, no
  temporary) give mean, norm and var = E[x^2] - mean^2. The difference is used only where it
  cannot cancel, mean^2 <= E[x^2] / 2 (then at most one bit of the sums' precision is lost);
  otherwise the variance takes a second pass, sum((x - mean)^2) / n. A finite sum of squares
  means every entry is finite, so the non-finite count needs no pass in the usual case: one
  ``tf.cond`` switches to masked moments of the finite entries when a sum is NaN/Inf.
* **Counts in one byte.** The zero and saturated fractions of a large tensor are int8 sums of
  the boolean mask over slices of at most 127 entries (:func:`true_fraction`), not the mean of
  a float copy of it: exact either way, a quarter of the bytes written.
* **Dense weight gradients without reading them.** For a Dense layer s = X W + b with X of
  R rows, dC/dW = X^T D (D = dC/ds), so sum(dC/dW) = rowsum(X) . rowsum(D), always, and
  (Gram identity) ||dC/dW||^2 = sum((X X^T) * (D D^T)): O(R^2 (n + m)) work in two small
  matmuls instead of a pass over n m entries, used when R^2 (n + m) < :data:`GRAM_RATIO` n m
  (small batches, wide layers); else that one sum reads the gradient.
* **The update from the optimizer itself.** Plain SGD (no momentum, decay, clipping or EMA)
  updates by -lr dC/dW, so the update's sums are -lr and lr^2 times the gradient's. Any
  other optimizer is watched where it writes: the values it passes to ``assign_add`` /
  ``assign_sub`` for each kernel *are* the update, so no copy of the weights is kept. An
  optimizer that writes another way (``assign``, decoupled weight decay, loss scaling)
  falls back to W_after - W_before.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from initsuite.measure.summaries import HIST_TAIL, flat32, histogram_function, stat_names, stats_function

# One row's statistics per tensor, in this order; activations add ACTIVATION_STATS.
MOMENTS = ("mean", "var", "std", "norm", "nonfinite_count")
ACTIVATION_STATS = ("zero_frac", "saturated_frac")
RATIO = ("update_ratio", "ratio")  # (tensor, stat) of ||dW|| / ||W||
GRAM_RATIO = 4.0  # Gram identity when R^2 (n + m) < GRAM_RATIO n m (its matmuls run near peak, a pass does not)


def masked_moments(x) -> tf.Tensor:
    """[mean, var, std, norm, nonfinite_count] of the finite entries of ``x`` (NaN where none is)
    and the count of the others: the slow path of :func:`vector_moments`."""
    f = flat32(x)
    mask = tf.math.is_finite(f)
    k = tf.reduce_sum(tf.cast(mask, tf.int32))
    kf = tf.cast(tf.maximum(k, 1), tf.float32)
    clean = tf.where(mask, f, 0.0)
    mean = tf.reduce_sum(clean) / kf
    var = tf.reduce_sum(tf.where(mask, tf.math.squared_difference(f, mean), 0.0)) / kf
    peak = tf.reduce_max(tf.abs(clean))  # norm = peak ||x / peak||: no overflow of sum(x^2)
    norm = peak * tf.sqrt(2.0 * tf.nn.l2_loss(clean / tf.maximum(peak, 1e-30)))
    out = tf.stack([mean, var, tf.sqrt(var), norm])
    out = tf.where(k > 0, out, float("nan"))
    return tf.concat([out, [tf.cast(tf.size(f) - k, tf.float32)]], 0)


def called(fn):
    """Run ``fn`` (no arguments; it may capture tensors) as one function-call node, not inlined.
    For ``tf.cond`` branches: an inlined branch that is not taken still sends a "dead" signal
    through each of its ops every step, and a branch of a few hundred ops (the masked moments of
    every tensor, the forensics' search) then costs more than the statistics themselves."""
    # autograph=False: this is the suite's own code, with its control flow in explicit tf.cond
    # (converting it took most of a run's tracing time)
    return tf.function(fn, autograph=False, experimental_attributes={"_noinline": True})()


CANCEL = 1e-3  # var < CANCEL E[x^2]: E[x^2] - mean^2 may have lost its digits, take the second pass


def vector_moments(sums: Sequence["_Sums"], masked: bool = False) -> tf.Tensor:
    """:data:`MOMENTS` of several tensors, flattened [tensor-major], from their sums: one
    vector computation for all of them. Where var = E[x^2] - mean^2 may have cancelled
    (var < CANCEL E[x^2], i.e. |mean| > ~30 std), that tensor's variance takes the second pass
    sum((x - mean)^2) / n; where a sum is NaN/Inf, the tensor's moments are its finite entries'
    (:func:`masked_moments`). Both are branches taken only when needed."""
    if masked:  # known to hold a non-finite value (the forensics' row): the slow path only
        return tf.reshape(tf.stack([masked_moments(v.flat_fn()) for v in sums]), [-1])
    n = tf.stack([tf.cast(v.n, tf.float32) for v in sums])
    total = tf.stack([v.total for v in sums])
    squares = tf.stack([v.squares for v in sums])
    nf = tf.maximum(n, 1.0)
    mean, msq = total / nf, squares / nf
    var = tf.maximum(msq - tf.square(mean), 0.0)
    finite = tf.reduce_all(tf.math.is_finite(tf.concat([total, squares], 0)))
    cancel = tf.logical_and(var < CANCEL * msq, msq > 0)

    def fast():
        def second_pass():  # rare: every tensor's second pass, kept where its difference cancelled
            exact = tf.stack([tf.reduce_sum(tf.math.squared_difference(v.flat_fn(), mean[i])) / nf[i]
                              for i, v in enumerate(sums)])
            return tf.where(cancel, exact, var)

        v2 = tf.cond(tf.reduce_any(cancel), lambda: called(second_pass), lambda: var)
        out = tf.stack([mean, v2, tf.sqrt(v2), tf.sqrt(squares), tf.zeros_like(mean)], axis=1)
        nan = float("nan")
        empty = tf.constant([nan, nan, nan, nan, 0.0])
        return tf.where((n > 0)[:, None], out, empty[None, :])

    def slow():
        return tf.stack([masked_moments(v.flat_fn()) for v in sums])

    return tf.reshape(tf.cond(finite, fast, lambda: called(slow)), [-1])


def numpy_moments(x) -> Dict[str, float]:
    """The oracle of :data:`MOMENTS` in float64 (tests and docs)."""
    x = np.asarray(x, np.float64).ravel()
    fin = x[np.isfinite(x)]
    if not len(fin):
        return dict(mean=np.nan, var=np.nan, std=np.nan, norm=np.nan, nonfinite_count=float(len(x)))
    return dict(mean=fin.mean(), var=fin.var(), std=fin.std(), norm=float(np.linalg.norm(fin)),
                nonfinite_count=float(len(x) - len(fin)))


class _Sums:
    """sum and sum of squares of one tensor, with the tensor kept for a second pass or the
    masked path (``flat`` is lazy: the Gram identity never reads dC/dW unless it must)."""

    def __init__(self, n, total, squares, flat_fn):
        self.n, self.total, self.squares, self.flat_fn = n, total, squares, flat_fn

    @classmethod
    def of(cls, x):
        f = flat32(x)
        n = f.shape[0] if f.shape[0] is not None else tf.size(f)  # static where known: no op
        return cls(n, tf.reduce_sum(f), 2.0 * tf.nn.l2_loss(f), lambda: f)

    def scaled(self, c):
        """The sums of c x (the update of plain SGD: c = -lr)."""
        return _Sums(self.n, c * self.total, tf.square(c) * self.squares, lambda: c * self.flat_fn())


def gram_sums(x, d, kernel_shape, grad=None) -> _Sums:
    """sum and sum of squares of dC/dW = X^T D for a Dense layer: the sum always from the row sums
    of X and D, O(R (n + m)); the sum of squares from the Gram identity, O(R^2 (n + m)), or, given
    the gradient ``grad`` (when that is cheaper: large R), by one pass over it."""
    n_in, n_out = int(kernel_shape[0]), int(kernel_shape[1])
    X = tf.reshape(tf.cast(x, tf.float32), [-1, n_in])
    D = tf.reshape(tf.cast(d, tf.float32), [-1, n_out])
    total = tf.tensordot(tf.reduce_sum(X, 1), tf.reduce_sum(D, 1), 1)
    if grad is None:
        squares = tf.reduce_sum(tf.matmul(X, X, transpose_b=True) * tf.matmul(D, D, transpose_b=True))
        return _Sums(n_in * n_out, total, squares, lambda: flat32(tf.matmul(X, D, transpose_a=True)))
    f = flat32(grad)
    return _Sums(n_in * n_out, total, 2.0 * tf.nn.l2_loss(f), lambda: f)


def dense_kind(layer) -> bool:
    """A plain Dense layer (linear, so its output is s and the gradient there is D = dC/ds):
    its weight gradient is X^T D, and :func:`gram_sums` applies."""
    import keras

    if type(layer) is not keras.layers.Dense:
        return False
    act = getattr(layer, "activation", None)
    return act in (None, keras.activations.linear) and not getattr(layer, "lora_rank", None)


def use_gram(layer, input_rows: Optional[int]) -> bool:
    """Whether the Gram identity gives a Dense layer's ||dC/dW||^2 more cheaply than a pass over
    it: a static row count R with R^2 (n + m) < GRAM_RATIO n m."""
    if not dense_kind(layer) or input_rows is None:
        return False
    n, m = (int(d) for d in layer.kernel.shape)
    return input_rows * input_rows * (n + m) < GRAM_RATIO * n * m


def static_size(x) -> Optional[int]:
    """The number of entries of ``x`` when its shape is fully static, else None."""
    return int(np.prod(x.shape.as_list(), dtype=np.int64)) if x.shape.is_fully_defined() else None


def static_rows(x) -> Optional[int]:
    """The number of rows R of a layer input reshaped to [R, features], if static."""
    dims = x.shape.as_list()[:-1] if x.shape.rank else None
    if not dims or any(d is None for d in dims):
        return None
    return int(np.prod(dims))


def plain_sgd(optimizer) -> bool:
    """True when the optimizer's update is exactly -lr * gradient (Keras SGD, momentum 0, no
    weight decay, clipping, EMA or gradient accumulation)."""
    import keras

    if type(optimizer) is not keras.optimizers.SGD:
        return False
    return not (float(optimizer.momentum) or optimizer.weight_decay or optimizer.use_ema
                or optimizer.gradient_accumulation_steps or optimizer.clipnorm or optimizer.clipvalue
                or optimizer.global_clipnorm)


@contextlib.contextmanager
def watch_updates(optimizer, variables):
    """Inside: every value the optimizer adds to / subtracts from one of ``variables`` is kept,
    ``out[id(var)]`` = (value, +1 | -1): the update is sign * value (a variable written more than
    once, or by ``assign``, maps to None: the caller falls back to W_after - W_before)."""
    out: Dict[int, Any] = {}
    ids = {id(v) for v in variables}
    if optimizer.weight_decay or optimizer.use_ema or optimizer.gradient_accumulation_steps:
        yield out  # writes outside assign_add/assign_sub: nothing is captured
        return
    originals = {name: getattr(optimizer, name) for name in ("assign_add", "assign_sub", "assign")}

    def make(name, sign):
        def wrapped(variable, value):
            key = id(variable)
            if key in ids:
                if key in out or sign == 0:
                    out[key] = None
                else:  # (update tensor, sign): the sums take the sign, no negated copy is made
                    out[key] = (tf.convert_to_tensor(value), sign)
            return originals[name](variable, value)
        return wrapped

    optimizer.assign_add, optimizer.assign_sub, optimizer.assign = make("assign_add", 1), make("assign_sub", -1), \
        make("assign", 0)
    try:
        yield out
    finally:
        for name in originals:
            try:
                delattr(optimizer, name)  # back to the class's method
            except AttributeError:
                setattr(optimizer, name, originals[name])


def saturated_mask(s, intervals):
    """Whether each entry of ``s`` lies inside any (lo, hi) of ``intervals`` (the open sets where
    |f'(s)| is below the saturation threshold); None when there are no intervals."""
    mask = None
    for lo, hi in intervals:
        m = None
        if np.isfinite(lo):
            m = s > lo
        if np.isfinite(hi):
            m = (s < hi) if m is None else tf.logical_and(m, s < hi)
        if m is None:
            m = tf.ones_like(s, tf.bool)
        mask = m if mask is None else tf.logical_or(mask, m)
    return mask


COUNT_MIN = 1 << 16  # entries from which a mask is counted in int8 slices (below, the float mean is fewer ops)


def _slice_width(n: int) -> Optional[int]:
    """The widest slice k <= 127 (an int8 sum of k booleans cannot overflow) that divides ``n``,
    if one of at least 16 exists."""
    return next((k for k in range(127, 15, -1) if n % k == 0), None)


def true_fraction(mask) -> tf.Tensor:
    """The fraction of True entries of a boolean tensor. A large one is counted as int8 sums over
    slices of k entries, then their int32 sum: the float path writes a 4-byte copy of every entry
    (the cast) and reads it again, this one a 1-byte copy; exact either way."""
    n = static_size(mask)
    k = _slice_width(n) if n is not None and n >= COUNT_MIN else None
    if k is None:
        return tf.reduce_mean(tf.cast(mask, tf.float32))
    part = tf.reduce_sum(tf.reshape(tf.cast(mask, tf.int8), [-1, k]), axis=1)
    return tf.cast(tf.reduce_sum(tf.cast(part, tf.int32)), tf.float32) / float(n)


def saturated_fraction(s, intervals) -> tf.Tensor:
    """Fraction of entries of ``s`` in :func:`saturated_mask`."""
    mask = saturated_mask(tf.cast(s, tf.float32), intervals)
    if mask is None:
        return tf.constant(0.0)
    return true_fraction(mask)


class StepStats:
    """One row of training-batch statistics per recorded step, buffered on the device.

    ``layout`` names each column (layer, tensor, stat); :meth:`row` builds the row inside the
    train step from what the step holds; :meth:`write` stores it with its step in buffer slot
    (rows written) % K; :meth:`note` (host) counts the recorded steps and reads the buffer
    once it holds K unread rows; :meth:`take` hands over every row not yet handed over,
    the partial buffer included.
    """

    def __init__(self, points, kernels, kernel_index, intervals, buffer: int, quantiles: Sequence[float] = (),
                 hist_bins: int = 0):
        self.points = list(points)
        self.kernels = kernels  # layer -> main kernel variable (or None)
        self.kernel_index = kernel_index  # layer -> index of its kernel in trainable_variables
        self.intervals = intervals
        self.K = max(1, int(buffer))
        self.quantiles = tuple(float(q) for q in quantiles)
        self.hist_bins = int(hist_bins)
        self._qnames = [n for n in stat_names(self.quantiles) if n not in ("mean", "var", "std", "zero_frac",
                                                                           "nonfinite_count")]
        layout: List[Tuple[str, str, str]] = []
        self.hist_keys: List[Tuple[str, str]] = []
        for p in self.points:
            for tensor in self.tensors_of(p):
                extra = ACTIVATION_STATS if tensor == "activation" else ()
                if tensor == "activation" and not intervals:
                    extra = ("zero_frac",)
                # the update's moments are derived from the gradient's (plain SGD) or its capture: it
                # gets no percentiles or histogram, which would need it as a tensor of its own
                qnames = () if tensor == "update" else tuple(self._qnames)
                layout.extend((p.name, tensor, st) for st in MOMENTS + extra + qnames)
                if self.hist_bins and tensor != "update":
                    self.hist_keys.append((p.name, tensor))
            if kernel_index.get(p.name) is not None:
                layout.append((p.name, *RATIO))
        self.layout = layout
        self.index = {key: i for i, key in enumerate(layout)}
        # K + 1 slots: the host reads after K recorded steps, and the first non-finite step may add
        # one row of its own in between (the forensics write it whatever the cadence).
        self.slots = self.K + 1
        self.buf = tf.Variable(tf.zeros([self.slots, len(layout)]), trainable=False, name="step_stats")
        self.buf_steps = tf.Variable(tf.fill([self.slots], tf.constant(-1, tf.int64)), trainable=False,
                                     name="step_stats_steps")
        self.written = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_stats_written")
        if self.hist_keys:
            self.hist_buf = tf.Variable(tf.zeros([self.slots, len(self.hist_keys), self.hist_bins], tf.int32),
                                        trainable=False, name="step_hists")
            self.range_buf = tf.Variable(tf.zeros([self.slots, len(self.hist_keys), 2]), trainable=False,
                                         name="step_hist_ranges")
        self._pending = 0  # recorded steps dispatched since the last read
        self._read_rows = 0  # rows read off the device so far
        self._taken: List[Tuple[np.ndarray, np.ndarray, Any, Any]] = []

    def tensors_of(self, p) -> List[str]:
        out = []
        if p.pre_layer is not None:
            out.append("preactivation")
        if p.act_layer is not None:
            out.append("activation")
        if p.grad_layer is not None:
            out.append("backprop_grad")
        if self.kernel_index.get(p.name) is not None:
            out += ["weight", "weight_grad", "update"]
        return out

    # -- inside the step ------------------------------------------------------------------
    def weight_sums(self, start) -> Dict[str, "_Sums"]:
        """The kernels' sums from their values before the update (take them before it)."""
        return {name: _Sums.of(start[i]) for name, i in self.kernel_index.items() if i is not None}

    def row(self, rec, inputs, tgrad, grads, start, after, updates, sgd_lr=None, weight_sums=None, masked=False):
        """The row of one step. ``rec``: the taps' outputs {(layer, "pre"|"act"): tensor};
        ``inputs``: {layer: its kernel layer's input}; ``tgrad``: {layer: dC/ds}; ``grads``:
        the trainable variables' gradients; ``start``: their values before the update;
        ``after()``: their values after it; ``updates``: :func:`watch_updates`' capture;
        ``sgd_lr``: the learning rate when the update is plain SGD's -lr dC/dW; ``weight_sums``:
        :meth:`weight_sums`, taken before the update. Returns (row, histograms).
        ``start=None`` (the first non-finite step between recorded ones) leaves the weights and the
        update out; ``masked``: a non-finite value is known to be there (moments of the finite entries).
        """
        if weight_sums is None and start is not None:
            weight_sums = self.weight_sums(start)
        sums: Dict[Tuple[str, str], _Sums] = {}
        sat: Dict[str, tf.Tensor] = {}
        zero: Dict[str, tf.Tensor] = {}
        current = None
        for p in self.points:
            s, z = rec.get((p.name, "pre")), rec.get((p.name, "act"))
            if p.pre_layer is not None and s is not None:
                sums[(p.name, "preactivation")] = _Sums.of(s)
            if p.act_layer is not None and z is not None:
                sums[(p.name, "activation")] = _Sums.of(z)
                zero[p.name] = true_fraction(tf.equal(z, tf.zeros([], z.dtype)))
                if self.intervals and s is not None:
                    sat[p.name] = saturated_fraction(s, self.intervals)
            g = tgrad.get(p.name)
            if p.grad_layer is not None and g is not None:
                sums[(p.name, "backprop_grad")] = _Sums.of(g)
            i = self.kernel_index.get(p.name)
            if i is None:
                continue
            if weight_sums is not None:
                sums[(p.name, "weight")] = weight_sums[p.name]
            if grads[i] is not None:
                x_in = inputs.get(p.name)
                if g is not None and x_in is not None and dense_kind(p.kernel_layer):
                    cheap = use_gram(p.kernel_layer, static_rows(x_in))
                    wg = gram_sums(x_in, g, self.kernels[p.name].shape, grad=None if cheap else grads[i])
                else:
                    wg = _Sums.of(grads[i])
                sums[(p.name, "weight_grad")] = wg
                if sgd_lr is not None:
                    sums[(p.name, "update")] = wg.scaled(-tf.cast(sgd_lr, tf.float32))
            if (p.name, "update") not in sums and start is not None:
                captured = updates.get(id(self.kernels[p.name]))
                if captured is None:
                    if current is None:
                        current = after()
                    sums[(p.name, "update")] = _Sums.of(tf.cast(current[i], tf.float32) - tf.cast(start[i], tf.float32))
                else:
                    u, sign = captured
                    sums[(p.name, "update")] = _Sums.of(u).scaled(float(sign))
        keys = list(sums)
        # Every tensor's moments at once: a few vector ops for the whole row, not a dozen per tensor
        # (at small batch sizes the step's time is mostly per-op overhead).
        flat_mom = vector_moments(list(sums.values()), masked=masked) if keys else tf.zeros([0])
        extras = [v for _, v in sorted(zero.items())] + [v for _, v in sorted(sat.items())]
        pieces = tf.concat([flat_mom, tf.stack(extras) if extras else tf.zeros([0]), [float("nan")]], 0)
        pos: Dict[Tuple[str, str, str], int] = {}
        for j, (layer, tensor) in enumerate(keys):
            for k, stat in enumerate(MOMENTS):
                pos[(layer, tensor, stat)] = j * len(MOMENTS) + k
        at = len(keys) * len(MOMENTS)
        for layer, _ in sorted(zero.items()):
            pos[(layer, "activation", "zero_frac")] = at
            at += 1
        for layer, _ in sorted(sat.items()):
            pos[(layer, "activation", "saturated_frac")] = at
            at += 1
        missing = at  # the NaN at the end of `pieces`
        ratio_of = [p.name for p in self.points if (p.name, *RATIO) in self.index
                    and (p.name, "update", "norm") in pos and (p.name, "weight", "norm") in pos]
        if ratio_of:  # ||dW|| / ||W|| per kernel
            u = tf.gather(pieces, [pos[(n, "update", "norm")] for n in ratio_of])
            w = tf.gather(pieces, [pos[(n, "weight", "norm")] for n in ratio_of])
            pieces = tf.concat([pieces, u / tf.maximum(w, 1e-30)], 0)
            for k, n in enumerate(ratio_of):
                pos[(n, *RATIO)] = missing + 1 + k
        row = tf.gather(pieces, [pos.get(key, missing) for key in self.layout])
        hists = []
        if self._qnames or self.hist_keys:
            values: List[Any] = [None] * len(self.layout)
            hists = self._quantiles(values, rec, tgrad, grads, start, inputs)
            qpos = [i for i, v in enumerate(values) if v is not None]
            if qpos:
                row = tf.tensor_scatter_nd_update(row, [[i] for i in qpos], tf.stack([values[i] for i in qpos]))
        return row, hists

    def _quantiles(self, values, rec, tgrad, grads, start, inputs):
        """Exact percentiles (and histograms) of every tensor: the probe's statistics on the
        training batch (``probes.train_quantiles``). Each tensor's histogram spans its own
        [p(HIST_TAIL), p(100 - HIST_TAIL)], found in the same selection pass."""
        tail_qs = (HIST_TAIL, 100.0 - HIST_TAIL) if self.hist_keys else ()
        qs = self.quantiles + tail_qs
        # Fused (XLA) selection: at every step its kernels are most of the cost; the moments are in
        # the row already, so the variance's pass is skipped.
        stats_of = stats_function(qs, fused=True, variance=False)
        names = stat_names(qs)
        tail_at = [names.index(n) for n in stat_names(tail_qs) if n.startswith("p")]
        finite_at = names.index("nonfinite_count")
        hist = histogram_function(self.hist_bins) if self.hist_keys else None
        found: Dict[Tuple[str, str], Tuple[tf.Tensor, tf.Tensor]] = {}
        for p in self.points:
            i = self.kernel_index.get(p.name)
            for tensor in self.tensors_of(p):
                t = {"preactivation": rec.get((p.name, "pre")), "activation": rec.get((p.name, "act")),
                     "backprop_grad": tgrad.get(p.name),
                     "weight": start[i] if i is not None and start is not None else None,
                     "weight_grad": grads[i] if i is not None else None}.get(tensor)
                if t is None:
                    continue
                flat = flat32(t)
                got = stats_of(flat)
                for k, name in enumerate(names):
                    if name in self._qnames and (p.name, tensor, name) in self.index:
                        values[self.index[(p.name, tensor, name)]] = got[k]
                if (p.name, tensor) in self.hist_keys:
                    ends = tf.gather(got, tail_at)
                    lo = tf.where(tf.math.is_nan(ends[0]), 0.0, ends[0])
                    hi = tf.where(tf.math.is_nan(ends[1]), 0.0, ends[1])
                    hi = tf.maximum(hi, lo + tf.maximum(tf.abs(lo) * 1e-6, 1e-12))
                    found[(p.name, tensor)] = (tf.stack([lo, hi]), hist(flat, lo, hi, tf.equal(got[finite_at], 0.0)))
        if not self.hist_keys:
            return []
        zero = (tf.zeros([2]), tf.zeros([self.hist_bins], tf.int32))
        pairs = [found.get(key, zero) for key in self.hist_keys]
        return [tf.stack([r for r, _ in pairs]), tf.stack([c for _, c in pairs])]

    def write(self, step, row, hists) -> None:
        """Store ``row`` (and its histograms) for ``step`` in slot written % K."""
        r = tf.cast(self.written % self.slots, tf.int32)
        self.buf.scatter_nd_update([[r]], row[None])
        self.buf_steps.scatter_nd_update([[r]], tf.cast(step, tf.int64)[None])
        if hists:
            self.range_buf.scatter_nd_update([[r]], hists[0][None])
            self.hist_buf.scatter_nd_update([[r]], hists[1][None])
        self.written.assign_add(1)

    # -- on the host ----------------------------------------------------------------------
    def note(self, step: int) -> None:
        """A recorded step was dispatched; read the buffer once K of them are unread."""
        self._pending += 1
        if self._pending >= self.K:
            self._read()

    def _read(self) -> None:
        n = int(self.written.numpy())
        new = n - self._read_rows
        if new <= 0:
            self._pending = 0
            return
        if new > self.slots:  # more rows than slots since the last read: a bookkeeping bug
            raise RuntimeError(f"step-statistics buffer overrun: {new} rows for {self.slots} slots")
        slots = (self._read_rows + np.arange(new)) % self.slots
        values, steps = self.buf.numpy()[slots], self.buf_steps.numpy()[slots]
        hist = (self.range_buf.numpy()[slots], self.hist_buf.numpy()[slots]) if self.hist_keys else (None, None)
        self._taken.append((steps, values, *hist))
        self._read_rows, self._pending = n, 0

    def take(self):
        """(steps [n], values [n, len(layout)], ranges [n, H, 2] | None, counts [n, H, bins] | None)
        of every recorded step not handed over yet; each row is handed over once."""
        self._read()
        taken, self._taken = self._taken, []
        if not taken:
            return np.zeros([0], np.int64), np.zeros([0, len(self.layout)], np.float32), None, None
        cat = (lambda i: np.concatenate([t[i] for t in taken]) if taken[0][i] is not None else None)
        return cat(0), cat(1), cat(2), cat(3)

    def reset(self) -> None:
        """Forget the rows not handed over (a fit starts again)."""
        self._pending, self._read_rows, self._taken = 0, 0, []
        self.written.assign(0)
