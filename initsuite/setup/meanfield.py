"""Closed-form predictions to set beside the measurements.

Two theories, both from the variances the initializers *realise*:

**Glorot & Bengio (2010), linear regime** (:func:`glorot_linear`). With s^i = z^i W^i + b^i,
z^{i+1} = f(s^i) and f'(0) = 1, a layer multiplies the forward variance by n_i Var[W^i]
(fan-in) and the back-propagated one by n_{i+1} Var[W^i] (fan-out):

    Var[z^{i+1}]   = Var[x] * prod_{k<=i} fan_in_k  Var[W^k]
    Var[dC/ds^i]   = Var[dC/ds^top] * prod_{k>i} fan_out_k Var[W^k]
    Var[dC/dW^i]   = Var[z^i] Var[dC/ds^i]      (the same in every layer when widths are equal)

**Mean-field signal propagation** (Poole et al. 2016, arXiv 1606.05340; Schoenholz et al. 2017,
arXiv 1611.01232) for any registered activation phi. A layer's pre-activations are Gaussian over
its units, s ~ N(b, q), with

    q^1     = sigma_w^2 * mean(x^2) + sigma_b^2
    q^{l+1} = sigma_w^2 * E_z[phi(b + sqrt(q^l) z)^2] + sigma_b^2             (the q-map)
    chi_1   = sigma_w^2 * E_z[phi'(b + sqrt(q*) z)^2]    at the fixed point q* = qmap(q*)

chi_1 < 1 is the ordered phase (back-propagated gradients shrink by ~chi_1 per layer), > 1 the
chaotic one (they grow), = 1 critical. The correlation depth scale is xi_c = -1/log chi_c, with
chi_c = sigma_w^2 E[phi'(u_1) phi'(u_2)] at the stable correlation fixed point c* (c* = 1 and
chi_c = chi_1 in the ordered phase); networks train when depth <~ 6 xi_c. Critical points: tanh
with sigma_b = 0 at sigma_w^2 = 1, ReLU at sigma_w^2 = 2. Expectations over the standard normal
z use Gauss-Hermite quadrature (:mod:`numpy.polynomial.hermite_e`) where it is exact, and
Gauss-Legendre panels for wide or shifted Gaussians, where it is not (:func:`gaussian_mean`).

sigma_w^2 = fan_in * Var[W] *as realised*: a Keras truncated normal keeps only 0.7737 of its
nominal variance, and the registry's ``variance`` formulas include that (see
:func:`initsuite.analysis.theory.run_sigmas`).

**Constant biases.** The suite's biases are a constant ``init.bias`` (the TF tutorial's 0.1),
not random: sigma_b^2 = 0, and every unit's pre-activation is b + N(0, q). The maps here
integrate phi(b + sqrt(q) z) -- exact for a constant bias -- and ``q`` is the variance of the
pre-activations around b, which is what the probes' ``preactivation var`` measures. With b = 0
this is Poole et al.'s map; a random bias adds sigma_b^2 as usual.

Nothing here imports TensorFlow or Hydra.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from numpy.polynomial import hermite_e, legendre

from initsuite.setup import activations

QUAD_NODES = 64  # Gauss-Hermite nodes (even: none sits on ReLU's kink at 0)
GH_MAX_SD = 1.0  # Gauss-Hermite only for zero-mean Gaussians this narrow (error < 1e-6 there)
PANEL_NODES = 48  # Gauss-Legendre nodes per panel otherwise
PANEL_EDGE = 20.0  # every registered activation bends within |u| < 20; beyond it is smooth
Q_FLOOR = 1e-6  # q below this counts as the q -> 0 limit (the fixed point of tanh at sigma_w^2 <= 1)
Q_CEIL = 1e6  # q above this counts as infinite: the forward signal explodes (e.g. ReLU, sigma_w^2 > 2)
TRAINABLE_DEPTH_FACTOR = 6.0  # Schoenholz et al. 2017: nets train when depth <~ 6 xi_c
CRITICAL_TOL = 0.01  # |chi_1 - 1| below this is "critical": a measured sigma_w^2 has ~0.5 % sampling error

_GH_Z, _GH_W = hermite_e.hermegauss(QUAD_NODES)
_GH_W = _GH_W / math.sqrt(2.0 * math.pi)  # weights of the standard normal measure (they sum to 1)
_GL_X, _GL_W = legendre.leggauss(PANEL_NODES)

ActivationLike = Union[str, activations.ActivationSpec]


def _fns(activation: ActivationLike, alpha: Optional[float]) -> Tuple[Callable, Callable]:
    spec = activations.get(activation) if isinstance(activation, str) else activation
    return (lambda u: spec.numpy(u, alpha)), (lambda u: spec.derivative(u, alpha))


def _panel_rule(mean: np.ndarray, sd: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of N(mean, sd^2) on [mean - 10 sd, mean + 10 sd], cut into Gauss-Legendre
    panels at -20, 0 and 20: kinks at 0 (ReLU, ELU, softsign) fall on a panel edge, and the
    activation's bend is resolved however wide the Gaussian is."""
    lo, hi = mean - 10.0 * sd, mean + 10.0 * sd
    edges = [lo] + [np.clip(e, lo, hi) for e in (-PANEL_EDGE, 0.0, PANEL_EDGE)] + [hi]
    nodes, weights = [], []
    for a, c in zip(edges[:-1], edges[1:]):
        half = (c - a)[..., None] / 2.0
        u = a[..., None] + half * (_GL_X + 1.0)
        dens = np.exp(-0.5 * ((u - mean[..., None]) / sd[..., None]) ** 2) / (sd[..., None] * math.sqrt(2 * math.pi))
        nodes.append(u)
        weights.append(_GL_W * half * dens)
    return np.concatenate(nodes, axis=-1), np.concatenate(weights, axis=-1)


def gaussian_mean(fn: Callable[[np.ndarray], np.ndarray], var, mean=0.0) -> np.ndarray:
    """E[fn(u)] for u ~ N(mean, var), vectorised over (broadcast) var and mean.

    Gauss-Hermite quadrature (numpy.polynomial.hermite_e) for zero-mean Gaussians with
    sd <= GH_MAX_SD, where it is exact to ~1e-7. Its nodes sit ~0.3 sd apart near 0, so for wide
    Gaussians it misses the bend of tanh'(u)^2 altogether (a 100 % error at sd 28, i.e. TF1's
    stddev 1.0 on 1000 units), and a kink off its symmetric nodes (ReLU with a bias) costs a few
    percent: those use :func:`_panel_rule` (error < 1e-5).
    """
    var, mean = np.broadcast_arrays(np.clip(np.asarray(var, dtype=np.float64), 0.0, None),
                                    np.asarray(mean, dtype=np.float64))
    sd = np.sqrt(var)
    out = np.empty(var.shape)
    gh = (sd <= GH_MAX_SD) & ((mean == 0.0) | (sd == 0.0))
    if gh.any():
        u = mean[gh][:, None] + sd[gh][:, None] * _GH_Z
        out[gh] = np.sum(fn(u) * _GH_W, axis=-1)
    if (~gh).any():
        u, w = _panel_rule(mean[~gh], sd[~gh])
        out[~gh] = np.sum(fn(u) * w, axis=-1)
    return out[()] if out.ndim == 0 else out


# --------------------------------------------------------------------------- mean field


def qmap(activation: ActivationLike, sigma_w2, sigma_b2, q, bias=0.0, alpha: Optional[float] = None):
    """One layer of the q-map: sigma_w^2 E_z[phi(b + sqrt(q) z)^2] + sigma_b^2 (vectorised over q)."""
    phi, _ = _fns(activation, alpha)
    return sigma_w2 * gaussian_mean(lambda u: phi(u) ** 2, q, bias) + sigma_b2


def _bisect(f: Callable, lo, hi, iters: int = 80):
    """Root of f in [lo, hi] (f(lo), f(hi) of opposite signs), bisected on a log scale; elementwise
    over arrays of brackets (f vectorised)."""
    flo = f(lo)
    for _ in range(iters):
        mid = np.sqrt(lo * hi)
        fm = f(mid)
        same = (fm > 0) == (flo > 0)
        lo, flo, hi = np.where(same, mid, lo), np.where(same, fm, flo), np.where(same, hi, mid)
    return np.sqrt(lo * hi)


def fixed_point(activation: ActivationLike, sigma_w2, sigma_b2=0.0, bias: float = 0.0,
                alpha: Optional[float] = None, q0: float = 1.0):
    """The fixed point q* = qmap(q*) that iterating the q-map from ``q0`` converges to.

    Returns 0.0 when the signal dies out (tanh with sigma_w^2 <= 1, sigma_b = 0, b = 0), ``inf``
    when it grows without bound (ReLU with sigma_w^2 > 2), and ``q0`` itself when every q is a
    fixed point (ReLU at exactly sigma_w^2 = 2). Found by scanning g(q) = qmap(q) - q on a log
    grid in the direction the map moves from q0, then bisecting the first crossing.
    Vectorised over (broadcast) ``sigma_w2`` and ``sigma_b2``: a float for scalars, else an array.
    """
    sw, sb = np.broadcast_arrays(np.asarray(sigma_w2, dtype=np.float64), np.asarray(sigma_b2, dtype=np.float64))
    shape, sw, sb = sw.shape, sw.reshape(-1, 1), sb.reshape(-1, 1)
    q0 = float(np.clip(q0, Q_FLOOR, Q_CEIL))
    grid = np.union1d(np.geomspace(Q_FLOOR, Q_CEIL, 241), [q0])
    # rows: the (sigma_w2, sigma_b2) points; the q-map's quadrature runs once per grid point for all rows
    g = qmap(activation, sw, sb, grid, bias, alpha) - grid
    g = np.where(np.abs(g) <= 1e-6 * grid, 0.0, g)  # a neutral map (ReLU at 2), up to float noise
    i0 = int(np.searchsorted(grid, q0))
    rows = np.arange(len(g))
    out, lo, hi = np.full(len(g), q0), np.full(len(g), np.nan), np.full(len(g), np.nan)
    # pushed up: the first crossing above q0, else unbounded; pushed down: the first crossing
    # below q0 (grid points i0-1 .. 1), else the signal dies out. `side`: the bracket's other end.
    for pushed, hit, js, side, beyond in ((g[:, i0] > 0, g <= 0, np.arange(i0 + 1, len(grid)), -1, math.inf),
                                          (g[:, i0] < 0, g >= 0, np.arange(i0 - 1, 0, -1), 1, 0.0)):
        j = js[np.argmax(hit[:, js], axis=1)] if len(js) else np.zeros(len(g), int)
        found = hit[:, js].any(axis=1) if len(js) else np.zeros(len(g), bool)
        out[pushed & ~found] = beyond
        on = pushed & found & (g[rows, j] == 0)
        out[on] = grid[j[on]]
        cross = pushed & found & ~on
        lo[cross], hi[cross] = grid[np.minimum(j, j + side)[cross]], grid[np.maximum(j, j + side)[cross]]
    todo = ~np.isnan(lo)
    if todo.any():  # every row's bisection at once
        w, b = sw[todo], sb[todo, 0]
        out[todo] = _bisect(lambda q: qmap(activation, w[:, 0], b, q, bias, alpha) - q, lo[todo], hi[todo])
    return float(out[0]) if not shape else out.reshape(shape)


def chi1(activation: ActivationLike, sigma_w2, sigma_b2=0.0, bias: float = 0.0,
         alpha: Optional[float] = None, q=None):
    """chi_1 = sigma_w^2 E_z[phi'(b + sqrt(q) z)^2] at q (default: the fixed point q*).

    The per-layer factor by which back-propagated gradients' variance grows (> 1) or shrinks (< 1)
    at equal widths. q = 0 or inf are evaluated at Q_FLOOR / Q_CEIL, their limits. Vectorised like
    :func:`fixed_point`: a float for scalars, else an array.
    """
    if q is None:
        q = fixed_point(activation, sigma_w2, sigma_b2, bias, alpha)
    _, dphi = _fns(activation, alpha)
    q = np.clip(np.asarray(q, dtype=np.float64), Q_FLOOR, Q_CEIL)
    out = np.asarray(sigma_w2, dtype=np.float64) * gaussian_mean(lambda u: dphi(u) ** 2, q, bias)
    return float(out) if np.ndim(out) == 0 else out


def _pair_mean(f1: Callable, f2: Callable, q: float, c: float, bias: float) -> float:
    """E[f1(u1) f2(u2)] for u1, u2 ~ b + N(0, q) with correlation c, as nested one-dimensional
    integrals: given u1, u2 ~ N(b + c (u1 - b), q (1 - c^2))."""
    sd = math.sqrt(q)
    if sd <= GH_MAX_SD and bias == 0.0:
        u1, w1 = bias + sd * _GH_Z, _GH_W
    else:
        u1, w1 = _panel_rule(np.array(float(bias)), np.array(sd))
    inner = gaussian_mean(f2, q * max(1.0 - c * c, 0.0), bias + c * (u1 - bias))
    return float(np.sum(w1 * f1(u1) * inner))


def correlation_map(activation: ActivationLike, sigma_w2: float, sigma_b2: float, c: float, q: float,
                    bias: float = 0.0, alpha: Optional[float] = None) -> float:
    """c' = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q*, with u_1, u_2 ~ b + N(0, q*) correlated
    c: how the correlation of two inputs' pre-activations moves by one layer. The denominator is
    computed by the same rule at c = 1, so c = 1 maps exactly onto itself."""
    phi, _ = _fns(activation, alpha)
    q = float(np.clip(q, Q_FLOOR, Q_CEIL))
    c = float(np.clip(c, -1.0, 1.0))
    num = sigma_w2 * _pair_mean(phi, phi, q, c, bias) + sigma_b2
    den = sigma_w2 * _pair_mean(phi, phi, q, 1.0, bias) + sigma_b2
    return num / den


def correlation_fixed_point(activation: ActivationLike, sigma_w2: float, sigma_b2: float, q: float,
                            bias: float = 0.0, alpha: Optional[float] = None) -> float:
    """The stable fixed point c* of the correlation map below 1 (chaotic phase): scan
    h(c) = cmap(c) - c downward from 1 - 1e-3 (where h < 0 when chi_1 > 1) to its first zero and
    bisect. Returns 1.0 when none is found (the ordered phase, or too close to critical to tell)."""
    h = lambda c: correlation_map(activation, sigma_w2, sigma_b2, c, q, bias, alpha) - c
    grid = 1.0 - np.geomspace(1e-3, 2.0, 41)
    prev_c, prev_h = None, None
    for c in grid:
        hc = h(c)
        if abs(hc) < 1e-12:
            return float(c)
        if hc > 0:
            if prev_c is None:
                return 1.0
            lo, hi = c, prev_c  # h(lo) > 0 > h(hi)
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if h(mid) > 0:
                    lo = mid
                else:
                    hi = mid
            return 0.5 * (lo + hi)
        prev_c, prev_h = c, hc
    return -1.0


@dataclass(frozen=True)
class MeanField:
    """Where one (activation, sigma_w^2, sigma_b^2, b) sits: fixed points, slopes, depth scale."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    bias: float
    q_star: float  # fixed point of the q-map (0: the signal dies out, inf: it explodes)
    chi1: float  # gradient growth per layer at q*
    c_star: float  # stable correlation fixed point (1 in the ordered phase)
    chi_c: float  # slope of the correlation map at c*
    xi_c: float  # correlation depth scale 1 / |log chi_c|
    trainable_depth: float  # TRAINABLE_DEPTH_FACTOR * xi_c
    phase: str  # ordered | critical | chaotic

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def mean_field(activation: ActivationLike, sigma_w2: float, sigma_b2: float = 0.0, bias: float = 0.0,
               alpha: Optional[float] = None, q0: float = 1.0) -> MeanField:
    """Fixed point, chi_1, the stable correlation point and the depth scale in one go.

    chi_c: in the ordered phase c* = 1 and chi_c = chi_1. In the chaotic phase c* < 1 is the
    c-map's stable point (:func:`correlation_fixed_point`) and chi_c = sigma_w^2 E[phi'(u_1)
    phi'(u_2)] there. When q* is infinite (unbounded phi, forward signal explodes) chi_c = chi_1:
    the depth scale is then the one over which gradients grow by e.
    """
    name = activation if isinstance(activation, str) else activation.name
    q_star = fixed_point(activation, sigma_w2, sigma_b2, bias, alpha, q0)
    c1 = chi1(activation, sigma_w2, sigma_b2, bias, alpha, q_star)
    phase = "critical" if abs(c1 - 1.0) < CRITICAL_TOL else ("ordered" if c1 < 1.0 else "chaotic")
    c_star, chi_c = 1.0, c1
    if phase == "chaotic" and math.isfinite(q_star):
        c_star = correlation_fixed_point(activation, sigma_w2, sigma_b2, q_star, bias, alpha)
        if c_star < 1.0:
            _, dphi = _fns(activation, alpha)
            chi_c = sigma_w2 * _pair_mean(dphi, dphi, max(q_star, Q_FLOOR), c_star, bias)
    log_chi = abs(math.log(chi_c)) if chi_c > 0 else math.inf
    xi = math.inf if log_chi < 1e-12 else 1.0 / log_chi
    return MeanField(name, float(sigma_w2), float(sigma_b2), float(bias), float(q_star), c1, float(c_star),
                     chi_c, xi, TRAINABLE_DEPTH_FACTOR * xi, phase)


def depth_scale(activation: ActivationLike, sigma_w2: float, sigma_b2: float = 0.0, bias: float = 0.0,
                alpha: Optional[float] = None) -> float:
    """xi_c = 1 / |log chi_c| (Schoenholz et al. 2017); inf at criticality."""
    return mean_field(activation, sigma_w2, sigma_b2, bias, alpha).xi_c


def trainable_depth(activation: ActivationLike, sigma_w2: float, sigma_b2: float = 0.0, bias: float = 0.0,
                    alpha: Optional[float] = None) -> float:
    """About how deep a net at (sigma_w^2, sigma_b^2) still trains: 6 xi_c (Schoenholz et al. 2017)."""
    return mean_field(activation, sigma_w2, sigma_b2, bias, alpha).trainable_depth


def critical_sigma_w2(activation: ActivationLike, sigma_b2: float = 0.0, bias: float = 0.0,
                      alpha: Optional[float] = None, lo: float = 1e-2, hi: float = 1e3) -> float:
    """The sigma_w^2 that puts ``activation`` at chi_1 = 1 (the edge of chaos).

    tanh/softsign at sigma_b = 0: 1 (= 1/phi'(0)^2); ReLU: 2; linear: 1. Found by scanning
    chi_1(sigma_w^2) on a log grid over [lo, hi] and bisecting the first upward crossing of 1;
    raises ValueError when chi_1 never reaches 1 there.
    """
    f = lambda s: chi1(activation, s, sigma_b2, bias, alpha) - 1.0
    grid = np.geomspace(lo, hi, 61)
    values = [f(s) for s in grid]
    for j in range(1, len(grid)):
        if values[j - 1] < 0 <= values[j]:
            return float(_bisect(f, grid[j - 1], grid[j]))
    name = activation if isinstance(activation, str) else activation.name
    raise ValueError(f"no sigma_w^2 in [{lo:g}, {hi:g}] puts {name} at chi_1 = 1 "
                     f"(sigma_b^2 = {sigma_b2:g}, bias = {bias:g})")


def propagate(activation: ActivationLike, sigma_w2: Sequence[float], q0: float, bias: float = 0.0,
              sigma_b2: float = 0.0, alpha: Optional[float] = None,
              back_gain: Optional[Sequence[float]] = None, top_grad: float = 1.0) -> pd.DataFrame:
    """Layer-by-layer mean-field prediction for layers that are each followed by phi.

    ``sigma_w2[l]`` = fan_in_l Var[W^l]; ``q0`` is layer 0's pre-activation variance
    (sigma_w2[0] mean(x^2) + sigma_b^2 from the input, or a measurement). Backward, the variance of
    dC/ds is anchored at the top layer (``top_grad``) and carried down by
    E[dC/ds^l ^2] = E[phi'(s^l)^2] * back_gain[l+1] * E[dC/ds^{l+1} ^2], with
    back_gain[l] = fan_out_l Var[W^l] (= sigma_w2[l] at equal widths, the default).

    Columns: layer_index, sigma_w2, preactivation (q^l), activation (Var[phi(s)]), activation_mean,
    slope2 (E[phi'^2]), chi (per-layer backward factor), backprop_grad.
    """
    sw = np.asarray(sigma_w2, dtype=np.float64)
    n = len(sw)
    bg = sw if back_gain is None else np.asarray(back_gain, dtype=np.float64)
    phi, dphi = _fns(activation, alpha)
    q = np.empty(n)
    q[0] = q0
    for l in range(1, n):
        q[l] = sw[l] * gaussian_mean(lambda u: phi(u) ** 2, q[l - 1], bias) + sigma_b2
    m1 = gaussian_mean(phi, q, bias)
    m2 = gaussian_mean(lambda u: phi(u) ** 2, q, bias)
    slope2 = gaussian_mean(lambda u: dphi(u) ** 2, q, bias)
    chi = np.full(n, np.nan)
    grad = np.empty(n)
    grad[-1] = top_grad
    for l in range(n - 2, -1, -1):
        chi[l] = slope2[l] * bg[l + 1]
        grad[l] = grad[l + 1] * chi[l]
    return pd.DataFrame(dict(layer_index=np.arange(n), sigma_w2=sw, preactivation=q, activation=m2 - m1 ** 2,
                             activation_mean=m1, slope2=slope2, chi=chi, backprop_grad=grad))


# --------------------------------------------------------------------------- Glorot & Bengio


def glorot_linear(fan_ins: Sequence[float], fan_outs: Sequence[float], var_w, var_x: float = 1.0,
                  var_out_grad: float = 1.0) -> pd.DataFrame:
    """Glorot & Bengio's (2010) linear-regime prediction, one row per layer i = 0..L-1.

    ``var_w`` is Var[W^i] (scalar or per layer); ``var_x`` the input variance; ``var_out_grad`` the
    variance of dC/ds at the last layer, which anchors the backward pass.
    Columns: layer_index, fan_in, fan_out, var_w, forward_gain (fan_in Var[W]), backward_gain
    (fan_out Var[W]), input (Var[z^i]), preactivation = activation (Var[s^i] = Var[z^{i+1}] since
    f'(0) = 1), backprop_grad (Var[dC/ds^i]), weight_grad (Var[z^i] Var[dC/ds^i], per example).
    """
    fi = np.asarray(fan_ins, dtype=np.float64)
    fo = np.asarray(fan_outs, dtype=np.float64)
    vw = np.broadcast_to(np.asarray(var_w, dtype=np.float64), fi.shape).copy()
    fwd, bwd = fi * vw, fo * vw
    act = var_x * np.cumprod(fwd)
    inp = np.concatenate([[var_x], act[:-1]])
    # dC/ds^i = W^{i+1} dC/ds^{i+1}: each layer above multiplies by its fan-out gain
    above = np.concatenate([bwd[1:], [1.0]])
    back = var_out_grad * np.cumprod(above[::-1])[::-1]
    return pd.DataFrame(dict(layer_index=np.arange(len(fi)), fan_in=fi, fan_out=fo, var_w=vw, forward_gain=fwd,
                             backward_gain=bwd, input=inp, preactivation=act, activation=act, backprop_grad=back,
                             weight_grad=inp * back))
