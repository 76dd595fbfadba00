"""The owner of the suite's tables: their names, columns, statuses and config columns.

Every figure, verdict, summary and notebook is drawn from these tables, so what a column
means is decided here and imported everywhere else.

**Config columns.** Each collected table carries a run's *identity columns*
(:data:`IDENTITY_COLUMNS`: experiment, dataset, model, depth, width, init, ..., seed) plus
every other config key that *varies across the runs being compared*, under its dotted name
(``init.stddev``, ``optimizer.momentum``, ``model.pool_every``, ``probes.batch_size``).
They are computed when the runs are gathered (:func:`config_frame`), by flattening each
run's config (:func:`flatten`; only what the run computes: output paths, progress bars,
``force`` and Hydra's own keys are left out, see :func:`identity_dict`).

**Only seeds are averaged.** :func:`group_columns` is every config column present that
varies, except ``seed``; anything that summarises runs groups by it (summary, figures,
verdicts, Table 1, report), and :func:`check_seeds_only` raises when a group still mixes
configurations. :func:`series` names each group for legends: the initializer plus the
parameters that vary among its runs, ``truncated_normal (stddev=0.5)``.

Pure pandas: nothing here imports TensorFlow, Hydra or matplotlib.
"""

from __future__ import annotations

import hashlib
import json

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import pandas as pd

# --------------------------------------------------------------------------- names

# What status.json says: running -> done | diverged | failed | interrupted (SIGTERM/SIGUSR1:
# a last checkpoint was written; the relaunch resumes from it).
STATUSES = ("running", "done", "diverged", "failed", "interrupted")
FINISHED = ("done", "diverged")  # a relaunched sweep skips these
# Never in status.json: the runs table's status of a folder collect cannot read (its
# `reason` column says why; the next launch reruns it) ...
DAMAGED = "damaged"
# ... and a launcher's outcome for a run another live process holds (initsuite.run.lease).
HELD = "held"

# Which batch a layer_stats / histograms row measured: the training batch, inside the train step
# (initsuite.measure.step_stats, every probes.train_every steps), or the fixed probe batch.
TRAIN, PROBE = "train", "probe"
BATCHES = (TRAIN, PROBE)
LAYER_STATS_COLUMNS = ["run_id", "step", "epoch", "batch", "layer", "layer_index", "tensor", "stat", "value"]
METRICS_COLUMNS = ["run_id", "step", "epoch", "split", "metric", "value"]
HISTOGRAM_COLUMNS = ["run_id", "step", "epoch", "batch", "layer", "layer_index", "tensor", "bin", "left", "right",
                     "count"]
EVENTS_COLUMNS = ["run_id", "step", "epoch", "phase", "layer", "layer_index", "tensor", "kind", "detail"]
# The per-run tables every run folder writes (``<run>/<name>.parquet``).
TABLE_COLUMNS = {
    "layer_stats": LAYER_STATS_COLUMNS,
    "metrics": METRICS_COLUMNS,
    "histograms": HISTOGRAM_COLUMNS,
    "events": EVENTS_COLUMNS,
}
RUN_TABLES = tuple(TABLE_COLUMNS)  # layer_stats, metrics, histograms, events
TABLES = ("runs", *RUN_TABLES)  # a sweep's collected tables: one runs row per run, then the per-run tables

# Columns of the runs table after run_id and the config columns, from each run's status.json.
RUN_FIELDS = ["status", "first_nonfinite_step", "first_nonfinite_layer", "first_nonfinite_phase",
              "first_nonfinite_tensor",
              *[f"final_{split}_{metric}" for split in ("train", "valid", "test") for metric in ("loss", "error")],
              "steps", "total_steps", "wall_s", "train_s", "device", "host", "started", "updated", "error",
              # the data actually used (initsuite.setup.data.Resolved.describe) and its split sizes
              "data", "n_train", "n_valid", "n_test"]
# Columns collect adds: who holds an unfinished run now ("host:pid" of a live lease, else
# empty) and why a `damaged` folder could not be read.
COLLECT_FIELDS = ["held_by", "reason"]
INT_RUN_FIELDS = ("first_nonfinite_step", "steps", "total_steps", "n_train", "n_valid", "n_test")
FLOAT_RUN_FIELDS = tuple(c for c in RUN_FIELDS if c.startswith("final_")) + ("wall_s", "train_s")

# The role of a kernel layer in the ``layer`` tables' rows: hidden layers are followed by an activation,
# the output layer (the last kernel layer, the logits) is not a hidden layer in any figure, verdict or theory.
HIDDEN, OUTPUT = "hidden", "output"

# --------------------------------------------------------------------------- config columns

# Identity column -> the dotted config key it shows (``model`` shows the builder of a custom model,
# ``init`` the preset label, else the initializer name).
IDENTITY_COLUMNS: Dict[str, str] = {
    "experiment": "experiment",
    "dataset": "dataset.name",
    # where the examples came from (dataset.source=auto is pinned before a run): full data or the embedded sample
    "data_source": "dataset.source",
    "model": "model.name",
    "depth": "model.depth",
    "width": "model.width",
    "init": "init.label",
    "init_name": "init.name",
    "activation": "activation.name",
    "optimizer": "optimizer.name",
    "lr": "optimizer.lr",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "seed": "seed",
    # theory needs every run's constant bias (initsuite.analysis.theory.run_bias), varying or not
    "init.bias": "init.bias",
    # the axis a sweep selects along and by which metric (initsuite.analysis.selection), or None
    "tune_axis": "tune.axis",
    "tune_metric": "tune.metric",
}
CONFIG_COLUMNS = list(IDENTITY_COLUMNS)
# Dotted keys the identity columns already show.
_SHOWN = set(IDENTITY_COLUMNS.values()) | {"model.builder"}
# Config keys that change where or how loudly a run reports, not what it computes.
ID_EXCLUDED = {"paths", "force", "experiment", "extra", "hydra", "tune"}
ID_EXCLUDED_TRAIN = {"progress", "threads", "nonfinite_check_every", "lease_heartbeat_s", "lease_stale_s",
                     "checkpoint_every", "checkpoint_minutes"}
# Identity columns that split figures into separate sets (facets) when they vary; the others
# are drawn within a figure: activation (panel columns), depth (one per figure), the series.
FACET_COLUMNS = ["experiment", "dataset", "model", "width", "optimizer", "lr", "batch_size", "epochs"]


def identity_dict(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a resolved config that decides what a run computes (the run id hashes it)."""
    d = {k: v for k, v in cfg.items() if k not in ID_EXCLUDED}
    if isinstance(d.get("train"), Mapping):
        d["train"] = {k: v for k, v in d["train"].items() if k not in ID_EXCLUDED_TRAIN}
    return d


def run_id(cfg: Dict[str, Any]) -> str:
    """A 12-hex-digit hash of the resolved config, output paths excluded: the same
    experiment always gets the same id, so a relaunched sweep finds finished runs."""
    blob = json.dumps(identity_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def identity_columns(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The identity columns of one run from its resolved config."""
    init, model = cfg.get("init") or {}, cfg.get("model") or {}
    train, opt = cfg.get("train") or {}, cfg.get("optimizer") or {}
    return {
        "experiment": cfg.get("experiment"),
        "dataset": (cfg.get("dataset") or {}).get("name"),
        "data_source": (cfg.get("dataset") or {}).get("source"),
        "model": model.get("name") if model.get("name") != "custom" else (model.get("builder") or "custom"),
        "depth": model.get("depth"),
        "width": model.get("width"),
        "init": init.get("label") or init.get("name"),
        "init_name": init.get("name"),
        "activation": (cfg.get("activation") or {}).get("name"),
        "optimizer": opt.get("name"),
        "lr": opt.get("lr"),
        "batch_size": train.get("batch_size"),
        "epochs": train.get("epochs"),
        "seed": cfg.get("seed"),
        "init.bias": init.get("bias"),
        "tune_axis": (cfg.get("tune") or {}).get("axis"),
        "tune_metric": (cfg.get("tune") or {}).get("metric"),
    }


def _cell(v: Any) -> Any:
    """A config value as a table cell: lists and dicts as their YAML-like text, so they compare."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(_cell(x)) for x in v) + "]"
    return v


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"init.stddev": 0.5, "model.kwargs.blocks": 2, ...}``: every leaf of what the run computes
    (:func:`identity_dict` at the top level), under its dotted name."""
    out: Dict[str, Any] = {}
    items = identity_dict(cfg).items() if not prefix else cfg.items()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, Mapping):
            continue
        else:
            out[key] = _cell(v)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def config_frame(configs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per resolved config: the identity columns, then every other config key whose value
    differs between the configs (missing counts as None), under its dotted name, sorted."""
    ident = [identity_columns(c) for c in configs]
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f} - _SHOWN)
    varying = [k for k in keys if any(not _same(f.get(k), flat[0].get(k)) for f in flat[1:])]
    rows = [{**i, **{k: f.get(k) for k in varying}} for i, f in zip(ident, flat)]
    return pd.DataFrame(rows, columns=CONFIG_COLUMNS + varying)


def is_config_column(column: str) -> bool:
    """Identity columns and dotted config keys (no table column has a dot in its name)."""
    return column in IDENTITY_COLUMNS or "." in column


def config_columns(df: pd.DataFrame) -> List[str]:
    """The config columns a table carries, in its order."""
    return [c for c in df.columns if is_config_column(c)]


def _varies(s: pd.Series) -> bool:
    return s.astype(object).where(s.notna(), None).map(repr).nunique() > 1


def varying_columns(df: pd.DataFrame) -> List[str]:
    """Config columns whose value differs between the table's rows (None/NaN is a value)."""
    return [c for c in config_columns(df) if _varies(df[c])]


def group_columns(df: pd.DataFrame) -> List[str]:
    """Every config column present that varies, except ``seed``: what tells the configurations
    of a table apart. Summaries group by these, so only seeds are ever averaged. ``init_name`` is
    left out where ``init`` (the label) already tells it apart, as it does unless two presets share
    a label."""
    cols = [c for c in varying_columns(df) if c != "seed"]
    if "init_name" in cols and "init" in cols and \
            df.groupby(df["init"].astype(str), sort=False)["init_name"].nunique(dropna=False).max() <= 1:
        cols.remove("init_name")
    return cols


def facet_columns(df: pd.DataFrame) -> List[str]:
    """The group columns that split figures into separate sets (:data:`FACET_COLUMNS`)."""
    group = group_columns(df)
    return [c for c in FACET_COLUMNS if c in group]


def series_columns(df: pd.DataFrame) -> List[str]:
    """The group columns a figure's lines are told apart by: ``init`` first, then every other
    group column a figure does not already separate (activation: panels; depth: one per figure)."""
    rest = [c for c in group_columns(df) if c not in ("init", "activation", "depth")]
    return (["init"] if "init" in df.columns else []) + rest


def check_seeds_only(df: pd.DataFrame, keys: Iterable[str]) -> None:
    """Raise ``ValueError`` if grouping ``df`` by ``keys`` would put different configurations
    (rows differing in a :func:`group_columns` column) in one group: only seeds may be averaged."""
    keys = [k for k in keys if k in df.columns]
    rest = [c for c in group_columns(df) if c not in keys]
    if not rest or df.empty:
        return
    probe = df[keys + rest].astype(object).where(df[keys + rest].notna(), None).map(repr) if keys else \
        df[rest].astype(object).where(df[rest].notna(), None).map(repr)
    mixed = probe.groupby(keys, sort=False)[rest].nunique() if keys else probe[rest].nunique().to_frame().T
    bad = [c for c in rest if (mixed[c] > 1).any()]
    if bad:
        raise ValueError(f"grouping by {keys} would average over {bad}, not only over seeds: "
                         f"group by tables.group_columns(df) = {group_columns(df)}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def param_name(column: str, columns: Sequence[str]) -> str:
    """A dotted column's name in a legend: its last part (``stddev``) unless that is ambiguous
    among ``columns`` or an identity column's name (``probes.batch_size`` stays dotted)."""
    leaf = column.rsplit(".", 1)[-1]
    clash = leaf in IDENTITY_COLUMNS or sum(c.rsplit(".", 1)[-1] == leaf for c in columns) > 1
    return column if clash else leaf


def series(df: pd.DataFrame, columns: Optional[Sequence[str]] = None, exclude: Sequence[str] = ()) -> pd.Series:
    """Each row's line label: its initializer, then the parameters that differ between the runs of
    that initializer, ``truncated_normal (stddev=0.5)``; ``columns`` defaults to
    :func:`series_columns`, less ``exclude`` (columns the caller separates itself, e.g. the
    panels). Rows of different configurations in those columns get different labels."""
    exclude = set(exclude)
    if "dataset" in exclude:  # a dataset's source is pinned once per sweep: it goes with the dataset
        exclude.add("data_source")
    columns = [c for c in (series_columns(df) if columns is None else columns) if c not in exclude]
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    base_col = "init" if "init" in columns else None
    params = [c for c in columns if c != base_col]
    base = df[base_col].astype(str) if base_col else pd.Series("", index=df.index)
    shown: Dict[str, List[str]] = {}
    for b, g in df.groupby(base, sort=False):
        shown[b] = [c for c in params if _varies(g[c])]
    out = []
    for i, b in zip(df.index, base):
        parts = [f"{param_name(c, params)}={_short(df.at[i, c])}" for c in shown[b]
                 if not pd.isna(df.at[i, c])]
        text = f"{b} ({', '.join(parts)})" if b and parts else b or ", ".join(parts)
        out.append(text)
    return pd.Series(out, index=df.index, dtype=object)


def with_series(df: pd.DataFrame, name: str = "series", exclude: Sequence[str] = ()) -> pd.DataFrame:
    """``df`` with a ``series`` column (:func:`series`), the key every figure colours its lines by."""
    return df.assign(**{name: series(df, exclude=exclude)})


def batch_rows(layer_table: pd.DataFrame, batch: str = PROBE) -> pd.DataFrame:
    """The rows of one batch (:data:`BATCHES`) of a ``layer_stats`` or ``histograms`` table; a
    table without the ``batch`` column (written before it existed, or built by hand) is all probe."""
    if batch not in BATCHES:
        raise ValueError(f"batch must be one of {', '.join(BATCHES)}, got {batch!r}")
    if layer_table is None or "batch" not in layer_table.columns:
        return layer_table if batch == PROBE else (layer_table.iloc[0:0] if layer_table is not None else None)
    return layer_table[layer_table["batch"] == batch]


def hidden_layer_names(layer_table: pd.DataFrame) -> List[str]:
    """The hidden layers of a ``layer_stats`` or ``histograms`` table, in depth order: those with
    ``activation`` rows. The output layer (:data:`OUTPUT`, the logits, built-in or custom) has none."""
    if layer_table.empty:
        return []
    rows = layer_table[layer_table.tensor == "activation"]
    return list(rows.sort_values("layer_index").layer.drop_duplicates())


def hidden_rows(layer_table: pd.DataFrame, batch: str = PROBE) -> pd.DataFrame:
    """The rows of the hidden layers only (per run: a layer name may be hidden in one model and the
    output of another), of one batch (:func:`batch_rows`: the fixed probe unless told)."""
    layer_table = batch_rows(layer_table, batch)
    if layer_table.empty:
        return layer_table
    hid = layer_table.loc[layer_table.tensor == "activation", ["run_id", "layer"]].drop_duplicates()
    return layer_table.merge(hid, on=["run_id", "layer"], how="inner")


def empty_table(name: str) -> pd.DataFrame:
    """An empty per-run table with its columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in TABLE_COLUMNS[name]})


def _dtype(column: str) -> str:
    if column in ("step", "layer_index", "bin", "count"):
        return "int64"
    if column in ("epoch", "value", "left", "right"):
        return "float64"
    return "object"
