"""Taps on layer outputs, the reference per-tensor statistics, and the NaN/Inf check items.

How layers are read: each measured layer's ``call`` is wrapped (:class:`Taps`) so
that, while a forward pass is being recorded, its output tensor is kept. The
wrapper works the same for functional, sequential, subclassed and nested Keras
models, because every one of them ends up calling ``layer.call``. Gradients
with respect to those recorded tensors (dC/ds) come from the same
``tf.GradientTape`` as the weight gradients.

Everything here runs inside ``tf.function``: a measurement returns a few numbers
per layer and tensor, never the tensors themselves.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

BASE_STATS = ("mean", "var", "std")


def percentile_name(q: float) -> str:
    """2 -> 'p02', 50 -> 'p50', 98 -> 'p98', 99.5 -> 'p99.5'."""
    return f"p{int(q):02d}" if float(q).is_integer() else f"p{q:g}"


class Taps:
    """Keeps the outputs of chosen layers during a recorded forward pass.

    ``layers`` maps a key to a Keras layer. Within ``with taps.record() as out:``
    every call of those layers stores its output in ``out[key]`` (and, for the keys of
    ``inputs``, the layer's first input); outside, the wrapped layers behave exactly as
    before. A layer called several times keeps its last output.
    """

    def __init__(self, layers: Dict[Any, Any], inputs: Optional[Dict[Any, Any]] = None):
        self._out: Optional[dict] = None
        by_layer: Dict[int, Tuple[Any, List[Any], List[Any]]] = {}
        for key, layer in layers.items():
            by_layer.setdefault(id(layer), (layer, [], []))[1].append(key)
        for key, layer in (inputs or {}).items():  # keys whose value is the layer's (first) input
            by_layer.setdefault(id(layer), (layer, [], []))[2].append(key)
        for layer, keys, in_keys in by_layer.values():
            self._wrap(layer, keys, in_keys)

    def _wrap(self, layer, keys, in_keys=()):
        original = layer.call
        taps = self

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            if taps._out is not None:
                for key in keys:
                    taps._out[key] = out
                if in_keys:
                    first = args[0] if args else next(iter(kwargs.values()), None)
                    for key in in_keys:
                        taps._out[key] = first
            return out

        # Instance attribute: Keras looks up ``self.call`` at call time.
        layer.call = call

    @contextlib.contextmanager
    def record(self):
        self._out = {}
        try:
            yield self._out
        finally:
            self._out = None


def _finite_part(x):
    flat = tf.reshape(tf.cast(x, tf.float32), [-1])
    finite = tf.math.is_finite(flat)
    return tf.boolean_mask(flat, finite), tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.float32))


def _quantiles(sorted_x, qs: Sequence[float]):
    """Linear-interpolation percentiles of a sorted 1-D tensor (NumPy's default method)."""
    n = tf.cast(tf.size(sorted_x), tf.float32)
    out = []
    for q in qs:
        pos = (float(q) / 100.0) * (n - 1.0)
        lo = tf.floor(pos)
        hi = tf.minimum(lo + 1.0, n - 1.0)
        frac = pos - lo
        a = tf.gather(sorted_x, tf.cast(lo, tf.int32))
        b = tf.gather(sorted_x, tf.cast(hi, tf.int32))
        out.append(a + (b - a) * frac)
    return out


def tensor_stats(
    x,
    percentiles: Sequence[float] = (2.0, 50.0, 98.0),
    saturated=None,
) -> Dict[str, tf.Tensor]:
    """mean, var (population, ddof 0), std, percentiles, zero_frac and nonfinite_count of
    the finite entries of ``x``; ``saturated_frac`` when a boolean mask of saturated
    units is given. All float32 scalars; NaN where no entry is finite."""
    vals, nonfinite = _finite_part(x)
    n = tf.size(vals)
    names = list(BASE_STATS) + [percentile_name(q) for q in percentiles] + ["zero_frac"]

    def compute():
        mean = tf.reduce_mean(vals)
        var = tf.reduce_mean(tf.square(vals - mean))
        qs = _quantiles(tf.sort(vals), percentiles)
        zero = tf.reduce_mean(tf.cast(tf.equal(vals, 0.0), tf.float32))
        return [mean, var, tf.sqrt(var)] + qs + [zero]

    def empty():
        return [tf.constant(float("nan"))] * len(names)

    values = tf.cond(n > 0, compute, empty)
    stats = dict(zip(names, values))
    stats["nonfinite_count"] = nonfinite
    if saturated is not None:
        stats["saturated_frac"] = tf.reduce_mean(tf.cast(tf.reshape(saturated, [-1]), tf.float32))
    return stats


def slope(fn, s):
    """Elementwise f'(s) by automatic differentiation (f is elementwise, so the gradient
    of sum f(s) is the vector of slopes)."""
    with tf.GradientTape() as g:
        g.watch(s)
        z = fn(s)
    return g.gradient(z, s)


def main_kernel(layer):
    """The variable a layer's weight statistics describe: its largest trainable tensor of
    rank >= 2 (Dense/Conv kernel, Embedding table, depthwise kernel...)."""
    candidates = [w for w in layer.trainable_weights if len(w.shape) >= 2]
    if not candidates:
        return None
    return max(candidates, key=lambda w: int(tf.size(w)))


@dataclass
class CheckItem:
    """One entry of the ordered NaN/Inf check list."""

    phase: str
    layer: str
    layer_index: int
    tensor: str
    step_offset: int = 0  # -1: the problem was made by the previous step's update
