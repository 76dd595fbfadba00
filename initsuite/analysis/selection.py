"""Selection over a tuned axis, as Glorot & Bengio (2010) chose each model's learning rate
("on the validation set", per activation x init pair): pandas over the runs table, no TensorFlow.

A sweep declares ``tune: {axis: optimizer.lr, metric: valid_error}`` (several axes
comma-separated: ``optimizer.lr,model.depth``). For every group of runs that agree on all the
other config columns (the seed aside), :func:`select` scores each value of the axis by the
mean over seeds of the metric and keeps the runs of the best (lowest) value:

* ``valid_error``: each run's lowest validation error over its evaluations (the paper's
  early stopping), else its final validation error; any other name is a numeric column of
  the runs table (``final_valid_loss``...);
* a run without a score (diverged, failed) scores +inf, so a value at which any seed
  diverged is picked only when every value did;
* ties go to the smallest axis value.

:func:`apply` then keeps only the picked runs in every table and collapses the tuned column
to one label (``"tuned: 0.01|0.05|0.1"``) so that figures, the ranking and Table 1 compare the
groups side by side; the picked value stays in the runs table as ``picked_<column>``.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd

METRICS = ("valid_error",)  # derived scores; any numeric runs column works too
TUNE_AXIS, TUNE_METRIC = "tune_axis", "tune_metric"  # the runs-table columns of the declaration
PICKED = "picked_"


class SelectionError(ValueError):
    """A tune declaration that does not fit the runs table; the message lists what does."""


class Selection(NamedTuple):
    runs: pd.DataFrame  # the picked runs (every seed of the best value, per group)
    choices: pd.DataFrame  # one row per group: group columns, picked axis values, score, candidates


def axes_of(axis: Union[str, Sequence[str], None]) -> List[str]:
    if axis is None or (isinstance(axis, float) and np.isnan(axis)):
        return []
    parts = axis.split(",") if isinstance(axis, str) else list(axis)
    return [p.strip() for p in parts if p and p.strip()]


def resolve(axis: str, columns: Sequence[str]) -> str:
    """The runs-table column of a config key: the key itself (``optimizer.lr``), else its last
    part (``lr``), as the identity columns are named."""
    if axis in columns:
        return axis
    leaf = axis.rsplit(".", 1)[-1]
    if leaf in columns:
        return leaf
    raise SelectionError(f"tune.axis {axis!r} is not a column of the runs table; columns: {', '.join(columns)}")


def scores(runs: pd.DataFrame, metrics: Optional[pd.DataFrame] = None, metric: str = "valid_error") -> pd.Series:
    """The score of each run (by run_id; NaN where it has none): see the module docstring."""
    r = runs.set_index("run_id")
    if metric == "valid_error":
        out = r["final_valid_error"].astype(float) if "final_valid_error" in r else pd.Series(np.nan, r.index)
        if metrics is not None and len(metrics):
            m = metrics[(metrics.split == "valid") & (metrics.metric == "error")]
            best = m.groupby("run_id").value.min()
            out = best.reindex(out.index).fillna(out)
    elif metric in r.columns and pd.api.types.is_numeric_dtype(r[metric]):
        out = r[metric].astype(float)
    else:
        numeric = [c for c in r.columns if pd.api.types.is_numeric_dtype(r[c])]
        raise SelectionError(f"unknown tune.metric {metric!r}; valid: {', '.join(METRICS + tuple(numeric))}")
    if "status" in r:
        out[r.status.isin(["diverged", "failed"])] = np.nan
    return out


def select(runs: pd.DataFrame, config_columns: Sequence[str], axis: Union[str, Sequence[str]],
           score: pd.Series, seed_column: str = "seed") -> Selection:
    """Per group of ``config_columns`` other than the axes and the seed, keep the runs of the
    axis value(s) with the lowest mean ``score`` (a Series by run_id) over seeds."""
    axes = [resolve(a, list(runs.columns)) for a in axes_of(axis)]
    if not axes:
        raise SelectionError("tune.axis is empty: name the config key to select over, e.g. optimizer.lr")
    group = [c for c in config_columns if c in runs.columns and c not in axes and c != seed_column]
    r = runs.assign(_score=score.reindex(runs.run_id).to_numpy()).copy()
    r["_score"] = r["_score"].fillna(np.inf)
    picked, choices = [], []
    for key, g in (r.groupby(group, dropna=False, sort=True) if group else [((), r)]):
        key = key if isinstance(key, tuple) else (key,)
        cand = g.groupby(axes, dropna=False)._score.agg(["mean", "count"]).reset_index()
        cand = cand.sort_values(["mean"] + axes, kind="stable")
        best = cand.iloc[0]
        mask = np.ones(len(g), bool)
        for a in axes:
            mask &= (g[a] == best[a]).to_numpy() | (g[a].isna() & pd.isna(best[a])).to_numpy()
        picked.append(g[mask])
        text = "; ".join(f"{'/'.join(_fmt(row[a]) for a in axes)}: {_fmt(row['mean'])}" for _, row in cand.iterrows())
        choices.append({**dict(zip(group, key)), **{a: best[a] for a in axes}, "score": best["mean"],
                        "seeds": int(best["count"]), "candidates": len(cand), "scores": text})
    out = pd.concat(picked).drop(columns="_score") if picked else r.drop(columns="_score").iloc[:0]
    cols = group + axes + ["score", "seeds", "candidates", "scores"]
    return Selection(out.sort_index(), pd.DataFrame(choices, columns=cols))


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "inf" if np.isinf(v) else f"{v:.4g}"
    return str(v)


def declared(runs: pd.DataFrame) -> tuple:
    """``(axis, metric)`` the runs declare (``tune_axis``/``tune_metric`` columns), or (None, None)."""
    if TUNE_AXIS not in runs.columns or not runs[TUNE_AXIS].notna().any():
        return None, None
    axis = sorted(set(runs[TUNE_AXIS].dropna().astype(str)))
    if len(axis) > 1:
        raise SelectionError(f"runs of one sweep declare different tune axes: {', '.join(axis)}")
    metric = runs[TUNE_METRIC].dropna().astype(str) if TUNE_METRIC in runs else pd.Series([], dtype=str)
    return axis[0], (metric.iloc[0] if len(metric) else "valid_error")


def apply(tables: Dict[str, pd.DataFrame], config_columns: Sequence[str], axis: Optional[str] = None,
          metric: Optional[str] = None):
    """The tables restricted to the picked runs, and the choices (None when nothing is tuned).

    ``axis``/``metric`` default to the runs' declaration (:func:`declared`)."""
    runs = tables["runs"]
    if axis is None:
        axis, metric = declared(runs)
    if not axis or not len(runs):
        return tables, None
    sel = select(runs, config_columns, axis, scores(runs, tables.get("metrics"), metric or "valid_error"))
    keep = set(sel.runs.run_id)
    axes = [resolve(a, list(runs.columns)) for a in axes_of(axis)]
    out = {}
    for name, t in tables.items():
        t = t[t.run_id.isin(keep)].copy() if "run_id" in t.columns else t
        for a in axes:
            if a in t.columns:
                if name == "runs":
                    t[PICKED + a] = t[a]
                label = "tuned: " + "|".join(_fmt(v) for v in sorted(runs[a].dropna().unique()))
                t[a] = label
        out[name] = t
    return out, sel.choices
