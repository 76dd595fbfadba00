"""Exact statistics of a tensor without sorting it: the probe's per-tensor summary.

Percentiles are exact (NumPy's linear rule, bit for bit what the sort in
:func:`initsuite.measure.probes.tensor_stats` gives) but found by selection: one binning
pass locates the bins that hold the wanted ranks and only those values are sorted: O(n)
instead of O(n log n). A tensor whose sum is finite needs no NaN mask at all, and its
passes run over slices of :data:`CHUNK` values (:func:`fold`), so a 7.5 M-value CNN
activation needs temporaries of one slice, not several copies of itself (those copies were
the probe's peak memory). The statistics are one ``tf.function`` (:func:`stats_function`)
called per tensor, so they are traced once per process instead of once per tensor and layer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import tensorflow as tf

from initsuite.measure.probes import BASE_STATS, percentile_name

CHUNK = 1 << 18  # values per slice of a chunked pass (1 MB of float32)
SELECT_BINS = 1024  # histogram bins of the selection pass: ~n/1024 values are sorted per percentile
HIST_TAIL = 0.1  # a histogram's common axis spans the layers' [p0.1, p99.9] (extreme outliers go to the edge bins)


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


def fold(flat, body, init, chunk: int = None):
    """``body(part, *acc) -> acc`` over consecutive slices of ``chunk`` values of the flat
    tensor ``flat``: a ``tf.while_loop``, so a pass over a wide tensor keeps temporaries of
    one slice, not of the whole tensor (and each slice's passes run while it is in cache)."""
    chunk = int(chunk or CHUNK)
    n = tf.size(flat)

    def step(i, *acc):
        part = flat[i * chunk: tf.minimum((i + 1) * chunk, n)]
        return (i + 1,) + tuple(body(part, *acc))

    out = tf.while_loop(lambda i, *acc: i * chunk < n, step, (tf.constant(0),) + tuple(init),
                        parallel_iterations=2)
    return out[1:]


def select_quantiles(v, n, lo, hi, qs: Sequence[float], bins: int = SELECT_BINS, mean=None, fused: bool = False):
    """Percentiles ``qs`` (0-100) of the ``n`` finite entries of ``v`` (min ``lo``, max ``hi``;
    any other entry is +inf) by NumPy's default rule: linear interpolation between the sorted
    values at ranks floor(p) and floor(p)+1, p = q/100 (n-1). Bit for bit what sorting gives,
    without sorting everything; NaN where n = 0. Returns (percentiles, sum of (v - mean)^2 when
    ``mean`` is given, else None, the count of zeros): the binning pass takes the variance's
    second pass and the zero and negative counts along, so they cost no pass of their own.

    Selection, in chunked passes (:func:`fold`): each non-zero value goes to one of ``bins``
    equal bins over [lo, hi] by a monotone formula, so bin order is value order; the
    cumulative counts name the bins that hold the wanted ranks and a second pass collects only
    the values in those bins, which are sorted: O(n) plus a sort of about n/bins values per
    percentile. Zeros (half of a ReLU layer) are one block of known ranks, negatives < zeros <
    positives, so they are never binned or sorted.

    ``fused``: the bin formula and the collect pass's comparisons run as one XLA-compiled loop
    per slice (:func:`bin_mask_function`) instead of a dozen kernels, each a pass over the
    slice. Both passes call the same compiled function on the same slice shapes, so a value
    gets the same bin in both however XLA rounds the formula (it may contract it into one
    fused multiply-add, which is monotone too).
    """
    qs = [float(q) for q in qs]
    k = len(qs)
    n1 = tf.maximum(n, 1)
    nf = tf.cast(n1, tf.float32)
    lo = tf.where(n > 0, lo, 0.0)
    spread = tf.logical_and(n > 0, hi > lo)
    # bin = v a - b with a = bins / (hi - lo), b = lo a: the scalars in float64, where hi - lo
    # cannot overflow; per value one multiply and one subtract, both monotone, so bin order is
    # value order however the rounding falls (+inf lands in the last bin). Zeros go to bin ``bins``.
    lo64, hi64 = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
    a64 = float(bins) / tf.where(spread, hi64 - lo64, 1.0)
    a, b = tf.cast(a64, tf.float32), tf.cast(lo64 * a64, tf.float32)

    if fused:
        bin_mask = bin_mask_function(bins, 2 * k)
        no_target = tf.fill([2 * k], -1)

        def bin_of(c):
            return bin_mask(c, a, b, no_target)[0]
    else:
        def bin_of(c):
            return _bin_formula(c, a, b, bins)

    def deviations(c):
        return tf.reduce_sum(tf.math.squared_difference(c, mean)) if mean is not None else 0.0

    if not k:
        ss, zeros = fold(v, lambda c, acc, z: (acc + deviations(c), z + tf.math.count_nonzero(
            tf.equal(c, 0.0), dtype=tf.int32)), (0.0, 0))
        return tf.zeros([0]), (ss if mean is not None else None), zeros

    # The kernel itself: tf.math.bincount also takes the maximum of the bins to size its output,
    # a pass of its own though every bin is in [0, bins] by construction.
    no_weights = tf.zeros([0], tf.int32)

    def count(c, ss, counts, negative):  # zeros are the counts' last bin; +inf is not negative
        return (ss + deviations(c),
                counts + tf.raw_ops.DenseBincount(input=bin_of(c), size=bins + 1, weights=no_weights),
                negative + tf.reduce_sum(tf.cast(c < 0.0, tf.int32)))

    ss, counts, negative = fold(v, count, (0.0, tf.zeros([bins + 1], tf.int32), 0))
    zeros = counts[bins]
    pos = [(q / 100.0) * (nf - 1.0) for q in qs]
    r_lo = [tf.cast(tf.floor(p), tf.int32) for p in pos]
    ranks = tf.stack(r_lo + [tf.minimum(r + 1, n1 - 1) for r in r_lo])
    frac = tf.stack([p - tf.floor(p) for p in pos])
    nonzero = n - zeros
    in_zeros = tf.logical_and(ranks >= negative, ranks < negative + zeros)
    rank = tf.clip_by_value(tf.where(ranks >= negative + zeros, ranks - zeros, ranks), 0, tf.maximum(nonzero - 1, 0))
    cnt = counts[:bins]
    cum = tf.cumsum(cnt)
    want = tf.minimum(tf.searchsorted(cum, rank, side="right"), bins - 1)  # the bin holding each rank
    needed = tf.logical_and(tf.logical_not(in_zeros), tf.logical_and(spread, nonzero > 0))
    keep_bin = tf.scatter_nd(want[:, None], tf.cast(needed, tf.int32), [bins]) > 0
    # A value is kept when its bin is one of the wanted ones: a comparison of the bin number per
    # wanted bin (a per-value gather from a table of kept bins cost twice as much); -1 matches no
    # bin, and zeros, in bin ``bins``, never match.
    target = tf.where(needed, want, -1)

    def collect(mask_of):  # the values of v where mask_of(slice) is true, slice by slice
        kept, = fold(v, lambda c, kept: (kept.write(kept.size(), tf.boolean_mask(c, mask_of(c))),),
                     (tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False,
                                     element_shape=tf.TensorShape([None])),))
        return kept.concat()

    # Ranks floor(p) and floor(p)+1 lie in one bin unless floor(p) is its bin's last value (about
    # one chance in n/bins): then the k bins of the lower ranks are all the bins wanted, and the
    # collect pass makes k comparisons per value instead of 2k. Either way it keeps the same values.
    upper_in_lower = tf.logical_or(tf.logical_not(needed[k:]),
                                   tf.logical_and(needed[:k], tf.equal(want[k:], want[:k])))
    if fused:  # one compiled loop either way: the k lower targets (and -1 twice) or all 2k
        targets = tf.where(tf.reduce_all(upper_in_lower), tf.concat([target[:k], tf.fill([k], -1)], 0), target)
        values = collect(lambda c: bin_mask(c, a, b, targets)[1])
    else:
        lower = tf.unstack(target[:k])
        every = tf.unstack(target)
        values = tf.cond(tf.reduce_all(upper_in_lower), lambda: collect(lambda c: _in_bins(bin_of(c), lower)),
                         lambda: collect(lambda c: _in_bins(bin_of(c), every)))
    part = tf.concat([tf.sort(values), [lo]], 0)  # never empty
    kept_before = tf.cumsum(tf.where(keep_bin, cnt, 0), exclusive=True)
    at = rank - tf.gather(cum - cnt, want) + tf.gather(kept_before, want)
    got = tf.where(in_zeros, 0.0, tf.gather(part, tf.clip_by_value(at, 0, tf.size(part) - 1)))
    g0, g1 = got[:k], got[k:]
    out = tf.where(spread, g0 + (g1 - g0) * frac, lo)  # all values equal: no bins needed
    return tf.where(n > 0, out, float("nan")), (ss if mean is not None else None), zeros


def _bin_formula(c, a, b, bins: int):
    """Each value's bin of :func:`select_quantiles`: zeros to bin ``bins``, the rest to
    clip(c a - b, 0, bins - 1) rounded down, monotone in c."""
    return tf.where(tf.equal(c, 0.0), bins, tf.cast(tf.clip_by_value(c * a - b, 0.0, bins - 1.0), tf.int32))


def _in_bins(b, targets):
    """Whether each bin number of ``b`` is one of the scalar ``targets``: one comparison per
    target (a per-value gather from a table of kept bins cost twice as much)."""
    mask = tf.equal(b, targets[0])
    for t in targets[1:]:
        mask = tf.logical_or(mask, tf.equal(b, t))
    return mask


def bin_mask_function(bins: int, k: int):
    """``f(c, a, b, targets) -> (bins of c, whether each bin is one of the k targets)``: the
    bin formula and the comparisons as one XLA-compiled loop (one pass over the slice), traced
    once per process, bin count and target count."""
    key = ("binmask", int(bins), int(k))
    if key not in _COMPILED:
        @tf.function(jit_compile=True, autograph=False,
                     input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32),
                                      tf.TensorSpec([], tf.float32), tf.TensorSpec([k], tf.int32)])
        def bin_mask(c, a, b, targets):
            got = _bin_formula(c, a, b, int(bins))
            return got, _in_bins(got, [targets[i] for i in range(int(k))])

        _COMPILED[key] = bin_mask
    return _COMPILED[key]


def stat_names(percentiles: Sequence[float]) -> List[str]:
    """The order :func:`summarize` stacks its values in (``saturated_frac`` is separate)."""
    return list(BASE_STATS) + [percentile_name(q) for q in percentiles] + ["zero_frac", "nonfinite_count"]


def summarize(x, percentiles: Sequence[float] = (2.0, 50.0, 98.0), fused: bool = False,
              variance: bool = True) -> tf.Tensor:
    """The statistics of :func:`initsuite.measure.probes.tensor_stats`, same values, stacked in
    :func:`stat_names` order: mean, var (ddof 0), std, percentiles and zero_frac of the
    finite entries (NaN if none), and the count of the others.

    Cheaper than sorting: percentiles by :func:`select_quantiles`, and when the sum is finite
    (no NaN/Inf anywhere, the usual case) no mask is built at all: the sum, min and max are
    reductions of the whole tensor (no temporaries), then one chunked pass gives the variance
    (two-pass, E[(x - mean)^2]: sound in float32 for any mean) with the selection's bins and
    the zero and negative counts.

    ``fused``: see :func:`select_quantiles`; ``variance=False`` skips the variance's pass
    (var and std are NaN) where the caller has the moments already.
    """
    flat = tf.cast(tf.reshape(tf.convert_to_tensor(x), [-1]), tf.float32)  # statistics always in float32
    # A NaN anywhere makes the sum NaN, an infinity makes it +-inf or NaN: a finite sum means a
    # finite tensor. (On no values, min/max are +-float32 max; n = 0 makes everything NaN below.)
    total, lo, hi = tf.reduce_sum(flat), tf.reduce_min(flat), tf.reduce_max(flat)

    def all_finite():
        n = tf.size(flat)
        nf = tf.cast(tf.maximum(n, 1), tf.float32)
        mean = total / nf
        qs, ss, zeros = select_quantiles(flat, n, lo, hi, percentiles, mean=mean if variance else None, fused=fused)
        var = ss / nf if variance else tf.constant(float("nan"))
        out = tf.concat([tf.stack([mean, var, tf.sqrt(var)]), qs, [tf.cast(zeros, tf.float32) / nf]], 0)
        return tf.concat([tf.where(n > 0, out, float("nan")), [0.0]], 0)

    def some_nonfinite():
        f = Finite(flat)
        nf = tf.cast(tf.maximum(f.n, 1), tf.float32)
        mean = tf.reduce_sum(tf.where(f.mask, flat, 0.0)) / nf
        var = (tf.reduce_sum(tf.where(f.mask, tf.math.squared_difference(flat, mean), 0.0)) / nf if variance
               else tf.constant(float("nan")))
        qs, _, zeros = select_quantiles(f.up, f.n, f.lo, f.hi, percentiles, fused=fused)  # f.up: -inf and NaN are +inf there
        out = tf.concat([tf.stack([mean, var, tf.sqrt(var)]), qs, [tf.cast(zeros, tf.float32) / nf]], 0)
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


def flat32(x):
    return tf.cast(tf.reshape(tf.convert_to_tensor(x), [-1]), tf.float32)


def stats_function(percentiles: Sequence[float], fused: bool = False, variance: bool = True):
    """:func:`summarize` as a ``tf.function`` over flat float32 vectors, traced once per
    process and percentile list. The probe calls it for every tensor of every layer: as
    one function its ops are traced once, not once per tensor (tracing them all took
    longer than a whole small run). ``fused``, ``variance``: as :func:`summarize`'s."""
    key = ("stats", bool(fused), bool(variance)) + tuple(float(q) for q in percentiles)
    if key not in _COMPILED:
        qs = key[3:]
        _COMPILED[key] = tf.function(lambda flat: summarize(flat, qs, fused=fused, variance=variance),
                                     input_signature=[tf.TensorSpec([None], tf.float32)],
                                     experimental_attributes=_NOINLINE, autograph=False)
    return _COMPILED[key]


def histogram_function(bins: int):
    """``hist(flat, lo, hi, finite)``: :func:`finite_histogram` over [lo, hi]; ``finite`` (every
    entry finite, as the statistics found) skips building the mask."""
    key = ("hist", int(bins))
    if key not in _COMPILED:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32),
                                      tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.bool)],
                     experimental_attributes=_NOINLINE, autograph=False)
        def hist(flat, lo, hi, finite):
            edges = tf.stack([lo, hi])

            def chunked():
                counts, = fold(flat, lambda c, acc: (acc + tf.histogram_fixed_width(c, edges, nbins=int(bins),
                                                                                    dtype=tf.int32),),
                               (tf.zeros([int(bins)], tf.int32),))
                return counts

            return tf.cond(finite, chunked, lambda: finite_histogram(Finite(flat), lo, hi, int(bins)))

        _COMPILED[key] = hist
    return _COMPILED[key]