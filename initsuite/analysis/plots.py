"""Figures from a sweep's tables: pandas DataFrames in, matplotlib Figures out.

Plotting reads only the collected parquet tables (``runs``, ``layer_stats``,
``metrics``, ``histograms``; see ``results/README.md``), never TensorFlow or
Hydra, so any sweep can be redrawn later, anywhere pandas and matplotlib run.
Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot
state), so they work under any backend, including a notebook's.

Conventions shared by every figure:

* one colour per line, the same in every figure (:func:`init_colors`); a line is one
  configuration (:func:`initsuite.tables.series`): the initializer as the config names it,
  plus the parameters that vary among its runs, ``truncated_normal (stddev=0.5)``;
* per-layer figures number hidden layers from 1 (next to the input), as
  Glorot & Bengio (2010) do, and colour layers from dark (layer 1) to light;
* several seeds of one configuration are drawn as their mean with a band
  from the lowest to the highest seed, and nothing else is ever averaged
  (:func:`seed_band` raises if a group mixes configurations);
* quantities that span decades (variances, gradient scales) use log axes.

The comparison figures (:func:`comparison_figures`) answer "what does each
initializer do in this sweep"; :mod:`initsuite.analysis.paper` draws the paper's own
figures with the same helpers.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from initsuite import tables as schema
from initsuite.tables import check_seeds_only, with_series
from initsuite.tables import hidden_rows as hidden_layers  # the rows of the hidden layers (not the output)

# -- style -------------------------------------------------------------------------------------

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "pdf.fonttype": 42,  # editable text in the PDF
}

# Fixed colours for every initializer shipped in conf/init/, so a name keeps its colour
# across sweeps; related initializers share a hue family.
INIT_COLORS = {
    "glorot_uniform": "#1f77b4",
    "glorot_normal": "#6baed6",
    "glorot_uniform_sigmoid4": "#17becf",
    "standard": "#d62728",
    "truncated_normal": "#ff7f0e",
    "truncated_normal_tutorial": "#8c564b",
    "truncated_normal_tf1": "#e377c2",
    "he_normal": "#2ca02c",
    "he_uniform": "#98df8a",
    "lecun_normal": "#9467bd",
    "lecun_uniform": "#c5b0d5",
    "orthogonal": "#bcbd22",
    "lsuv": "#393b79",
    "critical": "#9edae5",
    "random_normal": "#7f7f7f",
    "random_uniform": "#c7c7c7",
    "constant": "#637939",
    "zeros": "#000000",
}
_SPARE_COLORS = ["#843c39", "#ad494a", "#d6616b", "#e7969c", "#7b4173", "#a55194", "#ce6dbd", "#de9ed6",
                 "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#5254a3", "#8ca252", "#bd9e39"]
ACTIVATION_STYLES = {"tanh": "-", "softsign": "--", "sigmoid": ":", "relu": "-.", "linear": (0, (1, 1)),
                     "elu": (0, (3, 1, 1, 1)), "selu": (0, (5, 2)), "gelu": (0, (3, 2, 1, 2)),
                     "swish": (0, (1, 2)), "leaky_relu": (0, (4, 1, 1, 1, 1, 1))}
LAYER_CMAP = "viridis"
FORMATS = ("png", "pdf")

# Plain Unicode, not mathtext: parsing "$...$" labels took a tenth of a report's drawing time.
TENSOR_SYMBOLS = {"activation": "z", "preactivation": "s", "backprop_grad": "∂C/∂s", "weight_grad": "∂C/∂W",
                  "weight": "W"}
TENSOR_LABELS = {
    "activation": "activations z",
    "preactivation": "pre-activations s",
    "backprop_grad": "back-propagated gradients ∂C/∂s",
    "weight_grad": "weight gradients ∂C/∂W",
    "weight": "weights W",
    "update_ratio": "update / weight norm",
}
STAT_NAMES = {"var": "Var", "std": "std", "mean": "mean", "p02": "p2", "p50": "median", "p98": "p98"}
STEP_LABEL = "training step (minibatch updates)"
LAYER_LABEL = "hidden layer (1 = next to the input)"


def stat_label(tensor: str, stat: str) -> str:
    """'Var[dC/ds] (back-propagated gradients)' for axis labels."""
    sym = TENSOR_SYMBOLS.get(tensor)
    name = STAT_NAMES.get(stat)
    short = {"backprop_grad": "back-prop. gradients", "weight_grad": "weight gradients"}.get(tensor, tensor + "s")
    if sym and name:
        return f"{name}[{sym}] ({short})"
    return f"{stat} of {tensor}"


def init_color(name: str) -> str:
    """The colour of one initializer: fixed for the shipped names, a stable pick otherwise."""
    if name in INIT_COLORS:
        return INIT_COLORS[name]
    return _SPARE_COLORS[zlib.crc32(str(name).encode()) % len(_SPARE_COLORS)]


def init_colors(names: Iterable[str]) -> Dict[str, str]:
    """Colours for a set of initializers: :data:`INIT_COLORS` where known; unknown names get
    spare colours, distinct within the set (stable, from a hash of the name)."""
    out, used = {}, set()
    names = sorted(set(map(str, names)))
    for n in names:
        if n in INIT_COLORS:
            out[n] = INIT_COLORS[n]
            used.add(out[n])
    spare = [c for c in _SPARE_COLORS if c not in used]
    for n in names:
        if n in out:
            continue
        c = init_color(n)
        if c in used and spare:
            c = next((s for s in spare if s not in used), c)
        out[n] = c
        used.add(c)
    return out


def layer_colors(n: int) -> List[str]:
    """``n`` colours from dark (layer 1, next to the input) to light (top layer)."""
    cmap = matplotlib.colormaps[LAYER_CMAP]
    return [to_hex(cmap(x)) for x in np.linspace(0.0, 0.85, max(n, 1))]


def init_order(names: Iterable[str]) -> List[str]:
    """Initializers in a stable order: the shipped names first, in :data:`INIT_COLORS` order."""
    known = list(INIT_COLORS)
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))


def styled(fn):
    """Draw inside :data:`STYLE` (rc settings apply when artists are created)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(nrows: int, ncols: int, panel: Tuple[float, float] = (3.4, 2.6), sharex=False, sharey=False):
    fig = Figure(figsize=(panel[0] * ncols + 0.6, panel[1] * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    return fig, axes


def save(fig: Figure, out_dir: Path, name: str, formats: Sequence[str] = FORMATS) -> Dict[str, Path]:
    """Write ``<out_dir>/<name>.<fmt>`` for each format (PNG and PDF by default)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with matplotlib.rc_context(STYLE):
        for i, fmt in enumerate(formats):
            path = out_dir / f"{name}.{fmt}"
            fig.savefig(path, format=fmt)
            paths[fmt] = path
            if i == 0 and len(formats) > 1:
                # The layout (in figure fractions, the same at any dpi) is solved; the other formats
                # keep it instead of solving it again: that solve was most of a figure's drawing time.
                fig.set_layout_engine("none")
    return paths


# -- selecting data ------------------------------------------------------------------------------

DATA_SOURCE_LABELS = {"embedded": "embedded 10k sample", "tfds": "full, tfds", "files": "full, files"}


def describe(df: pd.DataFrame) -> str:
    """'fashion_mnist, mlp 5x1000, sgd lr 0.05, batch 10' from a table's config columns."""
    parts = []

    def one(col):
        if col not in df.columns:
            return None
        vals = pd.unique(df[col].dropna())
        if len(vals) == 1:
            return vals[0]
        return "/".join(str(v) for v in sorted(vals, key=str)) if len(vals) else None

    dataset, model, depth, width = one("dataset"), one("model"), one("depth"), one("width")
    if dataset is not None:
        source = one("data_source")
        # A result must never look like full MNIST when it came from the 10k-digit sample.
        parts.append(f"{dataset} [{DATA_SOURCE_LABELS.get(str(source), source)}]"
                     if source is not None and str(source) in DATA_SOURCE_LABELS else str(dataset))
    if model is not None:
        parts.append(f"{model} {depth}x{width}" if depth is not None and width is not None else str(model))
    opt, lr, bs = one("optimizer"), one("lr"), one("batch_size")
    if opt is not None:
        parts.append(f"{opt} lr {lr:g}" if isinstance(lr, (int, float, np.number)) else f"{opt} lr {lr}")
    if bs is not None:
        parts.append(f"batch {bs}")
    return ", ".join(parts)


def select(df: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows where each column equals the value (a list/tuple/set: any of them); None: no filter."""
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        if val is None:
            continue
        if isinstance(val, (list, tuple, set)):
            mask &= df[col].isin(list(val))
        else:
            mask &= df[col] == val
    return df[mask]


def deepest(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of one depth, for per-layer figures that compare nets of one depth: the deepest
    of the depths with the most runs (so one extra run at another depth, like Fig. 2's 4-layer
    sigmoid net beside a 5-layer grid, does not take over)."""
    if "depth" not in df.columns or df.empty:
        return df
    key = "run_id" if "run_id" in df.columns else None
    counts = df.groupby("depth")[key].nunique() if key else df.groupby("depth").size()
    return df[df.depth == counts[counts == counts.max()].index.max()]


def seed_band(df: pd.DataFrame, x: str, keys: Sequence[str], y: str = "value") -> pd.DataFrame:
    """Mean, min and max over seeds (runs) of ``y`` at each ``x``, per group ``keys``; raises
    ``ValueError`` if a group holds different configurations (:func:`initsuite.tables.check_seeds_only`)."""
    check_seeds_only(df, list(keys) + [x])
    g = df.groupby(list(keys) + [x])[y]
    out = g.agg(["mean", "min", "max", "count"]).reset_index()
    return out.sort_values(list(keys) + [x])


def selected_steps(steps: Iterable[int], n: int = 4) -> List[int]:
    """Step 0 and the measured steps nearest to 1/n, 2/n, ... of the last one."""
    steps = np.array(sorted(set(int(s) for s in steps)))
    if len(steps) <= n:
        return steps.tolist()
    last = steps.max()
    want = [0] + [last * k / (n - 1) for k in range(1, n)]
    picked = []
    for w in want:
        s = int(steps[np.argmin(np.abs(steps - w))])
        if s not in picked:
            picked.append(s)
    return picked


def _no_data(ax, msg="no data"):
    # text only: clearing ticks would clear them on every axis this one shares with
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.grid(False)


def series_order(df: pd.DataFrame, column: str = "series") -> List[str]:
    """A table's line labels in a stable order: by initializer (:func:`init_order`), then label."""
    if df.empty or column not in df:
        return []
    pairs = df[[column, "init"]].drop_duplicates() if "init" in df else df[[column]].assign(init="")
    known = init_order(pairs.init.astype(str).unique())
    return sorted(pairs[column].unique(), key=lambda lab: (
        known.index(str(pairs.loc[pairs[column] == lab, "init"].iloc[0])), str(lab)))


def _lines(df: pd.DataFrame) -> Tuple[pd.DataFrame, List[str], Dict[str, str]]:
    """``df`` with its ``series`` column, the labels in order, and their colours."""
    df = with_series(df)
    labels = series_order(df)
    return df, labels, init_colors(labels)


def _legend_inits(fig: Figure, inits: Sequence[str], colors: Dict[str, str], title="init"):
    handles = [Line2D([], [], color=colors[i], lw=2, label=i) for i in inits]
    # below the panels: a long two-line title can never run into it
    fig.legend(handles=handles, title=title, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)


def _legend_layers(fig: Figure, n: int, title="hidden layer", styles: Sequence[Tuple[str, str]] = ()):
    """Layer colours, then one grey entry per ``(label, matplotlib format)`` line style."""
    cols = layer_colors(n)
    handles = [Line2D([], [], color=cols[i], lw=2, label=f"layer {i + 1}") for i in range(n)]
    for label, fmt in styles:
        marker = "o" if "o" in fmt else None
        ls = "-" if "-" in fmt else "none"
        handles.append(Line2D([], [], color="0.4", marker=marker, linestyle=ls, label=label))
    # below the panels: a long two-line title can never run into it
    fig.legend(handles=handles, title=title, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)


def _positive(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return len(v) > 0 and bool(np.all(v > 0))


# -- comparison figures for any sweep ----------------------------------------------------------------

@styled
def layer_profile(layer_stats: pd.DataFrame, tensors: Sequence[str] = ("activation", "backprop_grad"),
                  stat: str = "var", steps: Optional[Sequence[int]] = None, title: Optional[str] = None) -> Figure:
    """``stat`` of each tensor per hidden layer, one line per initializer, one panel per
    activation (columns) and per tensor and step (rows); log scale.

    The paper's point in one picture: under the 'standard' init n Var[W] = 1/3, so
    Var[z] and Var[dC/ds] shrink geometrically away from the input / output, while
    the normalized init keeps n Var[W] ~ 1 and the layers level.
    ``steps`` defaults to [0], the network at initialization (before any update).
    """
    ls, inits, colors = _lines(deepest(hidden_layers(layer_stats)))
    steps = [0] if steps is None else list(steps)
    acts = sorted(ls.activation.unique()) if len(ls) else ["-"]
    rows = [(t, s) for t in tensors for s in steps]
    fig, axes = new_figure(len(rows), len(acts), sharex=True)
    for r, (tensor, step) in enumerate(rows):
        for c, act in enumerate(acts):
            ax = axes[r, c]
            d = select(ls, activation=act, tensor=tensor, stat=stat, step=step)
            if d.empty:
                _no_data(ax)
            else:
                band = seed_band(d.assign(layer_no=d.layer_index + 1), "layer_no", ["series"])
                for init in inits:
                    b = band[band.series == init]
                    if b.empty:
                        continue
                    ax.plot(b.layer_no, b["mean"], "o-", color=colors[init], label=init)
                    if b["count"].max() > 1:
                        ax.fill_between(b.layer_no, b["min"], b["max"], color=colors[init], alpha=0.2, lw=0)
                if _positive(d.value):
                    ax.set_yscale("log")
                ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylabel(stat_label(tensor, stat))
            ax.set_title(f"{act}, step {step}")
            if r == len(rows) - 1:
                ax.set_xlabel(LAYER_LABEL)
    _legend_inits(fig, inits, colors)
    fig.suptitle(title or f"Per-layer {STAT_NAMES.get(stat, stat)} at step {', '.join(map(str, steps))}\n"
                          f"({describe(ls)})")
    return fig


@styled
def variance_over_training(layer_stats: pd.DataFrame, tensor: str = "activation", stat: str = "var",
                           steps: Optional[Sequence[int]] = None, n_steps: int = 4) -> Figure:
    """:func:`layer_profile` of one tensor at selected steps of training (rows): how the
    per-layer picture at initialization evolves once the network learns."""
    ls = deepest(hidden_layers(layer_stats))
    if steps is None:
        steps = selected_steps(ls.step.unique() if len(ls) else [0], n_steps)
    return layer_profile(ls, tensors=[tensor], stat=stat, steps=steps,
                         title=f"Per-layer {STAT_NAMES.get(stat, stat)} of {TENSOR_LABELS.get(tensor, tensor)} "
                               f"during training\n({describe(ls)})")


@styled
def training_curves(metrics: pd.DataFrame, panels: Sequence[Tuple[str, str]] = (("train", "loss"), ("test", "error")),
                    x: str = "step") -> Figure:
    """Loss / error against training steps, one line per initializer (mean over seeds,
    band = lowest to highest seed), one column per activation, one row per (split, metric).
    Errors are drawn in percent."""
    m, inits, colors = _lines(deepest(metrics))
    acts = sorted(m.activation.unique()) if len(m) else ["-"]
    fig, axes = new_figure(len(panels), len(acts), sharex=True)
    for r, (split, metric) in enumerate(panels):
        for c, act in enumerate(acts):
            ax = axes[r, c]
            d = select(m, activation=act, split=split, metric=metric)
            if d.empty:
                _no_data(ax)
            else:
                scale = 100.0 if metric == "error" else 1.0
                band = seed_band(d.assign(value=d.value * scale), x, ["series"])
                for init in inits:
                    b = band[band.series == init]
                    if b.empty:
                        continue
                    ax.plot(b[x], b["mean"], "-", color=colors[init], label=init)
                    if b["count"].max() > 1:
                        ax.fill_between(b[x], b["min"], b["max"], color=colors[init], alpha=0.2, lw=0)
            ax.set_title(f"{act}: {split} {metric}")
            ax.set_ylabel(f"{split} error (%)" if metric == "error" else f"{split} {metric} (cross-entropy, nats)"
                          if metric == "loss" else f"{split} {metric}")
            if r == len(panels) - 1:
                ax.set_xlabel(STEP_LABEL if x == "step" else "epochs")
    _legend_inits(fig, inits, colors)
    seeds = m.seed.nunique() if "seed" in m.columns and len(m) else 1
    fig.suptitle(f"Training curves per initializer\n({describe(m)}; {seeds} seed{'s' if seeds != 1 else ''}"
                 f"{', band = min-max over seeds' if seeds > 1 else ''})")
    return fig


@styled
def outcome_heatmaps(runs: pd.DataFrame) -> Figure:
    """Initializer x depth grids, one column per activation. Top row: final test error
    (%, mean over the seeds that finished); bottom row: fraction of runs that diverged,
    annotated with the median step of their first NaN/Inf."""
    runs, inits, _ = _lines(runs)
    acts = sorted(runs.activation.unique()) if len(runs) else ["-"]
    depths = sorted(runs.depth.unique()) if len(runs) else []
    fig, axes = new_figure(2, len(acts), panel=(0.55 * max(len(depths), 3) + 1.6, 0.32 * max(len(inits), 3) + 1.0))
    err_cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="0.85")
    div_cmap = matplotlib.colormaps["Reds"].with_extremes(bad="0.85")
    for c, act in enumerate(acts):
        d = runs[runs.activation == act]
        err = np.full((len(inits), len(depths)), np.nan)
        frac = np.full_like(err, np.nan)
        notes_err, notes_div = {}, {}
        for i, init in enumerate(inits):
            for j, depth in enumerate(depths):
                cell = d[(d.series == init) & (d.depth == depth)]
                if cell.empty:
                    continue
                check_seeds_only(cell, [])
                diverged = cell.status == "diverged"
                ok = cell[~diverged & cell.final_test_error.notna()]
                if len(ok):
                    err[i, j] = 100 * ok.final_test_error.mean()
                    notes_err[i, j] = f"{err[i, j]:.1f}"
                else:
                    notes_err[i, j] = "div" if diverged.any() else "-"
                frac[i, j] = diverged.mean()
                text = f"{int(diverged.sum())}/{len(cell)}"
                steps = cell.loc[diverged, "first_nonfinite_step"].dropna()
                if len(steps):
                    text += f"\n@{int(np.median(steps))}"
                notes_div[i, j] = text
        for r, (grid, cmap, notes, label, vmax) in enumerate((
                (err, err_cmap, notes_err, "final test error (%)", None),
                (frac, div_cmap, notes_div, "fraction of runs diverged", 1.0))):
            ax = axes[r, c]
            ax.grid(False)
            if vmax is None:  # error: the colour spans the measured range, so close values differ
                lo, hi = (np.nanmin(grid), np.nanmax(grid)) if np.isfinite(grid).any() else (0.0, 1.0)
                lo, hi = (lo - 1, hi + 1) if hi - lo < 1e-9 else (lo, hi)
            else:
                lo, hi = 0.0, vmax
            im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", vmin=lo, vmax=hi)
            for (i, j), text in notes.items():
                # white text on the dark end of either colour map
                dark = np.isfinite(grid[i, j]) and im.norm(grid[i, j]) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            ax.set_xticks(range(len(depths)), [str(d) for d in depths])
            ax.set_yticks(range(len(inits)), inits)
            ax.set_xlabel("depth (hidden layers)")
            ax.set_title(f"{act}: {label}" + ("\n(cell: diverged/runs @ median first NaN step)" if r else ""))
            fig.colorbar(im, ax=ax, label="test error (%)" if r == 0 else "fraction diverged", shrink=0.9)
    fig.suptitle(f"Outcome per initializer and depth\n({describe(runs)})")
    return fig


@styled
def saturation_over_training(layer_stats: pd.DataFrame, stat: str = "saturated_frac") -> Figure:
    """Percentage of saturated units (|f'(s)| below 5 % of the activation's peak slope; for
    ReLU, dead units) per hidden layer during training: rows = activations,
    columns = layers, one line per initializer."""
    ls, inits, colors = _lines(deepest(hidden_layers(layer_stats)))
    d_all = select(ls, tensor="activation", stat=stat)
    acts = sorted(d_all.activation.unique()) if len(d_all) else ["-"]
    n_layers = int(d_all.layer_index.max() + 1) if len(d_all) else 1
    fig, axes = new_figure(len(acts), n_layers, panel=(2.3, 1.9), sharex=True, sharey=True)
    for r, act in enumerate(acts):
        for li in range(n_layers):
            ax = axes[r, li]
            d = select(d_all, activation=act, layer_index=li)
            if d.empty:
                _no_data(ax)
            else:
                band = seed_band(d.assign(value=100 * d.value), "step", ["series"])
                for init in inits:
                    b = band[band.series == init]
                    if len(b):
                        ax.plot(b.step, b["mean"], "-", color=colors[init], label=init)
                        if b["count"].max() > 1:
                            ax.fill_between(b.step, b["min"], b["max"], color=colors[init], alpha=0.2, lw=0)
            ax.set_title(f"{act}, layer {li + 1}")
            if li == 0:
                ax.set_ylabel("saturated units (%)")
            if r == len(acts) - 1:
                ax.set_xlabel("training step")
    top = 100 * d_all.value.max() if len(d_all) else 1.0
    axes[0, 0].set_ylim(0, min(100.0, max(1.0, 1.1 * top)))  # small fractions stay visible
    _legend_inits(fig, inits, colors)
    fig.suptitle("Saturated or dead units per layer during training: slope |f'(s)| < 5% of its peak\n"
                 f"({describe(ls)})")
    return fig


@styled
def train_batch_std(layer_stats: pd.DataFrame, tensors: Sequence[str] = ("activation", "backprop_grad"),
                    stat: str = "std") -> Figure:
    """Per-layer std of activations and dC/ds over training from the training-batch series
    (``batch = train``, every ``probes.train_every`` steps; Glorot & Bengio's Figs. 3-4 and
    9-10 at the resolution of the training steps): rows = series (initializer and whatever
    else varies), columns = tensor x activation, one colour per hidden layer, mean over seeds."""
    ls = deepest(hidden_layers(layer_stats, batch=schema.TRAIN))
    ls, inits, _ = _lines(ls)
    d_all = ls[ls.tensor.isin(list(tensors)) & (ls.stat == stat)] if len(ls) else ls
    # A row whose tensor held NaN/Inf describes only its finite entries (a diverging layer's last
    # finite values, often all 0): not a point of the curve. Its step is marked instead.
    keys = ["run_id", "step", "layer_index", "tensor"]
    bad = ls[ls.tensor.isin(list(tensors)) & (ls.stat == "nonfinite_count") & (ls.value > 0)] if len(ls) else ls
    if len(bad) and len(d_all):
        hit = d_all[keys].merge(bad[keys].drop_duplicates(), on=keys, how="left", indicator=True)["_merge"]
        d_all = d_all[(hit == "left_only").to_numpy()]
    acts = sorted(d_all.activation.unique()) if len(d_all) and "activation" in d_all else ["-"]
    cols = [(t, a) for t in tensors for a in acts]
    rows = inits or ["-"]
    fig, axes = new_figure(len(rows), len(cols), panel=(3.2, 2.2), sharex=True)
    n_layers = int(d_all.layer_index.nunique()) if len(d_all) else 1
    colors = layer_colors(n_layers)
    for r, init in enumerate(rows):
        for c, (tensor, act) in enumerate(cols):
            ax = axes[r, c]
            d = select(d_all, series=init, tensor=tensor, activation=act) if len(d_all) else d_all
            if d.empty:
                _no_data(ax)
            else:
                check_seeds_only(d, ["series"])
                for k, li in enumerate(sorted(d.layer_index.unique())):
                    s = d[d.layer_index == li].groupby("step").value.mean()
                    # a run that diverged at once has a point or two: drawn as markers, not lost
                    ax.plot(s.index, s.values, "-", color=colors[min(k, n_layers - 1)], lw=1.0,
                            marker="o" if len(s) < 3 else None, ms=3)
                if _positive(d.value):
                    ax.set_yscale("log")
            nan_at = select(bad, series=init, tensor=tensor, activation=act) if len(bad) else bad
            if len(nan_at):
                first = int(nan_at.step.min())
                runs = nan_at.run_id.nunique()
                of = select(ls, series=init, tensor=tensor, activation=act).run_id.nunique()
                ax.axvline(first, color="tab:red", ls=":", lw=1.0)
                ax.text(0.98, 0.95, f"non-finite from step {first}\n({runs}/{of} runs)", transform=ax.transAxes,
                        ha="right", va="top", fontsize=7, color="tab:red")
            ax.set_title(f"{init}\n{act}: {TENSOR_LABELS.get(tensor, tensor)}", fontsize=8)
            if c == 0:
                ax.set_ylabel(STAT_NAMES.get(stat, stat))
            if r == len(rows) - 1:
                ax.set_xlabel(STEP_LABEL)
    _legend_layers(fig, n_layers)
    fig.suptitle(f"Per-layer {STAT_NAMES.get(stat, stat)} on the training batch, every recorded step\n"
                 f"({describe(ls)})")
    return fig


# -- per-layer figures of one configuration (the paper's style) ---------------------------------------

@styled
def layer_traces(layer_stats: pd.DataFrame, panels: Sequence[Tuple[str, dict]], tensor: str = "activation",
                 lines: Sequence[Tuple[str, str]] = (("std", "-o"),), bars: Optional[Tuple[str, str]] = None,
                 log: bool = False, ylabel: Optional[str] = None, title: str = "") -> Figure:
    """One panel per ``(panel title, selection)``; in each, one colour per hidden layer and one
    line per ``(stat, style)`` against training steps; ``bars=(center, half_width)`` draws
    ``center ± half_width`` as vertical bars (the paper's Fig. 2: mean ± std)."""
    ls = hidden_layers(layer_stats)
    fig, axes = new_figure(len(panels), 1, panel=(6.0, 2.6), sharex=True)
    n_layers = 1
    for r, (ptitle, where) in enumerate(panels):
        ax = axes[r, 0]
        d = select(ls, tensor=tensor, **where)
        if d.empty:
            _no_data(ax, "no run in this sweep")
            ax.set_title(ptitle)
            continue
        d = deepest(d)
        check_seeds_only(d, [])  # each line is a mean over seeds only
        layers = sorted(d.layer_index.unique())
        n_layers = max(n_layers, len(layers))
        cols = layer_colors(len(layers))
        for k, li in enumerate(layers):
            dl = d[d.layer_index == li]
            if bars is not None:
                center = dl[dl.stat == bars[0]].groupby("step").value.mean()
                half = dl[dl.stat == bars[1]].groupby("step").value.mean().reindex(center.index)
                ax.errorbar(center.index, center.values, yerr=half.values, color=cols[k], marker="o",
                            capsize=2, lw=1.2, elinewidth=0.8)
            for stat, style in lines:
                s = dl[dl.stat == stat].groupby("step").value.mean()
                ax.plot(s.index, s.values, style, color=cols[k])
        if log and _positive(d[d.stat.isin([s for s, _ in lines])].value):
            ax.set_yscale("log")
        ax.set_title(ptitle)
        ax.set_ylabel(ylabel or tensor)
    axes[-1, 0].set_xlabel(STEP_LABEL)
    styles = [(STAT_NAMES.get(st, st), fmt) for st, fmt in lines] if len(lines) > 1 else []
    if bars is not None:
        styles.append((f"{STAT_NAMES.get(bars[0], bars[0])} ± {STAT_NAMES.get(bars[1], bars[1])}", "-o"))
    _legend_layers(fig, n_layers, styles=styles)
    fig.suptitle(title)
    return fig


def _central_range(h: pd.DataFrame, tail: float = 0.001) -> Tuple[float, float]:
    """[lowest, highest] over the histograms in ``h`` of the bins holding their central 1 - 2 tail."""
    los, his = [], []
    for _, g in h.groupby(["run_id", "step", "layer"]):
        g = g.sort_values("bin")
        cum = g.fraction.fillna(0).cumsum().to_numpy()
        if not len(cum) or cum[-1] <= 0:
            continue
        los.append(g.left.to_numpy()[np.searchsorted(cum, tail)])
        his.append(g.right.to_numpy()[min(np.searchsorted(cum, 1 - tail), len(cum) - 1)])
    if not los:
        return float(h.left.min()), float(h.right.max())
    return float(min(los)), float(max(his))


def normalized_histograms(histograms: pd.DataFrame) -> pd.DataFrame:
    """Histogram rows with ``center`` and ``fraction`` = count / (layer's total count):
    the paper's normalized histograms, comparable between layers and runs."""
    h = histograms.copy()
    h["center"] = (h.left + h.right) / 2
    total = h.groupby(["run_id", "step", "layer", "tensor"])["count"].transform("sum")
    h["fraction"] = h["count"] / total.replace(0, np.nan)
    return h


@styled
def layer_histograms(histograms: pd.DataFrame, panels: Sequence[Tuple[str, dict]], tensor: str,
                     step: Optional[int] = 0, title: str = "", xlabel: Optional[str] = None,
                     logy: bool = False, sharex: bool = True) -> Figure:
    """Normalized histograms of ``tensor``, one curve per hidden layer, one panel per
    ``(panel title, selection)`` at ``step`` (None: the last histogram step of each run).
    Each panel's x range covers the central 99.8 % of its layers' values; ``sharex`` gives
    the panels one common range (compare magnitudes) instead of one each (compare shapes)."""
    h = normalized_histograms(histograms[histograms.tensor == tensor])
    # the hidden layers (the paper draws those): the ones with an activation histogram
    hid = histograms.loc[histograms.tensor == "activation", ["run_id", "layer"]].drop_duplicates()
    if len(hid):
        h = h.merge(hid, on=["run_id", "layer"])
    fig, axes = new_figure(len(panels), 1, panel=(6.0, 2.4), sharex=sharex)
    n_layers, lims = 1, []
    for r, (ptitle, where) in enumerate(panels):
        ax = axes[r, 0]
        d = deepest(select(h, **where))
        if step is None and len(d):
            d = d[d.step == d.groupby("run_id").step.transform("max")]
        elif len(d):
            d = d[d.step == step]
        if d.empty:
            _no_data(ax, "no histogram in this sweep")
            ax.set_title(ptitle)
            continue
        check_seeds_only(d, [])  # each curve is a mean over seeds only
        layers = sorted(d.layer_index.unique())
        n_layers = max(n_layers, len(layers))
        cols = layer_colors(len(layers))
        for k, li in enumerate(layers):
            dl = d[d.layer_index == li].groupby("center").fraction.mean()
            ax.plot(dl.index, dl.values, "-", color=cols[k], lw=1.2)
        # the stored bins span every layer's values (the classifier's too, and outliers clipped into
        # the edge bins): zoom to the central 99.8 % of each layer
        lo, hi = _central_range(d)
        lims.append((lo, hi))
        if not sharex:
            ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
        if logy:
            ax.set_yscale("log")
        ax.set_title(ptitle + (f" (step {int(d.step.max())})" if step is None else ""))
        ax.set_ylabel("fraction of values per bin")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    if lims and sharex:
        lo, hi = min(a for a, _ in lims), max(b for _, b in lims)
        pad = 0.03 * (hi - lo)
        axes[-1, 0].set_xlim(lo - pad, hi + pad)
    axes[-1, 0].set_xlabel(xlabel or f"value of {TENSOR_LABELS.get(tensor, tensor)}")
    _legend_layers(fig, n_layers)
    fig.suptitle(title)
    return fig


# -- everything for one sweep ----------------------------------------------------------------------

@dataclass
class FigureFile:
    """A written figure: its file stem, title, one-line caption and the files (png, pdf)."""

    name: str
    title: str
    caption: str
    paths: Dict[str, Path] = field(default_factory=dict)
    group: str = "comparison"


def slices(runs: pd.DataFrame) -> List[Tuple[str, dict]]:
    """One ``(suffix, selection)`` per combination of the facet columns that vary in the sweep
    (:func:`initsuite.tables.facet_columns`: dataset, model, width, optimizer, lr, batch size,
    epochs); ``("", {})`` if none vary. Every other varying key is a line of its own."""
    cols = schema.facet_columns(runs)
    if not cols:
        return [("", {})]
    out = []
    for values, _ in runs.groupby(cols, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        where = dict(zip(cols, values))
        out.append(("__" + "_".join(f"{k}-{v}" for k, v in where.items()), where))
    return out


def comparison_figures(tables: Dict[str, pd.DataFrame], out_dir: Path,
                       formats: Sequence[str] = FORMATS) -> List[FigureFile]:
    """Draw and save the comparison figures of a sweep (one set per slice):

    * ``variance_at_init``: Var of activations and dC/ds per layer at step 0;
    * ``variance_activation_training`` / ``variance_backprop_grad_training``: the same at selected steps;
    * ``training_curves``: train loss and test error per initializer, seed bands;
    * ``outcome_heatmaps``: final test error and divergence over initializer x depth;
    * ``saturation``: saturated / dead units per layer during training;
    * ``train_batch_std``: per-layer std of activations and dC/ds at every recorded training step.
    """
    runs, ls, met = tables["runs"], tables["layer_stats"], tables["metrics"]
    written: List[FigureFile] = []
    for suffix, where in slices(runs):
        tag = "".join(f", {k} {v}" for k, v in where.items())
        ls_s, met_s, runs_s = select(ls, **where), select(met, **where), select(runs, **where)
        specs = []
        if len(ls_s):
            specs += [
                ("variance_at_init", "Per-layer variance at initialization" + tag,
                 "Variance of activations and back-propagated gradients per hidden layer before any update, "
                 "one line per initializer, one column per activation (log scale).",
                 lambda: layer_profile(ls_s)),
                ("variance_activation_training", "Per-layer activation variance during training" + tag,
                 "The same for activations at selected training steps (rows).",
                 lambda: variance_over_training(ls_s, "activation")),
                ("variance_backprop_grad_training", "Per-layer gradient variance during training" + tag,
                 "The same for back-propagated gradients dC/ds at selected training steps (rows).",
                 lambda: variance_over_training(ls_s, "backprop_grad")),
            ]
            if len(hidden_layers(ls_s, batch=schema.TRAIN)):
                specs.append(("train_batch_std", "Per-layer std on the training batch" + tag,
                              "Std of activations and back-propagated gradients dC/ds per hidden layer at every "
                              "recorded training step (the training-batch series, batch = train), one row per "
                              "initializer (log scale).",
                              lambda: train_batch_std(ls_s)))
            if (ls_s.stat == "saturated_frac").any():
                specs.append(("saturation", "Saturated / dead units during training" + tag,
                              "Percentage of units whose slope |f'(s)| is below 5% of the activation's peak "
                              "(dead units for ReLU), per hidden layer.",
                              lambda: saturation_over_training(ls_s)))
        if len(met_s):
            specs.append(("training_curves", "Training curves" + tag,
                          "Training loss and test error per initializer (mean over seeds; band = min to max).",
                          lambda: training_curves(met_s)))
        if len(runs_s):
            specs.append(("outcome_heatmaps", "Outcome over initializer x depth" + tag,
                          "Final test error (top) and fraction of diverged runs with the median step of their "
                          "first NaN/Inf (bottom), per initializer and depth.",
                          lambda: outcome_heatmaps(runs_s)))
        for name, title, caption, draw in specs:
            fig = draw()
            written.append(FigureFile(name + suffix, title, caption, save(fig, out_dir, name + suffix, formats)))
    return written
