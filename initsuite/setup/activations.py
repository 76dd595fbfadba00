"""The activation registry: each entry has a TensorFlow/Keras form for models, a NumPy
form and derivative for theory, and a saturation / dead-unit rule for the probes.

Saturation rule (one definition for every activation, so the numbers compare):
a unit is *saturated* when its local slope |f'(s)| is below 5 % of the activation's
peak slope. For tanh that is |z| > 0.975, for sigmoid z < 0.013 or z > 0.987, for
ReLU s < 0 (a dead unit: no gradient passes), for ELU/SELU s < -3; leaky ReLU
(slope 0.2 below 0) and linear never saturate. Glorot & Bengio (2010, Fig. 2-3)
watch exactly this: units whose gradient has all but vanished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from initsuite.registry import Registry

SATURATION_SLOPE_FRACTION = 0.05


@dataclass(frozen=True)
class ActivationSpec:
    name: str
    numpy_fn: Callable[[np.ndarray, Optional[float]], np.ndarray]  # (x, alpha) -> f(x), float64
    keras_fn: Callable[[Optional[float]], Callable]  # alpha -> elementwise tensor function
    doc: str
    default_alpha: Optional[float] = None
    # alpha -> whether f(s) is finite for every finite s, computed without an intermediate that can
    # overflow (bounded f, or |f(s)| <= |s|): the forensics then need not check z = f(s) apart from s.
    keeps_finite: Callable[[Optional[float]], bool] = lambda a: False

    def finite_preserving(self, alpha: Optional[float] = None) -> bool:
        """Whether a finite pre-activation always gives a finite activation (see ``keeps_finite``)."""
        return bool(self.keeps_finite(self._alpha(alpha)))

    def numpy(self, x, alpha: Optional[float] = None) -> np.ndarray:
        return self.numpy_fn(np.asarray(x, dtype=np.float64), self._alpha(alpha))

    def derivative(self, x, alpha: Optional[float] = None) -> np.ndarray:
        """f'(x) by a central difference in float64 (exact enough for quadrature)."""
        x = np.asarray(x, dtype=np.float64)
        h = 1e-5
        return (self.numpy(x + h, alpha) - self.numpy(x - h, alpha)) / (2 * h)

    def tensor_fn(self, alpha: Optional[float] = None) -> Callable:
        """The elementwise function used inside models (keras.layers.Activation accepts it). It
        carries its registry name and alpha (``_initsuite_activation``), so a model built by the
        suite and then handed to ``initsuite.keras.watch`` is still known to hold it."""
        a = self._alpha(alpha)
        fn = self.keras_fn(a)
        fn._initsuite_activation = (self.name, a)  # not __name__: Keras would serialize it as its own
        return fn

    def _alpha(self, alpha):
        return self.default_alpha if alpha is None else alpha

    def peak_slope(self, alpha: Optional[float] = None) -> float:
        grid = np.linspace(-10, 10, 20001)
        return float(np.max(np.abs(self.derivative(grid, alpha))))

    def slope_at_zero(self, alpha: Optional[float] = None) -> float:
        return float(self.derivative(np.array([0.0]), alpha)[0])

    def saturation_threshold(self, alpha: Optional[float] = None) -> float:
        """Slope below which a unit counts as saturated (5 % of the peak slope)."""
        return SATURATION_SLOPE_FRACTION * self.peak_slope(alpha)

    def _edge(self, outside: float, inside: float, alpha) -> float:
        """Bisection for the boundary between a grid point with |f'| >= threshold and one below."""
        thr = self.saturation_threshold(alpha)
        for _ in range(40):
            mid = 0.5 * (outside + inside)
            if abs(float(self.derivative(np.array([mid]), alpha)[0])) < thr:
                inside = mid
            else:
                outside = mid
        return float(inside)

    def saturated_intervals(self, alpha: Optional[float] = None, span: float = 60.0,
                            step: float = 1e-3) -> list:
        """The saturation rule as intervals of s: the open sets where |f'(s)| is below
        :meth:`saturation_threshold`, found once on a grid of ``step`` over [-span, span]
        (ends at the grid's edge are unbounded). Inside the training step a unit is then
        saturated by one or two comparisons of s, not by differentiating f; the result
        differs from the slope rule only where the finite-difference slope cannot tell
        (within ~1e-5 of an interval's end: each end is refined by bisection)."""
        grid = np.arange(-span, span + step / 2, step)
        low = np.abs(self.derivative(grid, alpha)) < self.saturation_threshold(alpha)
        out, i = [], 0
        while i < len(grid):
            if not low[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(grid) and low[j + 1]:
                j += 1
            lo = -math.inf if i == 0 else self._edge(grid[i - 1], grid[i], alpha)
            hi = math.inf if j == len(grid) - 1 else self._edge(grid[j + 1], grid[j], alpha)
            out.append((lo, hi))
            i = j + 1
        return out


ACTIVATIONS: Registry[ActivationSpec] = Registry("activation")


def _ops():
    import keras

    return keras.ops


def _sigmoid_np(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def _erf_np(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _ALWAYS(alpha) -> bool:  # bounded, or |f(s)| <= |s|
    return True


_SPECS = [
    ActivationSpec(
        "tanh", lambda x, a: np.tanh(x), lambda a: lambda x: _ops().tanh(x),
        "tanh(s); f'(0) = 1, symmetric around 0 (Glorot & Bengio 2010).",
        keeps_finite=_ALWAYS,
    ),
    ActivationSpec(
        "sigmoid", lambda x, a: _sigmoid_np(x), lambda a: lambda x: _ops().sigmoid(x),
        "1 / (1 + e^-s); f'(0) = 1/4, mean 1/2: the top layer saturates at 0 (Glorot & Bengio 2010, Fig. 2).",
        keeps_finite=_ALWAYS,
    ),
    ActivationSpec(
        "softsign", lambda x, a: x / (1.0 + np.abs(x)), lambda a: lambda x: _ops().softsign(x),
        "s / (1 + |s|); polynomial tails, saturates more gently than tanh (Glorot & Bengio 2010).",
        keeps_finite=_ALWAYS,
    ),
    ActivationSpec(
        "relu", lambda x, a: np.maximum(x, 0.0), lambda a: lambda x: _ops().relu(x),
        "max(0, s); a unit with s < 0 is dead for that input (no gradient). Pairs with He init.",
        keeps_finite=_ALWAYS,
    ),
    ActivationSpec(
        "leaky_relu", lambda x, a: np.where(x >= 0, x, a * x),
        lambda a: lambda x: _ops().leaky_relu(x, negative_slope=a),
        "s if s >= 0 else alpha s (Maas et al. 2013); alpha defaults to Keras' 0.2.", default_alpha=0.2,
        keeps_finite=lambda a: abs(float(a)) <= 1.0,  # |alpha s| <= |s|
    ),
    ActivationSpec(
        "elu", lambda x, a: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0))),
        lambda a: lambda x: _ops().elu(x, alpha=a),
        "s if s > 0 else alpha (e^s - 1) (Clevert et al. 2015); alpha = 1.", default_alpha=1.0,
        keeps_finite=_ALWAYS,
    ),
    ActivationSpec(
        "selu",
        lambda x, a: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
        lambda a: lambda x: _ops().selu(x),
        "scale * elu(s, alpha) with scale 1.0507, alpha 1.6733 (Klambauer et al. 2017); "
        "self-normalising with lecun_normal.",
    ),
    ActivationSpec(
        "gelu", lambda x, a: 0.5 * x * (1.0 + _erf_np(x / math.sqrt(2.0))),
        lambda a: lambda x: _ops().gelu(x, approximate=False),
        "s Phi(s), the exact (erf) form (Hendrycks & Gimpel 2016).",
    ),
    ActivationSpec(
        "swish", lambda x, a: x * _sigmoid_np(x), lambda a: lambda x: _ops().silu(x),
        "s sigmoid(s), also called SiLU (Ramachandran et al. 2017).",
        keeps_finite=_ALWAYS,
    ),
    ActivationSpec(
        "linear", lambda x, a: x, lambda a: lambda x: x,
        "f(s) = s; never saturates. The regime Glorot & Bengio's variance analysis assumes.",
        keeps_finite=_ALWAYS,
    ),
]
for _spec in _SPECS:
    ACTIVATIONS.add(_spec.name, _spec)


def get(name: str) -> ActivationSpec:
    """The registry entry for ``name``; an unknown name raises an error listing the valid ones."""
    return ACTIVATIONS.get(name)


def names() -> list[str]:
    return ACTIVATIONS.names()


def from_config(cfg: Any) -> tuple[ActivationSpec, Optional[float]]:
    spec = get(cfg.name)
    return spec, getattr(cfg, "alpha", None)
