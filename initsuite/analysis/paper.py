"""The Glorot & Bengio (2010) reproduction: the paper's Table 1, its figures, and checks of
its claims, all from a ``glorot2010`` sweep's tables.

X. Glorot and Y. Bengio, *Understanding the difficulty of training deep feedforward
neural networks*, AISTATS 2010, PMLR 9:249-256,
https://proceedings.mlr.press/v9/glorot10a/glorot10a.pdf

Their setup: fully connected nets of 5 hidden layers x 1000 units, softmax output,
plain SGD with minibatch 10, sigmoid / tanh / softsign x/(1+|x|), and two inits:

* 'standard' (their eq. 1): W ~ U[-1/sqrt(n), 1/sqrt(n)], n = fan-in, so n Var[W] = 1/3;
* 'normalized' (eq. 16, here ``glorot_uniform``): W ~ U[-sqrt(6/(n_in+n_out)), +...],
  Var[W] = 2/(n_in+n_out), the compromise between keeping Var[z] (forward,
  n_in Var[W] = 1) and Var[dC/ds] (backward, n_out Var[W] = 1) constant.

The suite adds Keras' ``truncated_normal`` (stddev 0.05) for the question that started
it: what did TensorFlow's default cost? Like :mod:`initsuite.analysis.plots`, this module
reads tables only (no TensorFlow, no Hydra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from initsuite.analysis import plots
from initsuite.analysis.plots import FigureFile
from initsuite.atomic import atomic_write_text
from initsuite.tables import check_seeds_only, with_series

EXPERIMENT = "glorot2010"
CITATION = ("Glorot & Bengio (2010), Understanding the difficulty of training deep feedforward neural networks, "
            "AISTATS, Table 1")

# Table 1 of the paper: test error (%) of 5-hidden-layer nets; "N" = normalized init.
TABLE1 = pd.DataFrame(
    [
        ("Softsign", 16.27, 1.64, 55.78, 69.14),
        ("Softsign N", 16.06, 1.72, 53.8, 68.13),
        ("Tanh", 27.15, 1.76, 55.9, 70.58),
        ("Tanh N", 15.60, 1.64, 52.92, 68.57),
        ("Sigmoid", 82.61, 2.21, 57.28, 70.66),
    ],
    columns=["type", "Shapeset", "MNIST", "CIFAR-10", "Small-ImageNet"],
)
PAPER_DATASETS = ["Shapeset", "MNIST", "CIFAR-10", "Small-ImageNet"]
# Our dataset name -> the paper's column it reproduces.
DATASET_COLUMN = {"shapeset": "Shapeset", "mnist": "MNIST", "cifar10": "CIFAR-10"}
ACTIVATION_TYPE = {"softsign": "Softsign", "tanh": "Tanh", "sigmoid": "Sigmoid"}
INIT_SUFFIX = {"standard": "", "glorot_uniform": " N"}  # the paper's two inits
STANDARD, NORMALIZED = "standard", "glorot_uniform"

# make paper PAPER_SCALE=<scale>: overrides on top of conf/experiment/glorot2010.yaml. Each scale has its own
# experiment name (the preset's experiment is glorot2010${extra.scale}), hence its own sweep folder
# (results/sweeps/glorot2010_<scale>/), so scales never mix.
_LOG_STEPS = [10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000, 300000, 1000000, 3000000]
SCALES: Dict[str, List[str]] = {
    # the preset as it is: 600 updates of minibatch 10 per run, 2 rates x 3 seeds per pair (see its header)
    "default": [],
    # 100 epochs of minibatch 10 (500k updates on MNIST), every evaluation on 10000 examples: a GPU
    "full": ["extra.scale=_full", "train.max_steps=500000", "train.epochs=100", "train.eval_every=50000",
             f"train.eval_steps=[{','.join(str(s) for s in _LOG_STEPS[:10])}]", "train.eval_examples=10000",
             "probes.every=25000", "dataset.n_train=50000", "dataset.n_valid=10000", "dataset.n_test=10000"],
    # the paper's schedule (its learning rates were chosen "after 5M updates"): up to 5M updates of
    # minibatch 10, 4 rates, truncated_normal too; test error taken at the lowest validation error (the
    # paper's early stopping, without stopping the run); a GPU, hours per run
    "long": ["extra.scale=_long", "train.max_steps=5000000", "train.epochs=1000", "train.eval_every=250000",
             f"train.eval_steps=[{','.join(str(s) for s in _LOG_STEPS)}]", "train.eval_examples=10000",
             "probes.every=250000", "dataset.n_train=50000", "dataset.n_valid=10000", "dataset.n_test=10000",
             "optimizer.lr=0.003,0.01,0.03,0.1", "init=standard,glorot_uniform,truncated_normal"],
    # seconds, for tests: tiny nets, both rates, 2 seeds (enough for Welch's t), Shapeset only
    "tiny": ["extra.scale=_tiny", "dataset=shapeset", "dataset.n_train=200", "dataset.n_valid=90",
             "dataset.n_test=90", "model.width=16", "model.depth=3", "train.max_steps=20",
             "train.eval_steps=[3,10]", "train.eval_examples=90", "probes.every=5", "probes.batch_size=64",
             "probes.hist_bins=20", "seed=0,1"],
}
# The extra run of Fig. 2: the paper shows a 4-layer sigmoid net, which escapes saturation (5 layers never do).
FIG2_RUN = ["activation=sigmoid", "init=standard", "model.depth=4", "seed=0"]


def scale_overrides(scale: Optional[str]) -> List[str]:
    """The overrides of ``PAPER_SCALE`` (empty/None = default); unknown names list the valid ones."""
    scale = scale or "default"
    if scale not in SCALES:
        raise ValueError(f"unknown PAPER_SCALE {scale!r}; valid: {', '.join(SCALES)}")
    return list(SCALES[scale])


def is_paper_sweep(runs: pd.DataFrame) -> bool:
    """A sweep of the ``glorot2010`` preset (any scale)."""
    return len(runs) > 0 and runs.experiment.astype(str).str.startswith(EXPERIMENT).any()


def scale_name(runs: pd.DataFrame) -> str:
    exps = sorted(set(runs.experiment.astype(str)))
    for e in exps:
        if e.startswith(EXPERIMENT + "_"):
            return e[len(EXPERIMENT) + 1:]
    return "default"


def row_type(activation: str, init: str) -> str:
    """The paper's row name ('Tanh N'), or '<Activation> (<init>)' for inits the paper lacks."""
    a = ACTIVATION_TYPE.get(activation, activation)
    return a + INIT_SUFFIX[init] if init in INIT_SUFFIX else f"{a} ({init})"


# -- Table 1 -----------------------------------------------------------------------------------

def selected_test_error(runs: pd.DataFrame, metrics: Optional[pd.DataFrame] = None) -> pd.Series:
    """Test error of each run at its evaluation with the lowest validation error (the paper selects
    on validation error), by run_id; the final test error where a run has no validation curve.
    Diverged runs get NaN."""
    out = runs.set_index("run_id").final_test_error.astype(float)
    if metrics is not None and len(metrics):
        m = metrics[(metrics.metric == "error") & metrics.split.isin(["valid", "test"])]
        wide = m.pivot_table(index=["run_id", "step"], columns="split", values="value").reset_index()
        if {"valid", "test"} <= set(wide.columns):
            wide = wide.dropna(subset=["valid", "test"])
            best = wide.loc[wide.groupby("run_id").valid.idxmin()].set_index("run_id").test
            out.update(best[best.index.isin(out.index)])
    diverged = runs.set_index("run_id").status == "diverged"
    out[diverged] = np.nan
    return out


ALPHA = 0.005  # the paper's significance level in Table 1


def entry_errors(runs: pd.DataFrame, metrics: Optional[pd.DataFrame] = None) -> Dict[tuple, np.ndarray]:
    """Test error (%) of each finished seed, per (activation, init, dataset), each run at its
    lowest validation error (:func:`selected_test_error`)."""
    if not len(runs):
        return {}
    sel = selected_test_error(runs, metrics)
    out = {}
    for key, g in runs.groupby(["activation", "init", "dataset"]):
        ok = g[(g.status == "done") & g.final_test_error.notna()]
        out[key] = 100 * sel.reindex(ok.run_id).dropna().to_numpy()
    return out


def table1(runs: pd.DataFrame, metrics: Optional[pd.DataFrame] = None, alpha: float = ALPHA) -> pd.DataFrame:
    """Our test error beside the paper's, one row per (row type, dataset).

    Columns: type, activation, init, depth, dataset, runs, diverged, seeds (finished runs),
    picked (the tuned axis values of these runs, e.g. ``lr=0.05``, blank when nothing was
    tuned: :mod:`initsuite.analysis.selection`), test_error_pct (mean over the finished seeds, each at its
    evaluation with the lowest validation error: :func:`selected_test_error`), test_error_sd,
    final_test_error_pct (at the last step), best (the lowest mean of its dataset), p_vs_best
    (two-sided Welch's t over seeds against the best row of the dataset: :func:`initsuite.analysis.stats.welch`;
    blank with fewer than 2 seeds on a side), significantly_worse (p_vs_best < ``alpha``, the
    paper's 0.005), then the paper's four columns (Shapeset, MNIST, CIFAR-10, Small-ImageNet;
    blank where the paper has no such row) and ``paper_same_dataset``: the paper's number for our
    dataset, blank otherwise. The paper's five rows are always present, measured or not. Only the
    nets of the grid's depth (5 layers in the preset; :func:`initsuite.analysis.plots.deepest`) are compared.
    """
    from initsuite.analysis.selection import PICKED
    from initsuite.analysis.stats import welch

    r = plots.deepest(runs[runs.activation.isin(ACTIVATION_TYPE)]) if len(runs) else runs
    sel = selected_test_error(r, metrics) if len(r) else pd.Series(dtype=float)
    r = with_series(r, exclude=["dataset"]) if len(r) else r.assign(series=None)  # only seeds averaged
    check_seeds_only(r, ["activation", "series", "dataset"])
    picked_cols = [c for c in r.columns if c.startswith(PICKED)]
    rows, errors = [], []
    for (act, label, dataset), g in r.groupby(["activation", "series", "dataset"]) if len(r) else []:
        ok = g[(g.status == "done") & g.final_test_error.notna()]
        e = sel.reindex(ok.run_id).dropna()
        init = g.init.iloc[0]
        picked = ", ".join(f"{c[len(PICKED):]}=" + "/".join(f"{v:g}" if isinstance(v, (int, float, np.number))
                                                             else str(v) for v in sorted(g[c].dropna().unique()))
                           for c in picked_cols)
        rows.append(dict(type=row_type(act, init if label == init else label), activation=act, init=init,
                         depth=int(g.depth.iloc[0]),
                         dataset=dataset, runs=len(g), diverged=int((g.status == "diverged").sum()), seeds=len(e),
                         picked=picked, test_error_pct=100 * e.mean() if len(e) else np.nan,
                         test_error_sd=100 * e.std() if len(e) > 1 else np.nan,
                         final_test_error_pct=100 * ok.final_test_error.mean() if len(ok) else np.nan))
        errors.append(100 * e.to_numpy())
    cols = ["type", "activation", "init", "depth", "dataset", "runs", "diverged", "seeds", "picked",
            "test_error_pct", "test_error_sd", "final_test_error_pct", "best", "p_vs_best", "significantly_worse"]
    ours = pd.DataFrame(rows, columns=cols)
    ours[["best", "significantly_worse"]] = ours[["best", "significantly_worse"]].astype(object)
    ours["p_vs_best"] = ours["p_vs_best"].astype(float)
    for d in ours.dataset.unique():  # significance per dataset column, against its best row
        idx = ours.index[(ours.dataset == d) & ours.test_error_pct.notna()]
        if not len(idx):
            continue
        low = ours.loc[idx, "test_error_pct"]
        b = low.idxmin()  # ties: every row at the minimum is best
        for i in idx:
            best = bool(low[i] == low[b])
            p = 1.0 if best else welch(errors[i], errors[b]).p
            ours.at[i, "best"], ours.at[i, "p_vs_best"] = best, p
            ours.at[i, "significantly_worse"] = bool(p < alpha) if not np.isnan(p) else None
    missing = [t for t in TABLE1.type if t not in set(ours.type)]
    if missing:
        back = {v: k for k, v in ACTIVATION_TYPE.items()}
        extra = []
        for t in missing:
            act, _, n = t.partition(" ")
            extra.append(dict(type=t, activation=back[act], init=NORMALIZED if n == "N" else STANDARD))
        ours = pd.concat([ours, pd.DataFrame(extra)], ignore_index=True) if len(ours) else pd.DataFrame(
            extra, columns=ours.columns)
    out = ours.merge(TABLE1, on="type", how="left")
    out["paper_same_dataset"] = [out.at[i, DATASET_COLUMN[d]] if d in DATASET_COLUMN else np.nan
                                 for i, d in out.dataset.items()]
    order = {t: i for i, t in enumerate(TABLE1.type)}
    out["_o"] = [order.get(t, len(order)) for t in out.type]
    out = out.sort_values(["_o", "activation", "init", "dataset"], na_position="last").drop(columns="_o")
    return out.reset_index(drop=True)


def _fmt(v, sd=None) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None and not np.isnan(sd) else "")


def _true(v) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and bool(v)


def table1_markdown(t: pd.DataFrame, scale: str = "default") -> str:
    """Table 1 as Markdown: our test error (%) per dataset (mean ± sd over seeds, the picked
    tuned values, the best in bold, † where Welch's t says worse than the best at p < 0.005),
    then the paper's four columns."""
    datasets = sorted(d for d in t.dataset.dropna().unique())
    head = ["Type", "init"] + [f"ours: {d}" for d in datasets] + [f"paper: {c}" for c in PAPER_DATASETS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for typ, g in t.groupby("type", sort=False):
        cells = [typ, str(g.init.iloc[0])]
        for d in datasets:
            r = g[g.dataset == d]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            text = _fmt(r.test_error_pct, r.test_error_sd)
            if text and _true(r.get("best")):
                text = f"**{text}**"
            elif text and _true(r.get("significantly_worse")):
                text += " †"
            extra = [f"{int(r.seeds)} seed{'s' if int(r.seeds) != 1 else ''}"] if text and pd.notna(r.get("seeds")) else []
            if isinstance(r.get("picked"), str) and r.picked:
                extra.append(r.picked)
            if r.diverged:
                extra.append(f"{int(r.diverged)}/{int(r.runs)} diverged")
            cells.append((text + " " if text else "") + (f"({'; '.join(extra)})" if extra else ""))
        p = g.iloc[0]
        cells += [_fmt(p[c]) for c in PAPER_DATASETS]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nTest error (%) of {int(t.depth.max()) if t.depth.notna().any() else 5}-hidden-layer nets; "
            f"ours at scale '{scale}': mean ± sd over seeds, each run at its evaluation with the lowest validation "
            "error, as the paper selects; where a sweep tunes an axis (the learning rate), each row uses the value "
            "with the best mean validation error, named in brackets. Bold: the best of the column; †: worse than "
            f"the best by Welch's t-test over seeds at p < {ALPHA:g} (the paper's level); no mark: not "
            f"distinguishable from the best (or too few seeds). Paper: {CITATION}. "
            "'N' = normalized init (glorot_uniform).\n")
    return "\n".join(lines) + "\n" + note


def write_table1(t: pd.DataFrame, sweep_dir: Path, scale: str = "default") -> Dict[str, Path]:
    sweep_dir = Path(sweep_dir)
    paths = {"csv": sweep_dir / "table1.csv", "md": sweep_dir / "table1.md"}
    atomic_write_text(paths["csv"], t.to_csv(index=False))
    atomic_write_text(paths["md"], table1_markdown(t, scale))
    return paths


def setup_note(runs: pd.DataFrame, scale: str = "default") -> str:
    """How this sweep differs from the paper's setup, in one paragraph (for the report)."""
    def vals(col):
        return ", ".join(str(v) for v in sorted(set(runs[col].dropna()), key=str)) if col in runs else "?"

    steps = runs["steps"].dropna() if "steps" in runs else pd.Series(dtype=float)
    steps_txt = f"{int(steps.max())} updates" if len(steps) else "?"
    seeds = runs.groupby(["dataset", "activation", "init"]).seed.nunique() if len(runs) else pd.Series(dtype=int)
    seeds_txt = f"{seeds.min()}-{seeds.max()}" if len(seeds) and seeds.min() != seeds.max() else (
        f"{seeds.max()}" if len(seeds) else "?")
    if "picked_lr" in runs and runs.picked_lr.notna().any():
        lr_txt = (f"learning rate chosen per activation/init pair and dataset on validation error from "
                  f"{str(runs.lr.iloc[0]).removeprefix('tuned: ').replace('|', ', ')}, as the paper did")
    else:
        lr_txt = (f"one fixed learning rate {vals('lr')} for every activation/init pair (the paper tuned it per pair "
                  "on validation error)")
    missing = [d for d in ("shapeset", "mnist") if d not in set(runs.dataset) ] if len(runs) else []
    return (f"Scale '{scale}': dataset {vals('dataset')}; {vals('depth')} hidden layers of {vals('width')} units; "
            f"plain SGD, minibatch {vals('batch_size')}, {lr_txt}; {seeds_txt} seeds per entry; {steps_txt} per run "
            "(shapeset: online, fresh images every step). Differences from the paper: "
            + (f"no {' or '.join(missing)}; " if missing else "") + "no Small-ImageNet; "
            "training far shorter unless PAPER_SCALE=long (the paper: up to 5M updates of minibatch 10); statistics "
            "on the first 300 test examples, as in the paper. 'standard' = U[-1/sqrt(n), 1/sqrt(n)], "
            "'N' = glorot_uniform" + ("; truncated_normal (Keras' stddev 0.05) is the suite's addition."
                                      if len(runs) and (runs.init == "truncated_normal").any() else "."))


# -- the paper's figures ---------------------------------------------------------------------------

def _fig2_depth(runs: pd.DataFrame) -> Optional[int]:
    sig = runs[(runs.activation == "sigmoid") & (runs.init == STANDARD)]
    if sig.empty:
        return None
    return 4 if (sig.depth == 4).any() else int(sig.depth.max())


def paper_figures(tables: Dict[str, pd.DataFrame], out_dir: Path,
                  formats: Sequence[str] = plots.FORMATS) -> List[FigureFile]:
    """Draw the paper's Figs. 2, 3, 4, 6, 7, 8, 9, 10 and 12 (Fig. 11 for Shapeset, with Fig. 1's
    samples) for each dataset of the sweep."""
    runs, ls, hist, met = (tables[k] for k in ("runs", "layer_stats", "histograms", "metrics"))
    written = []
    for suffix, where in plots.slices(runs):
        r, l, h, m = (plots.select(t, **where) for t in (runs, ls, hist, met))
        ds = plots.describe(plots.deepest(r))
        d2 = _fig2_depth(r)
        ds2 = plots.describe(r[(r.activation == "sigmoid") & (r.init == STANDARD) & (r.depth == d2)])
        fig_te = "fig11_shapeset_test_error" if set(r.dataset) == {"shapeset"} else "fig12_test_error"
        S, N = STANDARD, NORMALIZED
        specs = [
            ("fig02_sigmoid_activations",
             f"Fig. 2: sigmoid, {d2 or '?'} hidden layers, standard init: activations during training",
             "Mean (line) and standard deviation (vertical bars) of each hidden layer's sigmoid outputs on the "
             "fixed probe examples. The paper: the top layer is driven to saturation at 0 early in training.",
             lambda: plots.layer_traces(
                 l, [(f"sigmoid, standard, {d2} layers", dict(activation="sigmoid", init=S, depth=d2))],
                 lines=(), bars=("mean", "std"), ylabel="activation value (mean ± std)",
                 title=f"Fig. 2: sigmoid activations per layer during training\n({ds2})")),
            ("fig03_tanh_softsign_p98_std",
             "Fig. 3: tanh (top) and softsign (bottom), standard init: 98th percentile and std of activations",
             "Markers alone: 98th percentile; lines with markers: standard deviation, per hidden layer. "
             "The paper: with tanh the layers saturate one after another from layer 1 up; softsign does not.",
             lambda: plots.layer_traces(
                 l, [("tanh, standard", dict(activation="tanh", init=S)),
                     ("softsign, standard", dict(activation="softsign", init=S))],
                 lines=(("p98", "o"), ("std", "-o")), ylabel="activation value",
                 title=f"Fig. 3: 98th percentile (markers) and std (lines) of activations\n({ds})")),
            ("fig04_activation_histograms_end",
             "Fig. 4: activation histograms at the end of training (tanh top, softsign bottom; standard init)",
             "Normalized histograms of each hidden layer's activations at the last step. The paper: tanh "
             "piles up at the saturated -1/+1; softsign has modes at its knees (about ±0.6-0.8).",
             lambda: plots.layer_histograms(
                 h, [("tanh, standard", dict(activation="tanh", init=S)),
                     ("softsign, standard", dict(activation="softsign", init=S))], "activation", step=None,
                 title=f"Fig. 4: activation histograms at the end of training\n({ds})",
                 xlabel="activation value")),
            ("fig06_activation_histograms_init",
             "Fig. 6: tanh activation histograms at initialization, standard (top) vs normalized (bottom)",
             "Under standard init the peak at 0 grows in higher layers (activations shrink with depth); "
             "normalized init keeps the layers alike.",
             lambda: plots.layer_histograms(
                 h, [("tanh, standard", dict(activation="tanh", init=S)),
                     ("tanh, normalized (glorot_uniform)", dict(activation="tanh", init=N))], "activation", 0,
                 title=f"Fig. 6: activation histograms at initialization\n({ds})", xlabel="activation value")),
            ("fig07_backprop_grad_histograms_init",
             "Fig. 7: back-propagated gradient histograms at initialization, standard vs normalized (tanh)",
             "Histograms of dC/ds per hidden layer before any update: under standard init they narrow "
             "toward the input (layer 1); normalized init keeps them alike.",
             lambda: plots.layer_histograms(
                 h, [("tanh, standard", dict(activation="tanh", init=S)),
                     ("tanh, normalized (glorot_uniform)", dict(activation="tanh", init=N))], "backprop_grad", 0,
                 title=f"Fig. 7: back-propagated gradients at initialization\n({ds})",
                 xlabel="back-propagated gradient ∂C/∂s", sharex=False)),
            ("fig08_weight_grad_histograms_init",
             "Fig. 8: weight-gradient histograms at initialization, standard vs normalized (tanh)",
             "Histograms of dC/dW per hidden layer before any update: they do not shrink with depth under "
             "either init (equal widths keep n Var[z] Var[dC/ds] constant).",
             lambda: plots.layer_histograms(
                 h, [("tanh, standard", dict(activation="tanh", init=S)),
                     ("tanh, normalized (glorot_uniform)", dict(activation="tanh", init=N))], "weight_grad", 0,
                 title=f"Fig. 8: weight gradients at initialization\n({ds})",
                 xlabel="weight gradient ∂C/∂W", sharex=False)),
            ("fig09_weight_grad_std_training",
             "Fig. 9: standard deviation of weight gradients per layer during training, standard vs normalized",
             "std of dC/dW per hidden layer (tanh; log scale). The paper: with normalized init the layers stay "
             "together; with standard init they spread apart during training.",
             lambda: plots.layer_traces(
                 l, [("tanh, standard", dict(activation="tanh", init=S)),
                     ("tanh, normalized (glorot_uniform)", dict(activation="tanh", init=N))], tensor="weight_grad",
                 lines=(("std", "-o"),), log=True, ylabel="std of ∂C/∂W",
                 title=f"Fig. 9: weight-gradient std per layer during training\n({ds})")),
            ("fig10_tanh_normalized_p98_std",
             "Fig. 10: tanh with normalized init: 98th percentile and std of activations during training",
             "As Fig. 3 with the normalized init: no sequential saturation.",
             lambda: plots.layer_traces(
                 l, [("tanh, normalized (glorot_uniform)", dict(activation="tanh", init=N))],
                 lines=(("p98", "o"), ("std", "-o")), ylabel="activation value",
                 title=f"Fig. 10: 98th percentile (markers) and std (lines), tanh normalized\n({ds})")),
            (fig_te, f"Fig. {fig_te[3:5].lstrip('0')}: test error during training for each activation / init pair",
             "Colour = init, line style = activation (5-layer nets); mean over seeds; each pair at its picked "
             "learning rate where the sweep tunes it. The paper: Fig. 11 (Shapeset), Fig. 12 (MNIST, CIFAR-10).",
             lambda: test_error_curves(m, title=f"Fig. {fig_te[3:5].lstrip('0')}: test error during training\n({ds})",
                                       runs=r)),
        ]
        if "shapeset" in set(r.dataset):
            from initsuite.setup import shapeset

            x, y = shapeset.make(9 * 4, 1)  # balanced: 4 images per class
            specs.insert(0, ("fig01_shapeset_samples", "Fig. 1: Shapeset-3x2 samples",
                             "Generated 32x32 images, one column per class (which shapes are present), "
                             "four per class (initsuite.setup.shapeset.make, seed 1).",
                             lambda: samples_figure(x, y, shapeset.CLASS_NAMES)))
        for name, title, caption, draw in specs:
            fig = draw()
            written.append(FigureFile(name + suffix, title, caption, plots.save(fig, out_dir, name + suffix, formats),
                                      group="paper"))
    return written


@plots.styled
def samples_figure(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int = 4,
                   title: str = "Fig. 1: Shapeset-3x2 samples") -> "plots.Figure":
    """The paper's Fig. 1 (top): ``per_class`` images of each class, one column per class,
    from arrays (``images`` (n, H, W[, 1]) in [0, 1], ``labels`` class ids)."""
    k = len(class_names)
    fig, axes = plots.new_figure(per_class, k, panel=(0.95, 0.95))
    for c in range(k):
        idx = np.flatnonzero(np.asarray(labels) == c)[:per_class]
        for r in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
            if r < len(idx):
                ax.imshow(np.asarray(images[idx[r]]).squeeze(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if r == 0:
                ax.set_title(str(class_names[c]).replace("+", "\n+ "), fontsize=7)
    fig.suptitle(title)
    return fig


@plots.styled
def test_error_curves(metrics: pd.DataFrame, title: str = "", runs: Optional[pd.DataFrame] = None) -> "plots.Figure":
    """Test error (%) against steps (log axis), one line per (activation, init): colour = init,
    line style = activation; mean over seeds. The deepest nets only. With ``runs`` carrying
    ``picked_lr`` (a tuned sweep) the legend names each pair's learning rate."""
    picked = None
    if runs is not None and "picked_lr" in runs:
        picked = plots.deepest(runs)
    m = plots.deepest(plots.select(metrics, split="test", metric="error"))
    fig, axes = plots.new_figure(1, 1, panel=(6.0, 3.4))
    ax = axes[0, 0]
    if m.empty:
        plots._no_data(ax)
    else:
        m = with_series(m)
        colors = plots.init_colors(m.series.unique())
        band = plots.seed_band(m.assign(value=100 * m.value), "step", ["activation", "series"])
        lrs = picked.groupby(["activation", "init"]).picked_lr.first() if picked is not None and len(picked) else {}
        for (act, init), b in band.groupby(["activation", "series"]):
            lr = lrs.get((act, init)) if len(lrs) else None
            ax.plot(b.step, b["mean"], linestyle=plots.ACTIVATION_STYLES.get(act, "-"), color=colors[init],
                    label=row_type(act, init) + f"  [{act}, {init}" + (f", lr {lr:g}]" if lr is not None else "]"))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncol=1)  # beside, not over
        if _span(band["mean"]) > 20:
            ax.set_yscale("log")
        positive = band.step[band.step > 0]
        if len(positive) and band.step.max() / positive.min() > 20:  # log-spaced evaluations: log steps
            ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.3)
    ax.set_xlabel(plots.STEP_LABEL)
    ax.set_ylabel("test error (%)")
    fig.suptitle(title)
    return fig


def _span(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.max() / v.min()) if len(v) else 1.0


# -- what the paper claims, checked on this sweep ---------------------------------------------------

def checks(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's qualitative claims, each measured on this sweep (deepest nets, seed means):
    claim, measured (numbers), holds (True / False / None when the sweep lacks the runs)."""
    ls = plots.deepest(plots.hidden_layers(tables["layer_stats"]))
    runs = tables["runs"]
    out = []

    def per_layer(act, init, tensor, stat, step=0):
        d = plots.select(ls, activation=act, init=init, tensor=tensor, stat=stat, step=step)
        return d.groupby("layer_index").value.mean().sort_index().to_numpy()

    def add(claim, measured, holds):
        out.append(dict(claim=claim, measured=measured, holds=holds))

    for act in ("tanh", "softsign"):
        s = per_layer(act, STANDARD, "activation", "std")
        if len(s) > 1:
            add(f"{act}, standard init: activation std shrinks with depth at initialization",
                f"std layer 1 -> {len(s)}: {s[0]:.3g} -> {s[-1]:.3g} (x{s[-1] / s[0]:.2f})",
                bool(s[-1] < 0.7 * s[0]))
        g = per_layer(act, STANDARD, "backprop_grad", "var")
        if len(g) > 1:
            add(f"{act}, standard init: back-propagated gradient variance shrinks toward the input",
                f"Var[dC/ds] layer 1 / layer {len(g)} = {g[0] / g[-1]:.3g}", bool(g[0] < 0.5 * g[-1]))
        gn = per_layer(act, NORMALIZED, "backprop_grad", "var")
        an = per_layer(act, NORMALIZED, "activation", "std")
        if act == "tanh" and len(gn) > 1 and len(an) > 1:  # the paper's Figs. 6-7 (tanh)
            add(f"{act}, normalized init: activations and gradients stay level across layers",
                f"max/min over layers: activation std {an.max() / an.min():.2f}, "
                f"Var[dC/ds] {gn.max() / gn.min():.2f}",
                bool(an.max() / an.min() < 2 and gn.max() / gn.min() < 4))
        for init in (STANDARD, NORMALIZED):
            w = per_layer(act, init, "weight_grad", "var")
            if len(w) > 1:
                add(f"{act}, {init}: weight-gradient variance is about equal across layers at initialization",
                    f"max/min over layers: {w.max() / w.min():.2f}", bool(w.max() / w.min() < 3))
    d2 = _fig2_depth(runs) if len(runs) else None
    if d2 is not None:
        d = plots.select(plots.hidden_layers(tables["layer_stats"]), activation="sigmoid", init=STANDARD, depth=d2,
                         tensor="activation", stat="mean")
        if len(d):
            top = d[d.layer_index == d.layer_index.max()].groupby("step").value.mean()
            add(f"sigmoid, standard init ({d2} layers): the top hidden layer is pushed toward 0",
                f"top-layer mean activation {top.iloc[0]:.3f} at step 0 -> min {top.min():.3f} "
                f"(step {int(top.idxmin())})", bool(top.min() < 0.5 * top.iloc[0]))
    t = per_layer("tanh", "truncated_normal", "activation", "saturated_frac")
    if len(t):
        tg = per_layer("tanh", NORMALIZED, "activation", "saturated_frac")
        add("tanh, truncated_normal: more saturated units at initialization than glorot_uniform",
            f"saturated units, top layer: truncated_normal {100 * t[-1]:.1f}%"
            + (f", glorot_uniform {100 * tg[-1]:.1f}%" if len(tg) else ""),
            bool(len(tg) and t[-1] > tg[-1]) if len(tg) else None)
    if len(runs):
        for claim in table1_checks(runs, tables.get("metrics")):
            add(*claim)
    return pd.DataFrame(out, columns=["claim", "measured", "holds"])


def table1_checks(runs: pd.DataFrame, metrics: Optional[pd.DataFrame] = None, alpha: float = ALPHA) -> List[tuple]:
    """Table 1's orderings, per dataset: for tanh and softsign, which init wins and whether the gap
    is significant (Welch's t over seeds, p < ``alpha``), beside the paper's; and whether sigmoid is
    the worst of the paper's rows. ``(claim, measured, holds)`` tuples; ``holds`` compares the
    direction with the paper's (None where the paper has no such column)."""
    from initsuite.analysis.stats import welch

    t1 = table1(runs, metrics, alpha).dropna(subset=["test_error_pct"])
    errs = entry_errors(plots.deepest(runs[runs.activation.isin(ACTIVATION_TYPE)]), metrics)
    out = []
    for dataset in sorted(t1.dataset.unique()):
        col = DATASET_COLUMN.get(dataset)
        d = t1[t1.dataset == dataset]
        for act in ("tanh", "softsign"):
            s, n = (d[(d.activation == act) & (d.init == i)] for i in (STANDARD, NORMALIZED))
            if s.empty or n.empty:
                continue
            ms, mn = float(s.test_error_pct.iloc[0]), float(n.test_error_pct.iloc[0])
            w = welch(errs.get((act, STANDARD, dataset), []), errs.get((act, NORMALIZED, dataset), []))
            winner = NORMALIZED if mn < ms else STANDARD
            sig = ("p n/a (fewer than 2 seeds)" if np.isnan(w.p) else
                   f"Welch p = {w.p:.2g}, {'significant' if w.p < alpha else 'not significant'} at {alpha:g}")
            paper_txt, expected = "", None
            if col:  # the paper's winner, from its Table 1
                ps, pn = (float(TABLE1.set_index("type").at[row_type(act, i), col]) for i in (STANDARD, NORMALIZED))
                paper_txt, expected = f"; paper {ps:.2f} vs {pn:.2f}", NORMALIZED if pn < ps else STANDARD
            out.append((f"{dataset}, {act}: {'normalized' if expected != STANDARD else 'standard'} init reaches the "
                        f"lower test error (Table 1)",
                        f"standard {ms:.2f}% vs normalized {mn:.2f}%: {winner} wins by {abs(ms - mn):.2f} points, "
                        f"{sig}{paper_txt}", None if expected is None else bool(winner == expected)))
        paper_rows = d[d.type.isin(TABLE1.type)]
        if (paper_rows.type == "Sigmoid").any() and len(paper_rows) > 1:
            e = paper_rows.set_index("type").test_error_pct.sort_values()
            out.append((f"{dataset}: sigmoid (standard init) has the highest test error of the paper's rows (Table 1)",
                        ", ".join(f"{k} {v:.2f}%" for k, v in e.items()), bool(e.idxmax() == "Sigmoid")))
    return out
