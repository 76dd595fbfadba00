"""Initializers that finish once the model is built (``InitSpec.post_build``).

``lsuv`` -- Layer-Sequential Unit-Variance, Mishkin & Matas 2015 (arXiv 1511.06422): an
orthonormal pre-init (Saxe et al. 2013), then, for each layer from the input up, on one
training batch, W <- W / sqrt(Var[layer output]) until |Var - 1| < ``LSUV_TOL`` or
``LSUV_MAX_ITER`` rescalings (the paper's reference code: 0.1 and 10). The output is the kernel
layer's (the pre-activation s of the built-in models; for a custom layer with a fused activation,
its activation). Each iteration is one forward pass, read with :class:`initsuite.measure.probes.Taps`, so
functional, sequential and subclassed models all work.

``critical`` -- the sigma_w^2 that puts the run's activation at the edge of chaos, chi_1 = 1
(:func:`initsuite.setup.meanfield.critical_sigma_w2`; tanh 1, ReLU 2). The registry draws
W ~ N(0, gain^2 / fan_in) without knowing the activation, and :func:`critical` multiplies every
kernel by sqrt(sigma_w^2*) once the full config is known.

Both return the facts the run stores in status.json's ``init_info``: per layer the iterations,
variances and the realised sigma_w^2 = fan_in Var[W], which :func:`initsuite.analysis.theory.run_sigmas`
reads back.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, List

import numpy as np

from initsuite.setup import initializers, meanfield
from initsuite.setup.initializers import InitSpec

LSUV_TOL = 0.1  # |Var[output] - 1| below this ends a layer (Mishkin & Matas' reference code)
LSUV_MAX_ITER = 10  # at most this many rescalings per layer (ditto)


def _targets(built) -> list:
    """The measured layers the suite initialized (all of them for the built-in models)."""
    from initsuite.measure.probes import main_kernel

    keep = set(built.reinitialized or [])
    out = []
    for p in built.points:
        kernel = main_kernel(p.kernel_layer)
        if kernel is not None and (not keep or p.name in keep):
            out.append((p, kernel))
    return out


def _sigma_w2(kernel) -> float:
    w = np.asarray(kernel.numpy(), dtype=np.float64)
    fan_in, _ = initializers.compute_fans(w.shape)
    return float(fan_in * w.var())


_MISSING = object()


@contextlib.contextmanager
def _taps(layers: Dict[str, Any]):
    """Taps on ``layers`` for the duration, then the layers' own ``call`` back (the run's
    instrumentation wraps them again afterwards)."""
    from initsuite.measure.probes import Taps

    saved = {id(l): (l, l.__dict__.get("call", _MISSING)) for l in layers.values()}
    taps = Taps(layers)
    try:
        yield taps
    finally:
        for layer, call in saved.values():
            if call is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", call)


def lsuv(built, x_batch: np.ndarray, cfg=None, tol: float = LSUV_TOL, max_iter: int = LSUV_MAX_ITER) -> Dict[str, Any]:
    """Rescale each layer's kernel, in order, until its output variance on ``x_batch`` is 1 +- tol.

    Returns ``init_info``: method, tol, max_iter, batch, converged (every layer), and per layer
    ``iterations`` (rescalings applied), ``var_initial``, ``var`` (after the last rescaling),
    ``scale`` (total multiplier) and ``sigma_w2`` (fan_in Var[W] afterwards).
    """
    x = np.asarray(x_batch, dtype=np.float32)
    targets = _targets(built)
    outputs = {p.name: p.grad_layer if p.grad_layer is not None else p.kernel_layer for p, _ in targets}
    layers: List[Dict[str, Any]] = []
    with _taps(outputs) as taps:

        def output_var(name: str) -> float:
            with taps.record() as rec:
                built.model(x, training=False)
            return float(np.var(np.asarray(rec[name], dtype=np.float64)))

        for p, kernel in targets:
            var = var0 = output_var(p.name)
            scale, iterations = 1.0, 0
            while math.isfinite(var) and var > 0 and abs(var - 1.0) >= tol and iterations < max_iter:
                factor = 1.0 / math.sqrt(var)
                kernel.assign(np.asarray(kernel.numpy()) * np.float32(factor))
                scale *= factor
                iterations += 1
                var = output_var(p.name)
            layers.append(dict(layer=p.name, iterations=iterations, var_initial=var0, var=var, scale=scale,
                               converged=bool(math.isfinite(var) and abs(var - 1.0) < tol),
                               sigma_w2=_sigma_w2(kernel)))
    return dict(method="lsuv", tol=tol, max_iter=max_iter, batch=int(len(x)),
                converged=all(l["converged"] for l in layers), layers=layers)


def critical(built, x_batch=None, cfg=None) -> Dict[str, Any]:
    """Multiply every kernel by sqrt(sigma_w^2*), the chi_1 = 1 point of ``cfg.activation`` with
    the config's constant bias (sigma_b^2 = 0). The kernels were drawn with sigma_w^2 = gain^2, so
    the realised sigma_w^2 is gain^2 sigma_w^2* (gain 1: exactly critical)."""
    act, alpha = cfg.activation.name, cfg.activation.get("alpha")
    bias = float(cfg.init.get("bias", 0.0) or 0.0)
    gain = float(cfg.init.get("gain", 1.0) or 1.0)
    s2 = meanfield.critical_sigma_w2(act, 0.0, bias, alpha)
    factor = np.float32(math.sqrt(s2))
    layers = []
    for p, kernel in _targets(built):
        kernel.assign(np.asarray(kernel.numpy()) * factor)
        layers.append(dict(layer=p.name, sigma_w2=_sigma_w2(kernel)))
    mf = meanfield.mean_field(act, gain ** 2 * s2, 0.0, bias, alpha)
    return dict(method="critical", activation=act, bias=bias, gain=gain, sigma_w2_critical=s2,
                sigma_w2=gain ** 2 * s2, chi1=mf.chi1, q_star=_json_number(mf.q_star), phase=mf.phase,
                layers=layers)


def _json_number(x: float):
    """status.json is plain JSON: an infinite q* (the forward signal explodes) is written "inf"."""
    return x if math.isfinite(x) else str(x)


# --------------------------------------------------------------------------- the registry entries
# They draw their kernels like any other entry, then ``post_build`` rescales them once the model and
# the full config exist; ``variance`` is that of the draw, before rescaling.

_ORTHOGONAL = initializers.get("orthogonal")


def _lsuv_post_build(built, x_batch, cfg):
    return lsuv(built, x_batch, cfg, tol=float(cfg.init.tol), max_iter=int(cfg.init.max_iter))


initializers.INITIALIZERS.add("lsuv", InitSpec(
    "lsuv", _ORTHOGONAL.make, _ORTHOGONAL.variance, lambda cfg: 0.0,
    "Mishkin & Matas 2015 (arXiv 1511.06422), layer-sequential unit variance: an orthonormal pre-init "
    "(as `orthogonal`: Var[W] = gain^2 / max(rows, cols)), then for each layer in order, on one training "
    "batch, W <- W / sqrt(Var[output]) until |Var[output] - 1| < 0.1, at most 10 times (the reference "
    "code's defaults). Iterations and final variances go to status.json's init_info.",
    post_build=_lsuv_post_build,
    shape_variance=_ORTHOGONAL.shape_variance,
))


def _critical_make(cfg, seed):
    import keras  # TensorFlow starts only when a kernel is drawn

    return keras.initializers.VarianceScaling(
        scale=initializers._gain(cfg) ** 2, mode="fan_in", distribution="untruncated_normal", seed=seed
    )


def _critical_post_build(built, x_batch, cfg):
    return critical(built, x_batch, cfg)


initializers.INITIALIZERS.add("critical", InitSpec(
    "critical", _critical_make, lambda fan_in, fan_out, cfg: initializers._gain(cfg) ** 2 / fan_in, lambda cfg: 0.0,
    "The edge of chaos (Poole et al. 2016, Schoenholz et al. 2017): W ~ N(0, sigma_w^2 / fan_in) with the "
    "sigma_w^2 that puts the run's activation at chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] = 1 (tanh 1, "
    "ReLU 2; initsuite.setup.meanfield.critical_sigma_w2), times gain^2. Drawn as N(0, gain^2 / fan_in), the "
    "variance given here, then rescaled by sqrt(sigma_w^2) once the activation is known.",
    post_build=_critical_post_build,
))
