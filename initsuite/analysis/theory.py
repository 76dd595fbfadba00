"""Theory beside a run's measurements: the predictions of :mod:`initsuite.setup.meanfield` (mean-field
signal propagation; Glorot & Bengio's linear regime) for the layers of a run, from its config or
from its tables.

sigma_w^2 = fan_in * Var[W] *as realised*: Var[W] is the registry's shape-aware formula
(:meth:`initsuite.setup.initializers.InitSpec.variance_for_shape`) for each kernel's own shape, so a
Keras truncated normal keeps only 0.7737 of its nominal variance and an orthogonal kernel
(3, 3, 1, 32) has entries of variance 1/32 (:func:`run_sigmas`). Data-driven initializers record
what they did in ``init_info``. Per-run tables carry the constant bias in ``init.bias``.

Nothing here imports TensorFlow or Hydra.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from initsuite.setup import initializers, lsuv  # noqa: F401  (lsuv registers the data-driven initializers)
from initsuite.setup.data import DATASETS
from initsuite.setup.meanfield import (  # noqa: F401  (the mean-field and linear-regime maps, re-exported)
    QUAD_NODES, GH_MAX_SD, PANEL_NODES, PANEL_EDGE, Q_FLOOR, Q_CEIL, TRAINABLE_DEPTH_FACTOR, CRITICAL_TOL,
    ActivationLike, gaussian_mean, qmap, fixed_point, chi1, correlation_map, correlation_fixed_point,
    MeanField, mean_field, depth_scale, trainable_depth, critical_sigma_w2, propagate, glorot_linear)
from initsuite.tables import batch_rows, check_seeds_only, is_config_column, with_series
from initsuite.tables import hidden_layer_names as hidden_layers  # layers with an activation, not the output


# --------------------------------------------------------------------------- runs and tables


class RunSigmas(NamedTuple):
    """A run's realised mean-field parameters, one sigma_w^2 per kernel layer (logits last)."""

    sigma_w2: np.ndarray
    sigma_b2: float  # 0: the suite's biases are constants, not random
    bias: float  # the constant every bias starts at (init.bias); see the module docstring


def _get(d: Any, key: str, default=None):
    if d is None:
        return default
    if isinstance(d, Mapping):
        return d.get(key, default)
    return getattr(d, key, default)


def layer_shapes(config: Mapping, input_shape: Optional[Sequence[int]] = None,
                 num_classes: Optional[int] = None) -> list[Tuple[int, ...]]:
    """The kernel shape of every kernel layer of a built-in mlp or cnn, in order, logits last:
    dense (fan_in, units), conv (3, 3, channels_in, channels_out).

    ``input_shape``/``num_classes`` default to the dataset's (``initsuite.setup.data.DATASETS``; the
    synthetic set's come from the config). Mirrors the builders in ``initsuite.setup.models``.
    """
    ds, model = _get(config, "dataset", {}), _get(config, "model", {})
    spec = DATASETS.get(_get(ds, "name")) if isinstance(DATASETS, Mapping) else None
    if input_shape is None:
        input_shape = _get(ds, "image_shape") if spec is None or spec.image_shape is None else spec.image_shape
    if num_classes is None:
        num_classes = _get(ds, "num_classes") if spec is None or spec.num_classes is None else spec.num_classes
    input_shape = [int(s) for s in input_shape]
    depth, width = int(_get(model, "depth")), int(_get(model, "width"))
    name = _get(model, "name")
    if name == "mlp":
        shapes = [(math.prod(input_shape) if i == 0 else width, width) for i in range(depth)]
        return shapes + [(width if depth else math.prod(input_shape), int(num_classes))]
    if name == "cnn":
        h, w, c = input_shape
        pool_every = max(int(_get(model, "pool_every", 2)), 0)
        size, shapes = min(h, w), []
        for i in range(depth):
            shapes.append((3, 3, c if i == 0 else width, width))
            if pool_every and (i + 1) % pool_every == 0 and size >= 2:
                h, w, size = h // 2, w // 2, size // 2
        flat = h * w * (width if depth else c)
        head = int(_get(model, "head_width", 0) or 0)
        if head > 0:
            shapes.append((flat, head))
            flat = head
        return shapes + [(flat, int(num_classes))]
    raise ValueError(f"layer_shapes knows the built-in mlp and cnn, not model {name!r}: pass the shapes")


def layer_fans(config: Mapping, input_shape: Optional[Sequence[int]] = None,
               num_classes: Optional[int] = None) -> list[Tuple[int, int]]:
    """(fan_in, fan_out) of every kernel layer of a built-in mlp or cnn (:func:`layer_shapes`),
    as Keras counts them (:func:`initsuite.setup.initializers.compute_fans`)."""
    return [tuple(int(f) for f in initializers.compute_fans(s)) for s in layer_shapes(config, input_shape,
                                                                                        num_classes)]


def _critical_for(config: Mapping) -> float:
    init, act = _get(config, "init", {}), _get(config, "activation", {})
    bias = float(_get(init, "bias", 0.0) or 0.0)
    return critical_sigma_w2(_get(act, "name"), 0.0, bias, _get(act, "alpha"))


def run_sigmas(config: Mapping, fans: Optional[Sequence[Tuple[int, int]]] = None,
               init_info: Optional[Mapping] = None, shapes: Optional[Sequence[Sequence[int]]] = None) -> RunSigmas:
    """Realised sigma_w^2 = fan_in Var[W] per kernel layer of a run, from its resolved config.

    Var[W] is the registry's shape-aware formula (``initializers.get(name).variance_for_shape``)
    for each layer's own kernel shape (:func:`layer_shapes`): it includes the truncated normal's
    0.7737 factor, and Keras' orthogonal draws of a (3, 3, 1, 32) conv kernel orthogonalise a 9 x 32
    matrix, entries of variance 1/32 (the fans alone would say 1/288). Initializers that finish
    after the model is built record what they did in status.json's ``init_info``: when given, its
    per-layer ``sigma_w2`` wins (``lsuv`` needs it: its scale depends on the data). ``critical``
    without it is computed from the activation. ``shapes`` default to :func:`layer_shapes`;
    ``fans`` (per-layer (fan_in, fan_out), for models the suite cannot lay out) stand for 2-D kernels.
    """
    init = _get(config, "init", {})
    name = _get(init, "name")
    bias = float(_get(init, "bias", 0.0) or 0.0)
    if shapes is None:
        shapes = [tuple(f) for f in fans] if fans is not None else layer_shapes(config)
    layers = (init_info or {}).get("layers") if init_info else None
    if layers and all("sigma_w2" in r for r in layers):
        return RunSigmas(np.array([float(r["sigma_w2"]) for r in layers]), 0.0, bias)
    spec = initializers.get(name)
    cfg = SimpleNamespace(**{k: _get(init, k) for k in ("name", "stddev", "mean", "minval", "maxval", "value",
                                                          "gain", "bias", "label", "variance_norm")})
    cfg.gain = 1.0 if cfg.gain is None else cfg.gain
    sw = np.array([initializers.compute_fans(s)[0] * spec.variance_for_shape(s, cfg) for s in shapes],
                  dtype=np.float64)
    if name == "critical":  # drawn at sigma_w^2 = gain^2, then rescaled for the activation
        sw = sw * _critical_for(config)
    elif spec.post_build is not None:
        raise ValueError(f"{name}'s sigma_w^2 depends on the data: pass init_info from the run's status.json")
    return RunSigmas(sw, 0.0, bias)


def predict_run(config: Mapping, input_second_moment: float, fans: Optional[Sequence[Tuple[int, int]]] = None,
                top_grad: float = 1.0, init_info: Optional[Mapping] = None) -> pd.DataFrame:
    """Mean-field and linear-regime predictions for every hidden layer of a run at initialization.

    q^0 = sigma_w^2[0] mean(x^2) from the input's second moment (e.g. of the probe batch); the
    backward pass is anchored at the top hidden layer's dC/ds variance ``top_grad``. Columns are
    :func:`propagate`'s plus ``linear_preactivation`` and ``linear_backprop_grad``
    (:func:`glorot_linear` from the same realised variances).
    """
    shapes = layer_shapes(config) if fans is None else [tuple(f) for f in fans]
    fans = [initializers.compute_fans(s) for s in shapes]
    sig = run_sigmas(config, init_info=init_info, shapes=shapes)
    act = _get(config, "activation", {})
    hidden = len(fans) - 1
    fi = np.array([f[0] for f in fans[:hidden]], dtype=np.float64)
    fo = np.array([f[1] for f in fans[:hidden]], dtype=np.float64)
    var_w = sig.sigma_w2[:hidden] / fi
    q0 = sig.sigma_w2[0] * input_second_moment + sig.sigma_b2
    out = propagate(_get(act, "name"), sig.sigma_w2[:hidden], q0, sig.bias, sig.sigma_b2, _get(act, "alpha"),
                    back_gain=fo * var_w, top_grad=top_grad)
    lin = glorot_linear(fi, fo, var_w, input_second_moment, top_grad)
    out["linear_preactivation"] = lin.preactivation.to_numpy()
    out["linear_backprop_grad"] = lin.backprop_grad.to_numpy()
    return out


def hidden_fan_in(model: str, width: int) -> Optional[int]:
    """fan_in of a hidden kernel layer above the first (mlp: width; cnn 3x3 conv: 9 width)."""
    return {"mlp": int(width), "cnn": 9 * int(width)}.get(model)


def _step0(layer_stats: pd.DataFrame) -> pd.DataFrame:
    layer_stats = batch_rows(layer_stats)  # the fixed probe's rows
    step = layer_stats.step.min()
    return layer_stats[layer_stats.step == step]


def _value(stats: pd.DataFrame, layer: str, tensor: str, stat: str) -> float:
    v = stats[(stats.layer == layer) & (stats.tensor == tensor) & (stats.stat == stat)].value
    return float(v.iloc[0]) if len(v) else math.nan


def measured_sigma_w2(layer_stats: pd.DataFrame, model: str, width: int) -> pd.Series:
    """Realised sigma_w^2 = fan_in * Var[W] of the hidden layers above the first, read from a run's
    first measured step (weight var). Reading the weights covers data-driven inits (lsuv, critical)."""
    fan_in = hidden_fan_in(model, width)
    s0 = _step0(layer_stats)
    layers = hidden_layers(s0)
    if model == "cnn":  # the 3x3 convs; a dense head has another fan-in
        layers = [l for l in layers if l.startswith("conv")]
    layers = layers[1:]
    if fan_in is None:
        return pd.Series(dtype=float)
    return pd.Series({l: fan_in * _value(s0, l, "weight", "var") for l in layers}, dtype=float)


def predict_from_stats(layer_stats: pd.DataFrame, model: str, width: int, activation: str,
                       alpha: Optional[float] = None, bias: Optional[float] = None) -> pd.DataFrame:
    """Predictions for one mlp run's hidden layers at its first measured step, from its tables alone.

    The input's statistics are not in the tables, so the forward pass is anchored at the
    measured first-layer pre-activation (variance q^0, mean = the constant bias unless ``bias``
    is given) and the backward pass at the top hidden layer's measured dC/ds variance; every
    layer in between is predicted from the measured Var[W] (sigma_w^2 = fan_in Var[W]).
    Columns: layer, layer_index, the :func:`propagate` columns, ``linear_*`` (Glorot & Bengio) and
    ``measured_preactivation``, ``measured_activation``, ``measured_backprop_grad``.
    """
    if model != "mlp":  # pooling and padding break the layer-to-layer map of a cnn
        raise ValueError(f"no per-layer mean-field overlay for model {model!r} (mlp only)")
    s0 = _step0(layer_stats)
    layers = hidden_layers(s0)
    if not layers:
        return pd.DataFrame()
    fan_in = hidden_fan_in(model, width)
    meas = {t: np.array([_value(s0, l, t, "var") for l in layers])
            for t in ("preactivation", "activation", "backprop_grad")}
    b = _value(s0, layers[0], "preactivation", "mean") if bias is None else float(bias)
    var_w = np.array([_value(s0, l, "weight", "var") for l in layers])
    sw = fan_in * var_w
    sw[0] = np.nan  # layer 0's fan-in is the input's; its output is the anchor
    out = propagate(activation, np.nan_to_num(sw, nan=1.0), meas["preactivation"][0], b, 0.0, alpha,
                    back_gain=fan_in * var_w, top_grad=meas["backprop_grad"][-1])
    out["sigma_w2"] = sw
    lin_q = meas["preactivation"][0] * np.concatenate([[1.0], np.cumprod(sw[1:])])
    lin_g = meas["backprop_grad"][-1] * np.cumprod(np.concatenate([fan_in * var_w[1:], [1.0]])[::-1])[::-1]
    out["linear_preactivation"], out["linear_backprop_grad"] = lin_q, lin_g
    out.insert(0, "layer", layers)
    for t, v in meas.items():
        out[f"measured_{t}"] = v
    return out


def run_bias(row: Mapping, layer_stats: Optional[pd.DataFrame] = None) -> float:
    """A run's constant bias: its ``init.bias`` column (every collected table has one,
    :mod:`initsuite.tables`), else estimated from the first layer's step-0 pre-activation mean
    (b plus noise of order sqrt(q / width); read as 0 within three times that)."""
    v = row.get("init.bias")
    if v is not None and not (isinstance(v, float) and math.isnan(v)):
        return float(v)
    if layer_stats is None or not len(layer_stats):
        return 0.0
    s0 = _step0(layer_stats)
    layers = hidden_layers(s0)
    if not layers:
        return 0.0
    mean = _value(s0, layers[0], "preactivation", "mean")
    var = _value(s0, layers[0], "preactivation", "var")
    width = float(row.get("width") or 1)
    if not math.isfinite(mean) or abs(mean) < 3.0 * math.sqrt(max(var, 0.0) / width):
        return 0.0
    return mean


def run_mean_field(tables: Mapping[str, pd.DataFrame], exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Mean-field numbers per run from the tables: the median realised hidden-layer sigma_w^2
    (measured weights at the first measured step, so data-driven inits count as realised), the
    constant bias (:func:`run_bias`) and the :class:`MeanField` fields. One row per mlp/cnn run
    with its ``run_id``, its config columns and its line label ``series``
    (:func:`initsuite.tables.series`, computed over the whole runs table, less ``exclude``)."""
    runs, ls = tables["runs"], tables["layer_stats"]
    if len(runs):
        runs = with_series(runs, exclude=exclude)
    rows = []
    by_run = dict(tuple(ls.groupby("run_id"))) if len(ls) else {}
    keep = [c for c in runs.columns if is_config_column(c)] + ["series"]
    for r in runs.to_dict("records"):
        stats = by_run.get(r["run_id"])
        if stats is None or r.get("model") not in ("mlp", "cnn") or not len(stats):
            continue
        sw = measured_sigma_w2(stats, r["model"], r["width"]).dropna()
        if not len(sw):
            continue
        mf = mean_field(r["activation"], float(sw.median()), 0.0, run_bias(r, stats))
        rows.append({"run_id": r["run_id"], **{k: r.get(k) for k in keep}, **mf.as_dict()})
    return pd.DataFrame(rows)


def trainable_depths(tables: Mapping[str, pd.DataFrame], exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Per (activation, series, and the ``exclude`` columns, which the series then leaves out): realised sigma_w^2 and bias (medians over the runs: its seeds and
    depths, the trainable depth being a property of the initialization, not of the net's depth) and
    the predicted trainable depth 6 xi_c, for drawing on the initializer x depth heatmaps."""
    mf = run_mean_field(tables, exclude)
    if not len(mf):
        return pd.DataFrame(columns=["activation", "series", "init", "model", "width", "sigma_w2", "bias", "chi1",
                                     "xi_c", "trainable_depth", "phase"])
    keys = ["activation", "series", *[c for c in exclude if c in mf]]
    check_seeds_only(mf.drop(columns="depth", errors="ignore"), keys)
    first = {c: (c, "first") for c in ("init", "model", "width") if c not in keys}
    med = mf.groupby(keys, dropna=False).agg(**first, sigma_w2=("sigma_w2", "median"),
                                             bias=("bias", "median")).reset_index()
    out = []
    for r in med.to_dict("records"):
        m = mean_field(r["activation"], r["sigma_w2"], 0.0, r["bias"])
        out.append({**r, "q_star": m.q_star, "chi1": m.chi1, "xi_c": m.xi_c, "trainable_depth": m.trainable_depth,
                    "phase": m.phase})
    return pd.DataFrame(out)


def trainable_depth_map(tables: Mapping[str, pd.DataFrame]) -> Dict[str, Dict[str, float]]:
    """{activation: {series label: predicted trainable depth}}, the form
    :func:`initsuite.analysis.theory_plots.draw_trainable_depth` takes for one heatmap panel."""
    td = trainable_depths(tables)
    out: Dict[str, Dict[str, float]] = {}
    for r in td.to_dict("records"):
        out.setdefault(r["activation"], {})[r["series"]] = float(r["trainable_depth"])
    return out
