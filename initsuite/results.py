"""Run folders: identity, status, atomic writes of config and tables.

A run folder holds ``config.yaml`` (resolved), ``status.json`` (``running`` ->
``done`` | ``diverged`` | ``failed``) and parquet tables in the long formats of
the design: ``layer_stats``, ``metrics``, ``histograms``, ``events``. Every file
is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pandas as pd
import yaml

# What status.json says: running -> done | diverged | failed | interrupted (SIGTERM/SIGUSR1:
# a last checkpoint was written; the relaunch resumes from it).
STATUSES = ("running", "done", "diverged", "failed", "interrupted")
FINISHED = ("done", "diverged")  # a relaunched sweep skips these
# Never in status.json: the runs table's status of a folder collect cannot read (its
# `reason` column says why; the next launch reruns it) ...
DAMAGED = "damaged"
# ... and a launcher's outcome for a run another live process holds (initsuite.lease).
HELD = "held"

# Keys that change where or how loudly a run reports, not what it computes.
_ID_EXCLUDED = {"paths", "force", "experiment", "extra"}
_ID_EXCLUDED_TRAIN = {"progress", "threads", "nonfinite_check_every", "lease_heartbeat_s", "lease_stale_s",
                      "checkpoint_every", "checkpoint_minutes"}

LAYER_STATS_COLUMNS = ["run_id", "step", "epoch", "layer", "layer_index", "tensor", "stat", "value"]
METRICS_COLUMNS = ["run_id", "step", "epoch", "split", "metric", "value"]
HISTOGRAM_COLUMNS = ["run_id", "step", "epoch", "layer", "layer_index", "tensor", "bin", "left", "right", "count"]
EVENTS_COLUMNS = ["run_id", "step", "epoch", "phase", "layer", "layer_index", "tensor", "kind", "detail"]
TABLE_COLUMNS = {
    "layer_stats": LAYER_STATS_COLUMNS,
    "metrics": METRICS_COLUMNS,
    "histograms": HISTOGRAM_COLUMNS,
    "events": EVENTS_COLUMNS,
}


# Config columns every collected table carries (DESIGN.md), from a resolved config dict.
CONFIG_COLUMNS = ["experiment", "dataset", "model", "depth", "width", "init", "init_name", "activation",
                  "optimizer", "lr", "batch_size", "epochs", "seed"]


def config_columns(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The flat config columns of one run (``init`` is the preset label: one name everywhere)."""
    init = cfg.get("init", {})
    model = cfg.get("model", {})
    return {
        "experiment": cfg.get("experiment"),
        "dataset": cfg.get("dataset", {}).get("name"),
        "model": model.get("name") if model.get("name") != "custom" else (model.get("builder") or "custom"),
        "depth": model.get("depth"),
        "width": model.get("width"),
        "init": init.get("label") or init.get("name"),
        "init_name": init.get("name"),
        "activation": cfg.get("activation", {}).get("name"),
        "optimizer": cfg.get("optimizer", {}).get("name"),
        "lr": cfg.get("optimizer", {}).get("lr"),
        "batch_size": cfg.get("train", {}).get("batch_size"),
        "epochs": cfg.get("train", {}).get("epochs"),
        "seed": cfg.get("seed"),
    }


def identity_dict(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The part of a resolved config that decides what a run computes."""
    d = {k: v for k, v in cfg.items() if k not in _ID_EXCLUDED}
    if isinstance(d.get("train"), dict):
        d["train"] = {k: v for k, v in d["train"].items() if k not in _ID_EXCLUDED_TRAIN}
    return d


def run_id(cfg: Dict[str, Any]) -> str:
    """A 12-hex-digit hash of the resolved config, output paths excluded: the same
    experiment always gets the same id, so a relaunched sweep finds finished runs."""
    blob = json.dumps(identity_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def current_umask() -> int:
    """This process's umask, read without changing it (``/proc/self/status`` on Linux; elsewhere
    the set-and-restore dance, which another thread could race with)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic_target(path: Path):
    """The one atomic-write helper: yields a temporary path next to ``path`` (same folder, so
    the final ``os.replace`` is atomic), fsyncs it, gives it the mode an ordinary new file
    would get (0666 & ~umask: ``mkstemp`` makes 0600, which would survive the rename and hide
    every table from the rest of a shared filesystem) and renames it into place. On any
    error the temporary file is removed and the old file, if any, is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        fd = -1
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_table(path: Path, df: pd.DataFrame) -> None:
    """Parquet via a temporary file + rename (pyarrow engine)."""
    with _atomic_target(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")


def atomic_write_tables(tables: Dict[Path, pd.DataFrame]) -> None:
    """Several parquet files as one set: every one is written to its temporary file first,
    then all are renamed into place, so a full disk or an error in any of them leaves all
    the previous files as they were (a kill between the renames, a window of microseconds,
    can still mix old and new)."""
    with contextlib.ExitStack() as stack:
        for path, df in tables.items():
            tmp = stack.enter_context(_atomic_target(path))
            df.to_parquet(tmp, index=False, engine="pyarrow")


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for status.json and reports; a full disk says so in words."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (f"disk full (ENOSPC){where}: the files written before are intact; free space and relaunch "
                f"({type(exc).__name__}: {exc})")
    return f"{type(exc).__name__}: {exc}"


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def read_status(self) -> Optional[Dict[str, Any]]:
        """status.json as a dict; None if it is missing or unreadable."""
        try:
            data = json.loads(self.status_path.read_text())
        except (OSError, ValueError):  # missing, unreadable, not JSON, not UTF-8
            return None
        return data if isinstance(data, dict) and isinstance(data.get("status"), str) else None

    def damage(self) -> Optional[str]:
        """Why this folder cannot be collected, or None if it can: an unreadable status.json,
        a missing or unreadable config.yaml, or (for a finished run) a missing or truncated
        table (parquet's footer is read: cheap, and a truncated file has none)."""
        if self.read_status() is None:
            return ("no status.json" if not self.status_path.exists() else "unreadable status.json")
        try:
            cfg = self.read_config()
        except FileNotFoundError:
            return "missing config.yaml"
        except Exception as exc:
            return f"unreadable config.yaml ({type(exc).__name__})"
        if not isinstance(cfg, dict):
            return "unreadable config.yaml (not a mapping)"
        if self.read_status()["status"] in FINISHED:
            import pyarrow.parquet as pq

            for name in TABLE_COLUMNS:
                try:
                    pq.read_metadata(self.table_path(name))
                except FileNotFoundError:
                    return f"missing {name}.parquet"
                except Exception as exc:
                    return f"unreadable {name}.parquet ({type(exc).__name__}: {exc})"
        return None

    def write_status(self, status: str, **fields: Any) -> Dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        data = dict(self.read_status() or {})
        data.update(fields)
        data["status"] = status
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.status_path, json.dumps(data, indent=2, default=_json_default) + "\n")
        return data

    def write_config(self, cfg: Dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    def read_config(self) -> Dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        columns = TABLE_COLUMNS.get(name)
        if columns is not None:
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise ValueError(f"table {name} lacks columns {missing}")
        path = self.table_path(name)
        atomic_write_table(path, df)
        return path

    def write_tables(self, tables: Dict[str, pd.DataFrame]) -> None:
        """All of a run's tables as one set (:func:`atomic_write_tables`)."""
        for name, df in tables.items():
            missing = [c for c in TABLE_COLUMNS.get(name, ()) if c not in df.columns]
            if missing:
                raise ValueError(f"table {name} lacks columns {missing}")
        atomic_write_tables({self.table_path(name): df for name, df in tables.items()})

    def read_table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.table_path(name))


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def empty_table(name: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in TABLE_COLUMNS[name]})


def _dtype(column: str) -> str:
    if column in ("step", "layer_index", "bin", "count"):
        return "int64"
    if column in ("epoch", "value", "left", "right"):
        return "float64"
    return "object"
