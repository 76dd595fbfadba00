"""Run folders: status, config and tables of one run, written atomically (:mod:`initsuite.atomic`).

A run folder holds ``config.yaml`` (resolved), ``status.json`` (``running`` ->
``done`` | ``diverged`` | ``failed``) and parquet tables in the long formats of
the design: ``layer_stats``, ``metrics``, ``histograms``, ``events``. Every file
is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd
import yaml

from initsuite.atomic import atomic_write_table, atomic_write_tables, atomic_write_text
from initsuite.tables import FINISHED, STATUSES, TABLE_COLUMNS, run_id


def run_dir_for(cfg: Dict[str, Any]) -> "RunDir":
    """The run folder of a resolved config (a plain dict): ``<paths.runs>/<run_id>/``."""
    return RunDir(Path(cfg["paths"]["runs"]).expanduser().resolve() / run_id(cfg))


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
