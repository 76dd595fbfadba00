"""Theory beside measurement, as figures: ``fig = f(tables)`` with the tables of a sweep
(``runs``, ``layer_stats``, ``metrics``), matplotlib only (no TensorFlow, no Hydra, no pyplot
state: each function returns a fresh :class:`matplotlib.figure.Figure`).

* :func:`variance_by_layer` -- per-layer variance at initialization: measured (markers) vs the
  mean-field prediction (solid) and Glorot & Bengio's linear regime (dotted), every initializer.
* :func:`depth_heatmap` -- final error per initializer x depth, with the predicted trainable
  depth 6 xi_c drawn on each row (:func:`draw_trainable_depth` does this on any such heatmap).
* :func:`phase_diagram` -- the order/chaos plane (sigma_w^2, sigma_b^2) coloured by chi_1, the
  critical line chi_1 = 1, and each initializer of the sweep placed on it.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker as mticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from initsuite.analysis import theory
from initsuite.analysis.plots import LAYER_LABEL, init_colors, series_order, styled
from initsuite.tables import check_seeds_only, with_series

def _empty(message: str) -> Figure:
    fig = Figure(figsize=(6, 2))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


DEPTH_INFINITE = 1e4  # a trainable depth beyond this is shown as "∞" (at the edge of chaos)


def _depth_label(d: float) -> str:
    return "∞" if not math.isfinite(d) or d > DEPTH_INFINITE else f"{d:.0f}"


# --------------------------------------------------------------------------- variance by layer

PANELS = (("preactivation", "pre-activation Var[s]"), ("activation", "activation Var[f(s)]"),
          ("backprop_grad", "back-propagated Var[dC/ds]"))


@styled
def variance_by_layer(tables: Mapping[str, pd.DataFrame], depth: Optional[int] = None,
                      seed: Optional[int] = None, linear: bool = True) -> Figure:
    """Measured (markers) vs predicted (lines) per-layer variance at initialization, one colour
    per initializer, one row per activation, at the sweep's deepest ``depth`` (or the one given)
    and its first seed (or the one given). MLP runs only: a CNN's pooling breaks the map.

    Predictions come from the tables alone (:func:`initsuite.analysis.theory.predict_from_stats`): the
    forward pass starts from the first layer's measured pre-activation, the backward pass from the
    top hidden layer's measured dC/ds, and every layer between is predicted from the realised
    sigma_w^2 = fan_in Var[W]. Solid: mean field. Dotted: Glorot & Bengio's linear regime.
    """
    runs = tables["runs"]
    runs = with_series(runs) if len(runs) else runs.assign(series=None)
    runs = runs[runs.model == "mlp"] if "model" in runs else runs.iloc[0:0]
    ls = tables["layer_stats"]
    if not len(runs) or not len(ls):
        return _empty("no mlp runs with layer statistics to compare with theory")
    depth = int(runs.depth.max()) if depth is None else int(depth)
    runs = runs[runs.depth == depth]
    if seed is not None:
        runs = runs[runs.seed == seed]
    runs = runs.sort_values([c for c in ("seed", "width") if c in runs]).groupby(["activation", "series"],
                                                                                  sort=True).head(1)
    acts = sorted(runs.activation.unique())
    inits = series_order(runs)
    color = init_colors(inits)
    fig = Figure(figsize=(4.2 * len(PANELS), 3.3 * max(len(acts), 1)), layout="constrained")
    axes = fig.subplots(max(len(acts), 1), len(PANELS), squeeze=False)
    by_run = dict(tuple(ls.groupby("run_id")))
    for r_i, act in enumerate(acts):
        for row in runs[runs.activation == act].to_dict("records"):
            stats = by_run.get(row["run_id"])
            if stats is None:
                continue
            try:
                pred = theory.predict_from_stats(stats, row["model"], row["width"], act,
                                                 bias=theory.run_bias(row, stats))
            except ValueError:
                continue
            if not len(pred):
                continue
            x = pred.layer_index.to_numpy() + 1
            for c_i, (tensor, _) in enumerate(PANELS):
                ax = axes[r_i, c_i]
                c = color[row["series"]]
                ax.plot(x, pred[f"measured_{tensor}"], "o", color=c, ms=5, label=row["series"])
                ax.plot(x, pred[tensor], "-", color=c, lw=1.5)
                if linear and f"linear_{tensor}" in pred:
                    ax.plot(x, pred[f"linear_{tensor}"], ":", color=c, lw=1.2)
        for c_i, (tensor, title) in enumerate(PANELS):
            ax = axes[r_i, c_i]
            ax.set_yscale("log")
            ax.set_title(f"{act}: {title}", fontsize=10)
            ax.set_xlabel(LAYER_LABEL)
            ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=color[i], marker="o", ls="-", label=i) for i in inits]
    handles += [Line2D([], [], color="k", marker="o", ls="none", label="measured"),
                Line2D([], [], color="k", ls="-", label="mean field")]
    if linear:
        handles.append(Line2D([], [], color="k", ls=":", label="Glorot & Bengio linear"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle(f"Per-layer variance at initialization, depth {depth}: measured vs predicted", fontsize=11)
    return fig


# --------------------------------------------------------------------------- depth heatmap


def draw_trainable_depth(ax, inits: Sequence[str], depths: Sequence[float], predicted: Mapping[str, float],
                         color: str = "k") -> None:
    """Mark each row's predicted trainable depth 6 xi_c on a heatmap whose rows are ``inits`` (top to
    bottom, imshow order) and whose columns are ``depths`` (left to right): a short vertical bar
    between the columns it falls between, an arrow at the edge when it lies beyond the grid."""
    depths = np.asarray(depths, dtype=float)
    cols = np.arange(len(depths), dtype=float)
    for i, init in enumerate(inits):
        d = predicted.get(init)
        if d is None or (isinstance(d, float) and math.isnan(d)):
            continue
        label = _depth_label(d)
        if d > depths[-1]:
            ax.annotate(f"6ξ={label} →", (cols[-1] + 0.5, i), xytext=(-2, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=7, color=color)
        elif d < depths[0]:
            ax.annotate(f"← 6ξ={label}", (cols[0] - 0.5, i), xytext=(2, 0), textcoords="offset points",
                        ha="left", va="center", fontsize=7, color=color)
        else:
            x = float(np.interp(d, depths, cols))
            ax.plot([x, x], [i - 0.45, i + 0.45], color=color, lw=2.5)
            ax.annotate(f"6ξ={label}", (x, i - 0.45), xytext=(2, -1), textcoords="offset points", ha="left",
                        va="top", fontsize=7, color=color)


@styled
def depth_heatmap(tables: Mapping[str, pd.DataFrame], split: str = "test", metric: str = "error") -> Figure:
    """Final ``split`` ``metric`` (mean over the seeds that did not diverge; "div" where all did) per
    initializer (rows) x depth (columns), one panel per activation (and width if the sweep has
    several), with the mean-field trainable depth 6 xi_c of each initializer drawn on its row (from
    the realised sigma_w^2 of its runs)."""
    runs = tables["runs"]
    by_width = ["width"] if "width" in runs and runs.width.nunique() > 1 else []
    runs = with_series(runs, exclude=by_width)  # the panels separate the widths
    col = f"final_{split}_{metric}"
    if col not in runs:
        m = tables.get("metrics")
        if m is None or not len(m):
            return _empty(f"no {split} {metric} to draw")
        m = m[(m.split == split) & (m.metric == metric)].sort_values("step")
        runs[col] = runs.run_id.map(m.groupby("run_id").value.last())
    keys = ["activation"] + (["width"] if "width" in runs and runs.width.nunique() > 1 else [])
    td = theory.trainable_depths(tables, exclude=by_width)
    panels = list(runs.groupby(keys, sort=True))
    if not panels:
        return _empty("no runs")
    fig = Figure(figsize=(1.0 + 0.9 * runs.depth.nunique() + 2.0, 0.5 + 0.45 * runs.series.nunique() + 1.2)
                 if len(panels) == 1 else (5.5 * len(panels), 1.7 + 0.45 * runs.series.nunique()),
                 layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, g) in zip(axes, panels):
        key = key if isinstance(key, tuple) else (key,)
        ok = g.assign(**{col: g[col].where(g.status != "diverged")}) if "status" in g else g
        check_seeds_only(ok, ["series", "depth"])  # a cell is a mean over seeds only
        grid = ok.pivot_table(index="series", columns="depth", values=col, aggfunc="mean", dropna=False)
        grid = grid.reindex(index=series_order(g), columns=sorted(g.depth.unique()))
        values = grid.to_numpy(dtype=float)
        div = g[g.status == "diverged"] if "status" in g else g.iloc[0:0]
        for init, depth in set(zip(div.series, div.depth)):
            i, j = list(grid.index).index(init), list(grid.columns).index(depth)
            if not np.isfinite(values[i, j]):
                ax.text(j, i, "div", ha="center", va="center", fontsize=7, color="k")
        vmax = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
        ax.grid(False)
        im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", vmin=0, vmax=max(vmax, 1e-9),
                       cmap=matplotlib.colormaps["viridis_r"].with_extremes(bad="0.85"))
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.1f}" if metric == "error" else f"{v:.3g}", ha="center", va="center",
                        fontsize=7, color="w" if im.norm(v) > 0.6 else "k")
        ax.set_xticks(range(grid.shape[1]), [str(int(d)) for d in grid.columns])
        ax.set_yticks(range(grid.shape[0]), list(grid.index))
        ax.set_xlabel("depth (hidden layers)")
        sel = td[td.activation == key[0]]
        if len(keys) > 1 and "width" in sel:
            sel = sel[sel.width == key[1]]
        predicted = dict(zip(sel.series, sel.trainable_depth)) if len(sel) else {}
        draw_trainable_depth(ax, list(grid.index), list(grid.columns), predicted, color="#d62728")
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(keys, key)), fontsize=10)
        fig.colorbar(im, ax=ax, label=f"final {split} {metric}", shrink=0.9)
    fig.suptitle(f"Final {split} {metric} by initializer and depth" + (" (cells in %)" if metric == "error" else "")
                 + "; red: predicted trainable depth 6ξ_c (mean field)", fontsize=10)
    return fig


# --------------------------------------------------------------------------- phase diagram


def _placements(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    mf = theory.run_mean_field(tables)
    if not len(mf):
        return mf
    check_seeds_only(mf.drop(columns="depth", errors="ignore"), ["activation", "series"])
    agg = mf.groupby(["activation", "series"], sort=True).agg(
        init=("init", "first"), sigma_w2=("sigma_w2", "median"), bias=("bias", "median")).reset_index()
    rows = []
    for r in agg.to_dict("records"):
        m = theory.mean_field(r["activation"], r["sigma_w2"], 0.0, r["bias"])
        rows.append({**r, "chi1": m.chi1, "trainable_depth": m.trainable_depth, "phase": m.phase})
    return pd.DataFrame(rows)


@styled
def phase_diagram(tables: Optional[Mapping[str, pd.DataFrame]] = None, activation: Optional[str] = None,
                  points: Optional[pd.DataFrame] = None, resolution: int = 30) -> Figure:
    """The order/chaos phase diagram of each activation: log chi_1 over (sigma_w^2, sigma_b^2) for
    random biases (blue: ordered, gradients vanish; red: chaotic, they explode), the critical line
    chi_1 = 1 in black, and each initializer of the sweep at its realised sigma_w^2 (median over its
    runs). A constant bias b is placed at sigma_b^2 = b^2 (hollow marker); its legend entry gives
    chi_1 computed for the constant bias itself. ``points`` (columns activation, init, sigma_w2,
    bias) replaces the sweep's placements.
    """
    pts = points if points is not None else (_placements(tables) if tables is not None else pd.DataFrame())
    acts = [activation] if activation else (sorted(pts.activation.unique()) if len(pts) else ["tanh"])
    fig = Figure(figsize=(5.6 * len(acts), 4.4), layout="constrained")
    axes = fig.subplots(1, len(acts), squeeze=False)[0]
    for ax, act in zip(axes, acts):
        sel = pts[pts.activation == act] if len(pts) else pts
        crit = _safe_critical(act)
        sw_hi = max(4.0, 2.0 * crit if crit else 4.0, 1.5 * float(sel.sigma_w2.max()) if len(sel) else 0.0)
        sb_hi = max(0.5, 1.5 * float((sel.bias ** 2).max()) if len(sel) else 0.0)
        sw = np.geomspace(0.1, sw_hi, resolution)
        sb = np.linspace(0.0, sb_hi, max(resolution // 2, 6))
        chi = theory.chi1(act, sw[None, :], sb[:, None])  # [sigma_b^2, sigma_w^2], one vectorised pass
        logchi = np.log(np.clip(chi, 1e-6, None))
        lim = max(float(np.nanmax(np.abs(logchi))), 1e-3)
        ax.grid(False)
        mesh = ax.pcolormesh(sw, sb, logchi, cmap="coolwarm", vmin=-lim, vmax=lim, shading="auto")
        ax.contour(sw, sb, chi, levels=[1.0], colors="k", linewidths=1.5)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xlabel("σ_w² = fan_in · Var[W]")
        ax.set_ylabel("σ_b²")
        ax.set_title(f"{act}: order (blue) / chaos (red), black: χ₁ = 1", fontsize=10)
        fig.colorbar(mesh, ax=ax, label="log χ₁")
        key = "series" if "series" in sel else "init"  # given points may name only the init
        colors = init_colors(sel[key]) if len(sel) else {}
        for r in sel.to_dict("records") if len(sel) else []:
            m = theory.mean_field(act, r["sigma_w2"], 0.0, r["bias"])
            hollow = abs(r["bias"]) > 0
            depth = _depth_label(m.trainable_depth)
            ax.plot(r["sigma_w2"], r["bias"] ** 2, "o", ms=8, mec=colors[r[key]] if hollow else "k", mew=1.5,
                    clip_on=False, zorder=5,
                    mfc="none" if hollow else colors[r[key]], color=colors[r[key]],
                    label=f"{r[key]}: σ_w²={r['sigma_w2']:.3g}" + (f", b={r['bias']:.2g}" if hollow else "")
                    + f", χ₁={m.chi1:.3g}, 6ξ={depth}")
        if len(sel):
            ax.legend(fontsize=7, loc="upper left", framealpha=0.85)
        ax.set_xlim(sw[0], sw[-1])
        ax.set_ylim(sb[0], sb[-1])
    return fig


def _safe_critical(act: str) -> Optional[float]:
    try:
        return theory.critical_sigma_w2(act)
    except ValueError:
        return None
