"""A sweep's figures, tables and verdicts as one offline HTML page: ``<sweep>/report.html``.

``build(sweep_dir)`` reads the collected tables (``runs``, ``layer_stats``,
``metrics``, ``histograms``, ``events``; parquet), draws the comparison figures
of :mod:`initsuite.analysis.plots` and the theory figures of :mod:`initsuite.analysis.theory_plots`
into ``<sweep>/figures/`` (PNG + PDF), ranks the initializers with their diagnoses
(:mod:`initsuite.analysis.verdicts`), adds the paper's figures, Table 1 and claim checks of
:mod:`initsuite.analysis.paper` when the sweep is a ``glorot2010`` one, and writes
``report.html`` with every figure embedded (base64 PNG), so it opens from disk,
mailed or copied, without a server.
No TensorFlow, no Hydra.
"""

from __future__ import annotations

import base64
import html
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from initsuite.analysis import paper, plots, theory_plots, verdicts

from initsuite import tables as schema
from initsuite.analysis.plots import FigureFile
from initsuite.atomic import atomic_write_text
from initsuite.tables import TABLES


def load_tables(sweep_dir: Path) -> Dict[str, pd.DataFrame]:
    """The collected tables of a sweep folder; a missing ``runs`` table means the sweep was
    never collected (``make collect SWEEP=<folder>``)."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "runs.parquet").exists():
        raise FileNotFoundError(f"{sweep_dir / 'runs.parquet'} does not exist: collect the sweep first "
                                f"(make collect SWEEP={sweep_dir})")
    out = {}
    for name in TABLES:
        path = sweep_dir / f"{name}.parquet"
        out[name] = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    return out


def summary(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (slice, activation, configuration) at the deepest depth (the configuration: the
    init and every other key that varies, :func:`initsuite.tables.series_columns`; only seeds are
    averaged): runs, diverged, final test error,
    and the step-0 per-layer ratios that explain it (top / first layer activation variance,
    first / top layer back-propagated gradient variance: < 1 means it vanishes toward the input),
    plus the top layer's saturated units at the end."""
    runs = tables["runs"]
    ls = plots.hidden_layers(tables["layer_stats"]) if len(tables["layer_stats"]) else pd.DataFrame()
    rows = []
    for _, where in plots.slices(runs):
        r = schema.with_series(plots.deepest(plots.select(runs, **where)))
        params = schema.series_columns(r)
        schema.check_seeds_only(r, ["activation", "series"])
        for (act, _), g in r.groupby(["activation", "series"], sort=True):
            ids = set(g.run_id)
            row = {**where, "activation": act, **{c: g[c].iloc[0] for c in params},
                   "depth": int(g.depth.iloc[0]), "runs": len(g),
                   "diverged": int((g.status == "diverged").sum()), "failed": int((g.status == "failed").sum())}
            ok = g[(g.status == "done") & g.final_test_error.notna()]
            row["test_error_pct"] = 100 * ok.final_test_error.mean() if len(ok) else np.nan
            if len(ls):
                d = ls[ls.run_id.isin(ids)]
                row["act_var_top_over_first"] = _ratio(d, "activation", "var", 0, top_over_first=True)
                row["grad_var_first_over_top"] = _ratio(d, "backprop_grad", "var", 0, top_over_first=False)
                sat = d[(d.tensor == "activation") & (d.stat == "saturated_frac")]
                if len(sat):
                    last = sat[sat.step == sat.groupby("run_id").step.transform("max")]
                    top = last[last.layer_index == last.layer_index.max()]
                    row["top_saturated_end_pct"] = 100 * top.value.mean()
            rows.append(row)
    return pd.DataFrame(rows)


def _ratio(d: pd.DataFrame, tensor: str, stat: str, step: int, top_over_first: bool) -> float:
    v = d[(d.tensor == tensor) & (d.stat == stat) & (d.step == step)].groupby("layer_index").value.mean()
    if len(v) < 2 or not np.isfinite(v.iloc[0]) or v.iloc[0] == 0 or v.iloc[-1] == 0:
        return np.nan
    return float(v.iloc[-1] / v.iloc[0]) if top_over_first else float(v.iloc[0] / v.iloc[-1])


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _table_html(df: pd.DataFrame, floatfmt="{:.4g}") -> str:
    return df.to_html(index=False, border=0, classes="t", na_rep="", float_format=floatfmt.format, escape=True)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.t td,table.t th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f6f6f6}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.ok{color:#1a7f37}.no{color:#c62828}.na{color:#777}
code{background:#f3f3f3;padding:0 .2em}
"""


def write_report(sweep_dir: Path, tables: Dict[str, pd.DataFrame], figures: Sequence[FigureFile],
                 table1: Optional[pd.DataFrame] = None, claims: Optional[pd.DataFrame] = None,
                 scale: Optional[str] = None, ranking: Optional[pd.DataFrame] = None,
                 opening: Optional[str] = None, choices: Optional[pd.DataFrame] = None) -> Path:
    """Write ``<sweep_dir>/report.html`` from already drawn figures and computed tables; ``opening``
    (HTML, e.g. :func:`initsuite.analysis.answer.write`'s) comes first, before the contents."""
    sweep_dir = Path(sweep_dir)
    runs = tables["runs"]
    e = html.escape
    experiments = ", ".join(sorted(set(runs.experiment.astype(str)))) if len(runs) else "?"
    counts = runs.status.value_counts().to_dict() if len(runs) else {}
    datasets = ", ".join(sorted(set(runs.dataset.astype(str)))) if len(runs) else "?"
    if "data" in runs.columns and runs["data"].notna().any():  # e.g. "MNIST: embedded 10k-digit sample (...)"
        datasets = "; ".join(sorted(set(runs["data"].dropna().astype(str))))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>initsuite: {e(experiments)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>initsuite sweep: {e(experiments)}</h1>",
             f"<p>Folder <code>{e(str(sweep_dir))}</code>; dataset: <b>{e(datasets)}</b>; "
             f"{len(runs)} runs ({', '.join(f'{v} {e(str(k))}' for k, v in sorted(counts.items()))})"
             + (f"; paper scale <b>{e(scale)}</b>" if scale else "")
             + f"; {e(plots.describe(runs))}. Written {time.strftime('%Y-%m-%d %H:%M')}.</p>"]
    if opening:
        parts.append(opening)
    # contents: every figure listed here is embedded below (the tests check it)
    parts.append("<h2>Contents</h2><ol id='contents'>")
    parts.append("<li><a href='#summary'>Summary</a></li>")
    if table1 is not None:
        parts.append("<li><a href='#table1'>Table 1</a></li>")
    for f in figures:
        parts.append(f"<li><a href='#{e(f.name)}' class='figlink'>{e(f.title)}</a></li>")
    parts.append("<li><a href='#runs'>Runs</a></li></ol>")

    s = summary(tables)
    parts.append("<h2 id='summary'>Summary</h2>")
    if claims is not None and len(claims):
        parts.append("<h3>The paper's claims, measured on this sweep</h3><ul>")
        for c in claims.itertuples():
            mark = ("<span class='ok'>&#10003; holds</span>" if c.holds is True else
                    "<span class='no'>&#10007; does not hold</span>" if c.holds is False else
                    "<span class='na'>not measured</span>")
            parts.append(f"<li>{mark}: {e(c.claim)} <i>({e(str(c.measured))})</i></li>")
        parts.append("</ul>")
    if ranking is not None and len(ranking):
        parts.append("<h3>Initializers ranked per setting, with diagnoses</h3>")
        shown = [c for c in schema.group_columns(ranking) if c not in ("dataset", "model", "depth", "width",
                                                                       "activation")]
        cols = [c for c in ("architecture", *[c for c in shown if not c.startswith("init")], "rank", "init",
                            *[c for c in shown if c.startswith("init.")], "test error %", "sd %", "runs",
                            "diverged", "verdicts") if c in ranking.columns]
        parts.append(_table_html(ranking[cols]))
        if "verdict_text" in ranking.columns:
            parts.append("<details><summary>Diagnoses in words</summary><ul>" + "".join(
                f"<li><b>{e(str(r.architecture))}, {e(str(r.init))}</b>: {e(str(r.verdict_text))}</li>"
                for r in ranking.itertuples()) + "</ul></details>")
    if choices is not None and len(choices):
        from initsuite.analysis.selection import declared

        axis, metric = declared(runs)
        parts.append(f"<h3>Selected on validation: {e(str(axis))} by {e(str(metric))}</h3><p>Every figure and "
                     "table here shows, per group of the other config columns, only the runs of the value with "
                     "the lowest mean score over seeds (file <code>selection.csv</code>).</p>")
        parts.append(_table_html(choices))
    if len(s):
        parts.append("<p>Per initializer at the deepest depth: final test error; at step 0 the ratio of the top to "
                     "the first hidden layer's activation variance, and of the first to the top layer's "
                     "back-propagated gradient variance (well below 1: shrinking away from the output); saturated "
                     "units of the top layer at the end.</p>")
        parts.append(_table_html(s))

    if table1 is not None:
        parts.append("<h2 id='table1'>Table 1: test error (%) beside Glorot &amp; Bengio (2010)</h2>")
        parts.append(f"<p>{e(paper.CITATION)}. Our runs use the dataset <b>{e(datasets)}</b>"
                     + (f" at scale <b>{e(scale)}</b>" if scale else "") + ". Files: <code>table1.csv</code>, "
                     "<code>table1.md</code>.</p>")
        parts.append(f"<p>{e(paper.setup_note(runs, scale or 'default'))}</p>")
        t = table1.rename(columns={"test_error_pct": "ours: test error % (best valid)", "test_error_sd": "ours: sd",
                                   "final_test_error_pct": "ours: final test error %",
                                   "paper_same_dataset": "paper: same dataset"})
        parts.append(_table_html(t, "{:.2f}"))

    group_titles = {"answer": "The answer's figure", "paper": "The paper's figures", "comparison": "Comparison figures",
                    "theory": "Theory beside measurement"}
    current = None
    for f in figures:
        if f.group != current:
            current = f.group
            parts.append(f"<h2>{e(group_titles.get(current, current))}</h2>")
        png = f.paths.get("png")
        links = " ".join(f"<a href='figures/{e(Path(p).name)}'>{k.upper()}</a>" for k, p in f.paths.items())
        parts.append(f"<figure id='{e(f.name)}'><img alt='{e(f.title)}' src='{_img(png) if png else ''}'>"
                     f"<figcaption><b>{e(f.title)}.</b> {e(f.caption)} {links}</figcaption></figure>")

    parts.append("<h2 id='runs'>Runs</h2>")
    if len(runs):
        cols = [c for c in ["init", *[c for c in schema.group_columns(runs) if "." in c],
                            "activation", "depth", "width", "dataset", "seed", "status", "final_test_error",
                            "final_train_loss", "first_nonfinite_step", "first_nonfinite_layer",
                            "first_nonfinite_phase", "wall_s", "run_id"] if c in runs.columns]
        r = runs[cols].copy()
        if "final_test_error" in r:
            r["final_test_error"] = 100 * r.final_test_error
            r = r.rename(columns={"final_test_error": "final test error %"})
        parts.append(_table_html(r.sort_values([c for c in ("activation", "init", "depth", "seed") if c in r])))
    parts.append("<p>Tables: <code>runs.parquet</code>, <code>layer_stats.parquet</code>, "
                 "<code>metrics.parquet</code>, <code>histograms.parquet</code>, <code>events.parquet</code> in "
                 "this folder; figures as PNG and PDF in <code>figures/</code>.</p></body></html>")
    out = sweep_dir / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out


def build(sweep_dir: Path, tables: Optional[Dict[str, pd.DataFrame]] = None,
          formats: Sequence[str] = plots.FORMATS, theory: bool = True) -> Path:
    """Draw every figure of a sweep into ``<sweep>/figures/``, write Table 1 (glorot2010
    sweeps) and ``report.html``; return the report's path. ``formats`` must include png (the
    page embeds it); ``theory=False`` leaves out the (slower) theory figures."""
    sweep_dir = Path(sweep_dir)
    tables = tables if tables is not None else load_tables(sweep_dir)
    tables = {k: tables.get(k, pd.DataFrame()) for k in TABLES}
    tables, choices = _select(tables, sweep_dir)  # a sweep with tune.axis: only each group's picked runs
    fig_dir = sweep_dir / "figures"
    figures: List[FigureFile] = []
    t1 = claims = scale = None
    if paper.is_paper_sweep(tables["runs"]):
        scale = paper.scale_name(tables["runs"])
        figures += paper.paper_figures(tables, fig_dir, formats)
        t1 = paper.table1(tables["runs"], tables["metrics"])
        paper.write_table1(t1, sweep_dir, scale)
        claims = paper.checks(tables)
    from initsuite.analysis import answer  # the Caffe -> TensorFlow question, when the sweep has its initializers

    figures = answer.figures(tables, fig_dir, formats) + figures
    figures += plots.comparison_figures(tables, fig_dir, formats)
    if theory:
        figures += theory_figures(tables, fig_dir, formats)
    return write_report(sweep_dir, tables, figures, t1, claims, scale, ranking=_ranking(tables),
                        opening=answer.write(tables, sweep_dir), choices=choices)


def _select(tables: Dict[str, pd.DataFrame], sweep_dir: Path):
    """:func:`initsuite.analysis.selection.apply` over the config columns; the choices go to ``selection.csv``."""
    from initsuite.analysis import selection
    from initsuite.atomic import atomic_write_text
    from initsuite.tables import config_columns

    cols = [c for c in config_columns(tables["runs"]) if c not in (selection.TUNE_AXIS, selection.TUNE_METRIC)]
    tables, choices = selection.apply(tables, cols)
    if choices is not None:
        atomic_write_text(Path(sweep_dir) / "selection.csv", choices.to_csv(index=False))
    return tables, choices


THEORY_FIGURES = [
    ("theory_variance_by_layer", "Theory beside measurement: per-layer variance at initialization",
     "Measured (markers) vs predicted per-layer variance: mean field (solid), Glorot & Bengio's linear regime "
     "(dotted), from each run's realised sigma_w^2 = fan_in Var[W].", "variance_by_layer"),
    ("theory_depth_heatmap", "Theory beside measurement: final error per initializer and depth",
     "Final test error per initializer x depth with the mean-field trainable depth 6 xi_c drawn on each row.",
     "depth_heatmap"),
    ("theory_phase_diagram", "Theory: where each initializer sits on the order/chaos phase diagram",
     "log chi_1 over (sigma_w^2, sigma_b^2): blue ordered (gradients vanish), red chaotic (explode), black the "
     "critical line; each initializer at its realised sigma_w^2.", "phase_diagram"),
]


def theory_figures(tables: Dict[str, pd.DataFrame], out_dir: Path,
                   formats: Sequence[str] = plots.FORMATS) -> List[FigureFile]:
    """The figures of :mod:`initsuite.analysis.theory_plots` (mean-field predictions beside the measurements).
    A figure that cannot be drawn for this sweep is left out with a warning, not the whole report."""
    out = []
    if not len(tables["runs"]) or not len(tables["layer_stats"]):
        return out
    for name, title, caption, fn in THEORY_FIGURES:
        try:
            fig = getattr(theory_plots, fn)(tables)
        except Exception as exc:  # theory covers mlp/cnn with registry inits; say what was skipped
            print(f"[report] {name} skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        out.append(FigureFile(name, title, caption, plots.save(fig, out_dir, name, formats), group="theory"))
    return out


def _ranking(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Initializers ranked per setting with their diagnoses (:func:`initsuite.analysis.verdicts.ranking`)."""
    if not len(tables["runs"]):
        return pd.DataFrame()
    r = verdicts.ranking(tables)
    if len(r) and "error" in r:
        r = r.assign(error=100 * r.error, error_std=100 * r.error_std).rename(
            columns={"error": "test error %", "error_std": "sd %"})
    return r
