"""Plain-words diagnoses of each run, with their evidence and thresholds, and a ranking of
initializers by final error with the diagnoses beside them.

Every check reads the run's own tables (``layer_stats``, ``metrics``) and its ``runs`` row.
"Hidden layers" are those followed by an activation (they have ``activation`` rows). Layer-wise
checks look at initialization (the first measured step) and, if nothing is wrong there, at the
last measured step, and report the first of the two that crosses the threshold.

================================  ===========================================================
verdict                           threshold (module constant)
================================  ===========================================================
``diverged``                      any NaN/Inf; gives the first step, layer, phase and tensor
``vanishing_gradients``           Var[dC/ds] first hidden layer / top hidden layer < 1/10
                                  (``GRADIENT_RATIO``; Glorot & Bengio's standard init, 5 layers: ~1/80)
``exploding_gradients``           the same ratio > 10 (the TF tutorial's truncated normal, tanh)
``activations_collapsing``        std of activations top / first hidden layer < 1/10
                                  (``ACTIVATION_RATIO``; standard init halves it per layer)
``activations_exploding``         the same ratio > 10 (unbounded activations, too-large weights)
``saturated``                     > 50 % of a hidden layer's units in the flat part of a saturating
                                  activation, slope < 5 % of its peak (``SATURATED_FRAC``)
``dead_relus``                    > 90 % of a ReLU layer's outputs exactly 0 (``DEAD_FRAC``;
                                  a healthy ReLU layer has about half)
``learning_rate_too_large``       the training loss at the first evaluation after step 0 is more
                                  than 10 % above its step-0 value (``LOSS_RISE``)
``healthy``                       none of the above
``failed`` / ``running``          the run has no finished tables to judge (``unmeasured``: no
                                  layer statistics nor metrics, e.g. probes disabled)
================================  ===========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import pandas as pd

from initsuite import tables as schema
from initsuite.tables import FINISHED

GRADIENT_RATIO = 10.0  # first/top hidden-layer dC/ds variance outside [1/10, 10]: vanishing / exploding
ACTIVATION_RATIO = 10.0  # top/first hidden-layer activation std outside [1/10, 10]: collapsing / exploding
SATURATED_FRAC = 0.5  # fraction of a layer's units with slope < 5 % of the peak
DEAD_FRAC = 0.9  # fraction of a ReLU layer's outputs that are exactly 0
LOSS_RISE = 0.10  # relative rise of the training loss from step 0 to the next evaluation
DEAD_UNIT_ACTIVATIONS = ("relu",)  # flat part = exactly 0: judged by dead units, not saturation

SEVERITY = {"diverged": "error", "healthy": "ok"}  # the checks' others: "warning"


@dataclass(frozen=True)
class Verdict:
    name: str
    severity: str  # error | warning | ok
    message: str  # plain words, with the numbers
    evidence: Dict[str, Any] = field(default_factory=dict)
    threshold: str = ""

    def text(self) -> str:
        return f"{self.name}: {self.message} (threshold: {self.threshold})" if self.threshold else \
            f"{self.name}: {self.message}"


def _verdict(name: str, message: str, evidence: Dict[str, Any], threshold: str) -> Verdict:
    return Verdict(name, SEVERITY.get(name, "warning"), message, evidence, threshold)


def _get(row: Any, key: str, default=None):
    try:
        value = row[key] if key in row else default
    except TypeError:
        value = getattr(row, key, default)
    if value is None:
        return default
    if isinstance(value, float) and math.isnan(value):
        return default
    return value


def _g(x: float) -> str:
    return f"{x:.3g}"


class _Stats:
    """One run's layer statistics, indexed for the checks."""

    def __init__(self, layer_stats: pd.DataFrame):
        ls = schema.batch_rows(layer_stats) if layer_stats is not None else pd.DataFrame()  # the fixed probe
        self.ls = ls
        self.steps = sorted(ls.step.unique()) if len(ls) else []
        self.hidden = schema.hidden_layer_names(ls)  # the output layer (logits) is never one of them

    def series(self, step, tensor: str, stat: str) -> np.ndarray:
        """Per hidden layer, in depth order (NaN where missing)."""
        sub = self.ls[(self.ls.step == step) & (self.ls.tensor == tensor) & (self.ls.stat == stat)]
        by_layer = dict(zip(sub.layer, sub.value))
        return np.array([by_layer.get(l, np.nan) for l in self.hidden], dtype=float)

    def check_steps(self) -> list:
        """Initialization, then the last measured step."""
        if not self.steps:
            return []
        return [self.steps[0]] + ([self.steps[-1]] if self.steps[-1] != self.steps[0] else [])


def _when(stats: _Stats, step) -> str:
    return "at initialization" if step == stats.steps[0] else f"at step {int(step)}"


def _ratio_checks(stats: _Stats) -> List[Verdict]:
    out: List[Verdict] = []
    if len(stats.hidden) < 2:
        return out
    first, top = stats.hidden[0], stats.hidden[-1]
    found = set()
    for step in stats.check_steps():
        g = stats.series(step, "backprop_grad", "var")
        if np.isfinite(g[[0, -1]]).all() and g[-1] > 0 and "gradients" not in found:
            r = g[0] / g[-1]
            ev = dict(step=int(step), ratio=float(r), first_layer=first, top_layer=top,
                      first_var=float(g[0]), top_var=float(g[-1]))
            per_layer = r ** (1.0 / (len(g) - 1)) if r > 0 else 0.0
            if r < 1.0 / GRADIENT_RATIO:
                found.add("gradients")
                out.append(_verdict(
                    "vanishing_gradients",
                    f"back-propagated gradients vanish toward the input {_when(stats, step)}: Var[dC/ds] of "
                    f"{first} is {_g(r)} x that of {top} (x{_g(per_layer)} per layer)",
                    ev, f"first/top < 1/{GRADIENT_RATIO:g}"))
            elif r > GRADIENT_RATIO:
                found.add("gradients")
                out.append(_verdict(
                    "exploding_gradients",
                    f"back-propagated gradients grow toward the input {_when(stats, step)}: Var[dC/ds] of "
                    f"{first} is {_g(r)} x that of {top} (x{_g(per_layer)} per layer)",
                    ev, f"first/top > {GRADIENT_RATIO:g}"))
        a = stats.series(step, "activation", "std")
        if np.isfinite(a[[0, -1]]).all() and a[0] > 0 and "activations" not in found:
            r = a[-1] / a[0]
            ev = dict(step=int(step), ratio=float(r), first_layer=first, top_layer=top,
                      first_std=float(a[0]), top_std=float(a[-1]))
            if r < 1.0 / ACTIVATION_RATIO:
                found.add("activations")
                out.append(_verdict(
                    "activations_collapsing",
                    f"activations shrink with depth {_when(stats, step)}: the std of {top}'s activations is "
                    f"{_g(r)} x that of {first}'s", ev, f"top/first < 1/{ACTIVATION_RATIO:g}"))
            elif r > ACTIVATION_RATIO:
                found.add("activations")
                out.append(_verdict(
                    "activations_exploding",
                    f"activations grow with depth {_when(stats, step)}: the std of {top}'s activations is "
                    f"{_g(r)} x that of {first}'s", ev, f"top/first > {ACTIVATION_RATIO:g}"))
    return out


def _flat_unit_checks(stats: _Stats, activation: Optional[str]) -> List[Verdict]:
    if not stats.hidden:
        return []
    dead = activation in DEAD_UNIT_ACTIVATIONS
    stat = "zero_frac" if dead else "saturated_frac"
    limit = DEAD_FRAC if dead else SATURATED_FRAC
    for step in stats.check_steps():
        frac = stats.series(step, "activation", stat)
        bad = [l for l, f in zip(stats.hidden, frac) if np.isfinite(f) and f > limit]
        if not bad:
            continue
        worst = int(np.nanargmax(frac))
        ev = dict(step=int(step), layers=bad, fractions={l: float(f) for l, f in zip(stats.hidden, frac)},
                  worst_layer=stats.hidden[worst], worst_fraction=float(frac[worst]))
        where = f"{len(bad)} of {len(stats.hidden)} hidden layers ({', '.join(bad)})"
        if dead:
            return [_verdict(
                "dead_relus",
                f"dead ReLUs {_when(stats, step)}: in {where} more than {DEAD_FRAC:.0%} of the outputs are 0 "
                f"(worst {stats.hidden[worst]}: {frac[worst]:.0%}; a healthy layer has about half)",
                ev, f"zero fraction > {DEAD_FRAC:.0%}")]
        return [_verdict(
            "saturated",
            f"saturated units {_when(stats, step)}: in {where} more than {SATURATED_FRAC:.0%} of the units sit "
            f"where the slope is < 5 % of its peak (worst {stats.hidden[worst]}: {frac[worst]:.0%})",
            ev, f"saturated fraction > {SATURATED_FRAC:.0%}")]
    return []


def _divergence(run_row: Any) -> List[Verdict]:
    step = _get(run_row, "first_nonfinite_step")
    if _get(run_row, "status") != "diverged" and step is None:
        return []
    layer, phase = _get(run_row, "first_nonfinite_layer", "?"), _get(run_row, "first_nonfinite_phase", "?")
    tensor = _get(run_row, "first_nonfinite_tensor", "?")
    ev = dict(step=None if step is None else int(step), layer=layer, phase=phase, tensor=tensor)
    where = f"at step {int(step)}, {phase} phase, layer {layer} ({tensor})" if step is not None else \
        "(no location recorded)"
    return [_verdict("diverged", f"the run diverged: first NaN/Inf {where}", ev, "any NaN/Inf")]


def _loss_rise(metrics: pd.DataFrame) -> List[Verdict]:
    if metrics is None or not len(metrics):
        return []
    tr = metrics[(metrics.split == "train") & (metrics.metric == "loss")].sort_values("step")
    tr = tr[np.isfinite(tr.value)]
    if len(tr) < 2 or tr.step.iloc[0] != 0:
        return []
    l0, l1, s1 = float(tr.value.iloc[0]), float(tr.value.iloc[1]), int(tr.step.iloc[1])
    if l1 <= l0 * (1.0 + LOSS_RISE):
        return []
    return [_verdict(
        "learning_rate_too_large",
        f"the training loss rose from {_g(l0)} at step 0 to {_g(l1)} at step {s1} (+{l1 / l0 - 1:.0%}): "
        f"the learning rate is likely too large for this initialization",
        dict(step=s1, loss_step0=l0, loss=l1, rise=l1 / l0 - 1.0), f"rise > {LOSS_RISE:.0%}")]


def diagnose(run_row: Any, layer_stats: pd.DataFrame, metrics: pd.DataFrame) -> List[Verdict]:
    """The verdicts of one run (its ``runs`` row as a dict or Series, and its own tables);
    ``healthy`` when no check fires."""
    status = _get(run_row, "status")
    if status not in FINISHED:  # failed, running, interrupted, damaged: nothing finished to judge
        error = _get(run_row, "error")
        return [Verdict(status, "error" if status == "failed" else "info",
                        f"the run {'failed' if status == 'failed' else 'has not finished'}"
                        + (f": {error}" if error else ""), {"status": status, "error": error}, "")]
    stats = _Stats(layer_stats)
    out = _divergence(run_row)
    out += _ratio_checks(stats)
    out += _flat_unit_checks(stats, _get(run_row, "activation"))
    out += _loss_rise(metrics)
    if out:
        return out
    if not stats.hidden and (metrics is None or not len(metrics)):
        return [Verdict("unmeasured", "info", "no layer statistics or metrics to judge (probes disabled?)", {}, "")]
    ev: Dict[str, Any] = {}
    if len(stats.hidden) >= 2 and stats.steps:
        g = stats.series(stats.steps[0], "backprop_grad", "var")
        a = stats.series(stats.steps[0], "activation", "std")
        ev = dict(gradient_ratio=float(g[0] / g[-1]) if g[-1] else float("nan"),
                  activation_ratio=float(a[-1] / a[0]) if a[0] else float("nan"))
    msg = "no problem found: gradients and activations stay within a factor " \
          f"{GRADIENT_RATIO:g} across layers, no saturated or dead layer, no divergence"
    if ev:
        msg += f" (gradient ratio {_g(ev['gradient_ratio'])}, activation ratio {_g(ev['activation_ratio'])})"
    return [_verdict("healthy", msg, ev, "")]


def _split(df: Optional[pd.DataFrame]) -> Dict[str, pd.DataFrame]:
    if df is None or not len(df) or "run_id" not in df:
        return {}
    return dict(tuple(df.groupby("run_id", sort=False)))


def annotate(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The ``runs`` table with two more columns: ``verdicts`` (short names joined by ', ') and
    ``verdict_text`` (each verdict in plain words with its evidence and threshold, '; '-joined)."""
    runs = tables["runs"].copy()
    ls, m = _split(tables.get("layer_stats")), _split(tables.get("metrics"))
    empty = pd.DataFrame(columns=["run_id", "step", "layer", "layer_index", "tensor", "stat", "value"])
    names, texts = [], []
    for row in runs.to_dict("records"):
        rid = row.get("run_id")
        v = diagnose(row, ls.get(rid, empty), m.get(rid))
        names.append(", ".join(x.name for x in v))
        texts.append("; ".join(x.text() for x in v))
    runs["verdicts"] = names
    runs["verdict_text"] = texts
    return runs


def _final_error(runs: pd.DataFrame, metrics: Optional[pd.DataFrame], split: str) -> pd.Series:
    col = f"final_{split}_error"
    if col in runs:
        return pd.to_numeric(runs[col], errors="coerce")
    if metrics is None or not len(metrics):
        return pd.Series(np.nan, index=runs.index)
    m = metrics[(metrics.split == split) & (metrics.metric == "error")].sort_values("step")
    last = m.groupby("run_id").value.last()
    return runs.run_id.map(last)


def ranking(tables: Mapping[str, pd.DataFrame], split: str = "test") -> pd.DataFrame:
    """Initializers ranked by final ``split`` error within each setting, with their verdicts beside
    them. An entry is an initializer with its parameters (``init`` and every varying ``init.*``
    column); a setting is every other config column (:func:`setting_columns`: dataset, model, depth,
    width, activation, optimizer, ... and any other key that varies, ``optimizer.momentum``). Errors
    are means over seeds, the only thing averaged; a run without a final error (diverged) counts in
    ``diverged`` and ranks last when every run of the entry has none.

    Columns: the setting columns, ``architecture`` (e.g. "mlp 5x1000 tanh"), ``rank``, ``init``,
    the varying ``init.*`` columns, ``error`` (mean), ``error_std``, ``runs``, ``diverged``,
    ``verdicts`` (names with counts over seeds, most frequent first), ``verdict_text`` (the plain
    words of the first run of the best seed).
    """
    runs = tables["runs"]
    if "verdicts" not in runs:
        runs = annotate(tables)
    runs = runs.copy()
    runs["_error"] = _final_error(runs, tables.get("metrics"), split)
    entry = entry_columns(runs)
    setting = setting_columns(runs)
    schema.check_seeds_only(runs, setting + entry)
    rows = []
    for key, g in runs.groupby(setting + entry, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        counts: Dict[str, int] = {}  # insertion order = the order diagnose() reports them
        for names in g.verdicts:
            for n in filter(None, (s.strip() for s in str(names).split(","))):
                counts[n] = counts.get(n, 0) + 1
        n = len(g)
        order = list(counts)
        summary = ", ".join(f"{k}" if c == n else f"{k} ({c}/{n})"
                            for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], order.index(kv[0]))))
        err = g._error.dropna()
        best = g.loc[g._error.idxmin()] if len(err) else g.iloc[0]
        status = g.status if "status" in g else pd.Series([], dtype=object)
        rows.append({**dict(zip(setting + entry, key)), "error": err.mean() if len(err) else np.nan,
                     "error_std": err.std(ddof=0) if len(err) > 1 else 0.0 if len(err) else np.nan,
                     "runs": n, "diverged": int((status == "diverged").sum()),
                     "verdicts": summary, "verdict_text": best.verdict_text})
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    out["architecture"] = out.apply(_architecture, axis=1)
    ranked = []
    for _, g in out.groupby(setting, dropna=False, sort=False) if setting else [(None, out)]:
        g = g.sort_values("error", na_position="last").copy()
        g.insert(0, "rank", np.arange(1, len(g) + 1))
        ranked.append(g)
    out = pd.concat(ranked, ignore_index=True)
    cols = setting + ["architecture", "rank", *entry, "error", "error_std", "runs", "diverged", "verdicts",
                      "verdict_text"]
    return out[cols]


def entry_columns(runs: pd.DataFrame) -> List[str]:
    """What :func:`ranking` ranks: ``init`` and the group columns that parametrise it (``init.*``)."""
    return ["init"] + [c for c in schema.group_columns(runs) if c.startswith("init.") or c == "init_name"]


def setting_columns(runs: pd.DataFrame) -> List[str]:
    """What :func:`ranking` ranks within: the identity columns that describe the net and its
    training (those with a value), then every other varying config column but the entry's."""
    skip = {"experiment", "seed", "init.bias", *entry_columns(runs)}
    fixed = [c for c in schema.CONFIG_COLUMNS if c not in skip and c in runs and runs[c].notna().any()]
    return fixed + [c for c in schema.group_columns(runs) if c not in fixed and c not in skip]


def _architecture(row: pd.Series) -> str:
    parts = [str(row.get("model", "")), f"{row.get('depth')}x{row.get('width')}" if "depth" in row else "",
             str(row.get("activation", "")), f"on {row['dataset']}" if "dataset" in row else ""]
    return " ".join(p for p in parts if p and p != "None")
