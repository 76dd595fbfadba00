"""The plain-words answer to the question the suite started from, built from a sweep's tables.

    "I am migrating my Caffe network to TensorFlow, but it does not have Xavier initialization.
     I use truncated_normal, but that seems to make it a lot harder to train."

:func:`answer` reads the collected tables (``runs``, ``layer_stats``, ``metrics``, ``events``;
see :mod:`initsuite.sweep`) and returns :class:`Claim` s, each with the numbers it rests on:

* ``trains_like`` -- per net: which initializers train it as well as caffe_xavier or better (seed-mean
  final test error at most ``max(MATCH_POINTS, 2 sd of caffe_xavier's)`` percentage points worse; the
  mean is over the runs that finished, diverged runs are counted beside it), which do not, and the
  TensorFlow-side one closest to it (by error, then by the step-0 per-layer activation variances).
* ``xavier_vs_glorot`` -- per net: glorot_uniform / caffe_xavier ratios of the step-0 variance of the
  weights, activations and back-propagated gradients dC/ds, layer by layer. Caffe's xavier filler
  has Var[W] = 1/fan_in, Glorot's 2/(fan_in + fan_out): equal only where fan_in = fan_out.
* ``truncated_normal`` -- per truncated-normal preset: the measured Var[W] (= 0.7737 stddev^2 in every
  layer, whatever its fan), hence sigma_w^2 = 0.7737 fan_in stddev^2, and its mean-field phase
  (:func:`initsuite.analysis.theory.mean_field`) in the MLPs' hidden layers, where fan_in = width; the fan-in
  at which that stddev is critical (sigma_w^2 = 2 for ReLU, 1 for tanh); and the measured step-0
  variance ratios across depth.
* ``first_nan`` -- per ReLU net: for each initializer that diverged, the first step, phase, layer
  and tensor with a NaN/Inf (earliest over seeds; the runs table, else the events table), and
  the initializers that never diverged.

Only seeds are averaged; every other config column separates nets. No TensorFlow.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from initsuite.analysis import theory
from initsuite.setup.initializers import CAFFE_TO_TF_THREAD, TRUNCATED_VARIANCE_FACTOR
from initsuite.tables import batch_rows

REFERENCE = "caffe_xavier"  # what the Caffe net was trained with
GLOROT = "glorot_uniform"  # what "Xavier" is called in Keras / TF2
TRUNCATED = "truncated_normal"  # registry name of every fixed-stddev truncated normal preset
MATCH_POINTS = 1.0  # test-error points (%) an init may be worse than caffe_xavier and still "train like" it
# Config columns that tell nets apart (all but init and seed: only seeds are averaged).
NET_COLUMNS = ("dataset", "model", "depth", "width", "activation", "optimizer", "lr", "batch_size", "epochs")
QUESTION = ("I am migrating my Caffe network to TensorFlow, but it does not have Xavier initialization. "
            "I use truncated_normal, but that seems to make it a lot harder to train.")


@dataclass
class Claim:
    key: str  # trains_like | xavier_vs_glorot | truncated_normal | first_nan
    net: str  # the net it is about ("" for sweep-wide claims)
    text: str  # plain words with the numbers
    evidence: Dict[str, Any] = field(default_factory=dict)
    table: Optional[pd.DataFrame] = None  # the per-layer or per-init numbers behind it


@dataclass
class Answer:
    claims: List[Claim]

    def by_key(self, key: str) -> List[Claim]:
        return [c for c in self.claims if c.key == key]

    def markdown(self) -> str:
        out = ["## The answer", "", f"> {QUESTION}", ""]
        for title, key in TOPICS:
            cs = self.by_key(key)
            if cs:
                out += [f"**{title}**", ""] + [f"- {c.text}" for c in cs] + [""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        parts = ["<section id='answer'><h2>The answer</h2>", f"<blockquote>{e(QUESTION)}</blockquote>"]
        for title, key in TOPICS:
            cs = self.by_key(key)
            if not cs:
                continue
            parts.append(f"<h3>{e(title)}</h3><ul>")
            for c in cs:
                parts.append(f"<li class='claim' data-key='{e(c.key)}'>{e(c.text)}")
                if c.table is not None and len(c.table):
                    parts.append("<details><summary>numbers</summary>" + c.table.to_html(
                        index=False, border=0, classes="t", na_rep="", float_format="{:.4g}".format) + "</details>")
                parts.append("</li>")
            parts.append("</ul>")
        parts.append("</section>")
        return "\n".join(parts)


TOPICS = [("Which initializer trains the converted net like Caffe's xavier", "trains_like"),
          ("caffe_xavier is not glorot_uniform", "xavier_vs_glorot"),
          ("What truncated_normal does to each layer, and why", "truncated_normal"),
          ("Where the first NaN appears in the ReLU nets", "first_nan")]


# --------------------------------------------------------------------------- helpers


def applies(runs: pd.DataFrame) -> bool:
    """Whether a sweep has this question's initializers (the report then opens with the answer)."""
    if runs is None or not len(runs):
        return False
    names = set(runs.get("init_name", runs.get("init", pd.Series(dtype=object))).dropna().astype(str))
    return bool(names & set(CAFFE_TO_TF_THREAD))


def _net_cols(runs: pd.DataFrame) -> List[str]:
    return [c for c in NET_COLUMNS if c in runs.columns]


def net_label(row: Mapping[str, Any]) -> str:
    """'caffe_lenet relu', 'mlp 10x256 tanh' (dataset and optimizer only when given)."""
    model = str(row.get("model"))
    arch = f"mlp {int(row['depth'])}x{int(row['width'])}" if model == "mlp" and _num(row.get("depth")) else model
    return f"{arch} {row.get('activation')}".strip()


def _num(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _g(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _nets(runs: pd.DataFrame):
    """(label, runs of that net) in the order caffe_lenet, tf_deep_mnist, other fixed nets, MLPs by depth."""
    cols = _net_cols(runs)
    if not cols:
        yield "", runs
        return
    groups = list(runs.groupby(cols, dropna=False, sort=False))
    order = {"caffe_lenet": 0, "tf_deep_mnist": 1}

    def key(item):
        values, _ = item
        row = dict(zip(cols, values if isinstance(values, tuple) else (values,)))
        return (order.get(str(row.get("model")), 2 if row.get("model") != "mlp" else 3),
                float(row.get("depth") or 0), str(row.get("activation")), str(values))

    for values, g in sorted(groups, key=key):
        row = dict(zip(cols, values if isinstance(values, tuple) else (values,)))
        yield net_label(row), g


def init_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Per init of one net: runs, diverged, mean and sd over seeds of the final test error (finished runs)."""
    rows = []
    for init, g in runs.groupby("init"):
        ok = g[(g.status == "done") & g.final_test_error.notna()]
        rows.append({"init": init, "runs": len(g), "diverged": int((g.status == "diverged").sum()),
                     "test_error": float(ok.final_test_error.mean()) if len(ok) else math.nan,
                     "test_error_sd": float(ok.final_test_error.std(ddof=1)) if len(ok) > 1 else 0.0})
    return pd.DataFrame(rows)


def step0_per_layer(layer_stats: pd.DataFrame, run_ids: Sequence[str], stat: str = "var") -> pd.DataFrame:
    """Seed-mean step-0 ``stat`` per (layer, tensor) over the given runs: columns layer, layer_index,
    weight, activation, backprop_grad (NaN where not measured)."""
    layer_stats = batch_rows(layer_stats)  # the fixed probe's rows
    ls = layer_stats[layer_stats.run_id.isin(list(run_ids)) & (layer_stats.stat == stat)
                     & layer_stats.tensor.isin(["weight", "activation", "backprop_grad", "preactivation"])]
    if not len(ls):
        return pd.DataFrame(columns=["layer", "layer_index", "weight", "activation", "backprop_grad"])
    first = ls.groupby("run_id").step.transform("min")
    ls = ls[ls.step == first]
    t = ls.groupby(["layer", "layer_index", "tensor"]).value.mean().unstack("tensor").reset_index()
    for c in ("weight", "activation", "backprop_grad", "preactivation"):
        if c not in t:
            t[c] = np.nan
    return t.sort_values("layer_index").reset_index(drop=True)


def _log_distance(a: pd.DataFrame, b: pd.DataFrame, tensor: str = "activation") -> float:
    """Mean |log10| ratio of two inits' step-0 per-layer variances (hidden layers both measured)."""
    m = a[["layer", tensor]].merge(b[["layer", tensor]], on="layer", suffixes=("_a", "_b")).dropna()
    m = m[(m[f"{tensor}_a"] > 0) & (m[f"{tensor}_b"] > 0)]
    if not len(m):
        return math.nan
    return float(np.mean(np.abs(np.log10(m[f"{tensor}_a"] / m[f"{tensor}_b"]))))


# --------------------------------------------------------------------------- the four claims


def _trains_like(label: str, runs: pd.DataFrame, ls: pd.DataFrame) -> Optional[Claim]:
    errs = init_errors(runs)
    if REFERENCE not in set(errs.init):
        return None
    ref = errs.set_index("init").loc[REFERENCE]
    if not np.isfinite(ref.test_error):
        return Claim("trains_like", label, f"On {label} caffe_xavier itself did not finish training "
                     f"({int(ref.diverged)} of {int(ref.runs)} runs diverged): no reference to match.",
                     {"reference_error": math.nan}, errs)
    tol = max(MATCH_POINTS / 100.0, 2.0 * float(ref.test_error_sd or 0.0))
    ref_stats = step0_per_layer(ls, runs[runs.init == REFERENCE].run_id)
    errs["delta_points"] = 100 * (errs.test_error - ref.test_error)
    errs["step0_act_log10_distance"] = [
        _log_distance(step0_per_layer(ls, runs[runs.init == i].run_id), ref_stats) for i in errs.init]
    errs["trains_like_caffe_xavier"] = errs.test_error <= ref.test_error + tol  # as well or better
    others = errs[errs.init != REFERENCE]
    like = others[others.trains_like_caffe_xavier].sort_values("test_error")
    unlike = others[~others.trains_like_caffe_xavier].sort_values("test_error", na_position="last")

    def describe(r) -> str:
        if not np.isfinite(r.test_error):
            return f"{r.init} (diverged in {r.diverged}/{r.runs})"
        div = f", {r.diverged}/{r.runs} diverged" if r.diverged else ""
        return f"{r.init} {_pct(r.test_error)}{div}"

    tf_side = others[~others.init.isin([i for i in CAFFE_TO_TF_THREAD if i.startswith("caffe_")])
                     & others.test_error.notna()]
    pick = None
    if len(tf_side):
        pick = tf_side.assign(_d=tf_side.step0_act_log10_distance.fillna(np.inf),
                              _e=tf_side.delta_points.abs()).sort_values(["_e", "_d"]).iloc[0]
    seeds = int(ref.runs)
    text = (f"On {label}, caffe_xavier reached {_pct(ref.test_error)} test error (mean of {seeds} "
            f"seed{'s' if seeds != 1 else ''}). As well or better (at most {100 * tol:.1f} points worse): "
            f"{', '.join(describe(r) for r in like.itertuples()) or 'none'}. "
            f"Worse: {', '.join(describe(r) for r in unlike.itertuples()) or 'none'}.")
    if pick is not None:
        near = "" if abs(pick.delta_points) <= 100 * tol else f", more than {100 * tol:.1f} points away"
        text += f" The TensorFlow-side initializer closest to it is {pick.init} ({pick.delta_points:+.2f} points{near}"
        text += (f"; step-0 activation variances within a factor {10 ** pick.step0_act_log10_distance:.2g} per "
                 f"layer on average)." if np.isfinite(pick.step0_act_log10_distance) else ").")
    evidence = {"reference_error": float(ref.test_error), "tolerance": tol, "like": list(like.init),
                "unlike": list(unlike.init), "closest_tf": None if pick is None else str(pick.init),
                "errors": dict(zip(errs.init, errs.test_error))}
    return Claim("trains_like", label, text, evidence, errs)


def _xavier_vs_glorot(label: str, runs: pd.DataFrame, ls: pd.DataFrame) -> Optional[Claim]:
    inits = set(runs.init)
    if not {REFERENCE, GLOROT} <= inits:
        return None
    x = step0_per_layer(ls, runs[runs.init == REFERENCE].run_id)
    g = step0_per_layer(ls, runs[runs.init == GLOROT].run_id)
    if not len(x) or not len(g):
        return None
    m = x.merge(g, on=["layer", "layer_index"], suffixes=("_xavier", "_glorot")).sort_values("layer_index")
    t = pd.DataFrame({"layer": m.layer})
    for c in ("weight", "activation", "backprop_grad"):
        t[f"{c}_var_ratio"] = (m[f"{c}_glorot"] / m[f"{c}_xavier"]).to_numpy()
    w = t.weight_var_ratio.dropna()
    parts = [f"On {label} at step 0, glorot_uniform's weights have {_runs_of(t, 'weight_var_ratio')} "
             f"caffe_xavier's variance"]
    if t.activation_var_ratio.notna().any():
        parts.append(f"activation variance {_runs_of(t, 'activation_var_ratio')}")
    if t.backprop_grad_var_ratio.notna().any():
        parts.append(f"back-propagated gradient variance {_runs_of(t, 'backprop_grad_var_ratio')}")
    differs = bool(len(w) and (np.abs(np.log(w)) > math.log(1.1)).any())
    verdict = ("Caffe's xavier is LeCun-uniform (Var 1/fan_in), not Glorot's 2/(fan_in+fan_out): porting it as "
               "glorot_uniform changes every layer whose fan-in and fan-out differ; its exact TensorFlow equivalent "
               "is lecun_uniform (VarianceScaling(1, 'fan_in', 'uniform'))." if differs else
               "Here the two agree within 10% in every layer (fan_in = fan_out).")
    evidence = {"weight_var_ratio": dict(zip(t.layer, t.weight_var_ratio)),
                "activation_var_ratio": dict(zip(t.layer, t.activation_var_ratio)),
                "backprop_grad_var_ratio": dict(zip(t.layer, t.backprop_grad_var_ratio)), "differs": differs}
    return Claim("xavier_vs_glorot", label, "; ".join(parts) + ". " + verdict, evidence, t)


def _runs_of(t: pd.DataFrame, col: str, rel: float = 0.03) -> str:
    """'conv_00 0.0952x, dense_01-dense_09 1x': per layer, consecutive layers within ``rel`` merged."""
    d = t.dropna(subset=[col])
    groups: List[List] = []
    for layer, v in zip(d.layer, d[col]):
        if groups and abs(v / groups[-1][2] - 1.0) <= rel:
            groups[-1][1] = layer
        else:
            groups.append([layer, layer, v])
    return ", ".join(f"{a}{'' if a == b else '-' + b} {v:.3g}x" for a, b, v in groups)


def _truncated_normal(label: str, runs: pd.DataFrame, ls: pd.DataFrame) -> List[Claim]:
    if "init_name" not in runs.columns:
        return []
    out = []
    tn = runs[runs.init_name == TRUNCATED]
    by_run = dict(tuple(ls[ls.run_id.isin(set(tn.run_id))].groupby("run_id"))) if len(tn) else {}
    for init, g in tn.groupby("init"):
        stats = [by_run[r] for r in g.run_id if r in by_run]
        if not stats:
            continue
        per = step0_per_layer(ls, g.run_id)
        var_w = float(np.nanmedian(per.weight)) if len(per) else math.nan
        if not np.isfinite(var_w) or var_w <= 0:
            continue
        stddev = math.sqrt(var_w / TRUNCATED_VARIANCE_FACTOR)
        row = g.iloc[0]
        act = str(row.get("activation"))
        crit = {"relu": 2.0, "tanh": 1.0}.get(act)
        text = (f"{init} on {label}: measured Var[W] = {var_w:.3g} in every layer (spread {_spread(per.weight)}), i.e. "
                f"stddev {stddev:.3g} cut at 2 sd keeps 0.7737 of stddev^2, whatever the layer's fan-in; so "
                f"sigma_w^2 = 0.7737 fan_in stddev^2 grows with fan-in")
        ev: Dict[str, Any] = {"weight_var": var_w, "stddev": stddev}
        if crit is not None:
            fan_c = crit / (TRUNCATED_VARIANCE_FACTOR * stddev ** 2)
            text += f" and is critical for {act} (sigma_w^2 = {crit:g}) only at fan_in = {fan_c:.0f}"
            ev["critical_fan_in"] = fan_c
        if row.get("model") == "mlp" and _num(row.get("width")):
            sws = [theory.measured_sigma_w2(s, "mlp", int(row["width"])).dropna() for s in stats]
            sw = float(np.median(np.concatenate([s.to_numpy() for s in sws]))) if any(len(s) for s in sws) else math.nan
            if np.isfinite(sw):
                bias = float(np.median([theory.run_bias(r, by_run.get(r["run_id"]))
                                        for r in g.to_dict("records")]))
                mf = theory.mean_field(act, sw, 0.0, bias)
                text += (f". In its {int(row['width'])}-unit hidden layers sigma_w^2 = {sw:.3g} (bias {bias:g}): the "
                         f"{mf.phase} phase, chi_1 = {_g(mf.chi1)} per layer, trainable depth ~{_g(mf.trainable_depth)}")
                ev.update(sigma_w2=sw, bias=bias, phase=mf.phase, chi1=mf.chi1, trainable_depth=mf.trainable_depth)
        hid = per.dropna(subset=["activation"])
        if len(hid) >= 2 and hid.activation.iloc[0] > 0:
            r_act = float(hid.activation.iloc[-1] / hid.activation.iloc[0])
            text += f"; measured at step 0, activation variance top/first hidden layer = {r_act:.3g}"
            ev["act_var_top_over_first"] = r_act
            gr = hid.dropna(subset=["backprop_grad"])
            if len(gr) >= 2 and gr.backprop_grad.iloc[-1] > 0:
                r_g = float(gr.backprop_grad.iloc[0] / gr.backprop_grad.iloc[-1])
                text += f", gradient variance first/top = {r_g:.3g}"
                ev["grad_var_first_over_top"] = r_g
        errs = init_errors(g)
        e = errs.iloc[0]
        text += (f"; final test error {_pct(e.test_error)}" if np.isfinite(e.test_error) else "") + \
                (f", {e.diverged}/{e.runs} runs diverged" if e.diverged else "") + "."
        ev.update(test_error=float(e.test_error), diverged=int(e.diverged))
        out.append(Claim("truncated_normal", label, text, ev, per))
    return out


def _spread(values: pd.Series) -> str:
    v = values.dropna()
    v = v[v > 0]
    return f"x{float(v.max() / v.min()):.2f}" if len(v) else "n/a"


def _first_nan(label: str, runs: pd.DataFrame, events: pd.DataFrame) -> Optional[Claim]:
    if not len(runs) or str(runs.activation.iloc[0]) != "relu":
        return None
    rows = []
    for init, g in runs.groupby("init"):
        bad = g[(g.status == "diverged") | g.get("first_nonfinite_step", pd.Series(index=g.index, dtype=float)).notna()]
        firsts = []
        for r in bad.to_dict("records"):
            step, layer, phase, tensor = (r.get("first_nonfinite_step"), r.get("first_nonfinite_layer"),
                                          r.get("first_nonfinite_phase"), r.get("first_nonfinite_tensor"))
            if not _num(step) and events is not None and len(events):
                ev = events[(events.run_id == r["run_id"]) & (events.kind == "first_nonfinite")]
                if len(ev):
                    e0 = ev.sort_values("step").iloc[0]
                    step, layer, phase, tensor = e0.step, e0.layer, e0.phase, e0.tensor
            if _num(step):
                firsts.append((int(step), str(layer), str(phase), str(tensor)))
        first = min(firsts) if firsts else None
        rows.append({"init": init, "runs": len(g), "diverged": len(bad),
                     "first_step": first[0] if first else np.nan, "phase": first[2] if first else None,
                     "layer": first[1] if first else None, "tensor": first[3] if first else None})
    t = pd.DataFrame(rows).sort_values(["first_step", "init"], na_position="last")
    div = t[t.diverged > 0]
    clean = t[t.diverged == 0]
    if not len(div):
        text = f"On {label} no run produced a NaN/Inf ({int(t.runs.sum())} runs, {len(t)} initializers)."
    else:
        text = f"On {label}: " + "; ".join(
            f"{r.init} diverged in {r.diverged}/{r.runs} runs, first NaN/Inf at step {int(r.first_step)} "
            f"({r.phase} phase, layer {r.layer}, {r.tensor})" if np.isfinite(r.first_step) else
            f"{r.init} diverged in {r.diverged}/{r.runs} runs (no location recorded)" for r in div.itertuples())
        text += f". Never: {', '.join(clean.init) or 'none'}."
    ev = {"diverged": {r.init: {"step": r.first_step, "phase": r.phase, "layer": r.layer, "runs": r.diverged}
                       for r in div.itertuples()}, "never": list(clean.init)}
    return Claim("first_nan", label, text, ev, t)


def answer(tables: Mapping[str, pd.DataFrame]) -> Answer:
    """Every claim the tables support, in the order of :data:`TOPICS`, one per net where it applies."""
    runs = tables.get("runs", pd.DataFrame())
    ls = batch_rows(tables.get("layer_stats", pd.DataFrame()))  # the fixed probe's rows
    events = tables.get("events", pd.DataFrame())
    if not len(runs):
        return Answer([])
    if not len(ls):
        ls = pd.DataFrame(columns=["run_id", "step", "layer", "layer_index", "tensor", "stat", "value"])
    claims: List[Claim] = []
    nets = list(_nets(runs))
    for label, g in nets:
        c = _trains_like(label, g, ls)
        if c:
            claims.append(c)
    for label, g in nets:
        c = _xavier_vs_glorot(label, g, ls)
        if c:
            claims.append(c)
    for label, g in nets:
        claims += _truncated_normal(label, g, ls)
    for label, g in nets:
        c = _first_nan(label, g, events)
        if c:
            claims.append(c)
    return Answer(claims)


FIGURE_NAME = "answer_variance_by_layer"


def figures(tables: Mapping[str, pd.DataFrame], out_dir, formats: Sequence[str] = ("png", "pdf")) -> list:
    """The answer's figure, first in the report: per-layer variance of activations and back-propagated
    gradients at step 0, the truncated normals against caffe_xavier and glorot_uniform, on the deepest
    MLP of the sweep (else every net), one column per activation. Empty when nothing to draw."""
    from initsuite.analysis import plots

    runs, ls = tables.get("runs"), batch_rows(tables.get("layer_stats"))
    if not applies(runs) or ls is None or not len(ls) or "init" not in ls.columns:
        return []
    keep = set(runs.init[(runs.get("init_name", runs.init) == TRUNCATED) | runs.init.isin([REFERENCE, GLOROT])])
    d = ls[ls.init.isin(keep)]
    if "model" in d.columns and (d.model == "mlp").any():
        d = d[d.model == "mlp"]
    if not len(d) or not (d.tensor == "activation").any():
        return []
    fig = plots.layer_profile(d, title=f"truncated_normal against Xavier: per-layer variance at step 0\n"
                                       f"({plots.describe(d)})")
    return [plots.FigureFile(FIGURE_NAME, "The answer: truncated_normal against Xavier, per layer",
                             "Variance of activations and back-propagated gradients dC/ds per hidden layer before "
                             "any update: TensorFlow's truncated normals (fixed stddev) against Caffe's xavier and "
                             "glorot_uniform (log scale; band = min to max over seeds).",
                             plots.save(fig, out_dir, FIGURE_NAME, formats), group="answer")]


def write(tables: Mapping[str, pd.DataFrame], sweep_dir) -> Optional[str]:
    """For a sweep with this question's initializers (:func:`applies`): write ``<sweep>/answer.md`` and
    return the answer's HTML section for the top of the report; otherwise None."""
    from pathlib import Path

    from initsuite.atomic import atomic_write_text

    if not applies(tables.get("runs")):
        return None
    a = answer(tables)
    if not a.claims:
        return None
    atomic_write_text(Path(sweep_dir) / "answer.md", a.markdown() + "\n")
    return a.html()
