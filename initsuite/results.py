"""Run folders: identity, status, atomic writes of config and tables.

A run folder holds ``config.yaml`` (resolved), ``status.json`` (``running`` ->
``done`` | ``diverged`` | ``failed``) and parquet tables in the long formats of
the design: ``layer_stats``, ``metrics``, ``histograms``, ``events``. Every file
is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd
import yaml

from initsuite.tables import STATUSES, TABLE_COLUMNS, identity_dict


def run_id(cfg: Dict[str, Any]) -> str:
    """A 12-hex-digit hash of the resolved config, output paths excluded: the same
    experiment always gets the same id, so a relaunched sweep finds finished runs."""
    blob = json.dumps(identity_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_dir_for(cfg: Dict[str, Any]) -> "RunDir":
    """The run folder of a resolved config (a plain dict): ``<paths.runs>/<run_id>/``."""
    return RunDir(Path(cfg["paths"]["runs"]).expanduser().resolve() / run_id(cfg))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_table(path: Path, df: pd.DataFrame) -> None:
    """Parquet via a temporary file + rename (pyarrow engine)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False, engine="pyarrow")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
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

    def read_table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.table_path(name))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)
