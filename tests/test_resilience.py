"""Sweeps that survive what machines do to them (issue 14): file modes under the umask, run
leases between concurrent launchers, damaged run folders, bad input, checkpoint and resume."""

import os
import stat
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from initsuite import report, sweep
from initsuite.configure import compose
from initsuite.results import TABLE_COLUMNS, RunDir, atomic_write_bytes, empty_table, run_id

ROOT = Path(__file__).resolve().parent.parent


def fake_run(runs_root: Path, status: str = "done", *overrides: str) -> RunDir:
    """A run folder as train.run leaves it, without training: config, status, empty tables."""
    cfg = OmegaConf.to_container(compose(["+experiment=smoke", f"paths.runs={runs_root}", *overrides]),
                                 resolve=True)
    rdir = RunDir(Path(runs_root) / run_id(cfg))
    rdir.write_config(cfg)
    for name in TABLE_COLUMNS:
        rdir.write_table(name, empty_table(name))
    rdir.write_status(status, run_id=rdir.path.name)
    return rdir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, want):
    old = os.umask(mask)
    try:
        rdir = fake_run(tmp_path / "sweep" / "runs")
        collected = sweep.collect(tmp_path / "sweep")
        html = report.write_report(tmp_path / "sweep", dict(collected), [])
        atomic_write_bytes(tmp_path / "plain.bin", b"x")
        with open(tmp_path / "reference", "w"):  # what an ordinary open() makes under this umask
            pass
    finally:
        os.umask(old)
    files = [rdir.status_path, rdir.path / "config.yaml", rdir.table_path("metrics"), html,
             tmp_path / "plain.bin", *(tmp_path / "sweep" / f"{t}.parquet" for t in sweep.TABLES)]
    assert {str(f): oct(_mode(f)) for f in files} == {str(f): oct(want) for f in files}
    assert _mode(tmp_path / "reference") == want
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind
