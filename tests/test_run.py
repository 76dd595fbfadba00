"""End-to-end single runs on synthetic data: tables, status, NaN forensics, reproducibility."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from initsuite import atomic, tables
from initsuite.run import results
from initsuite.run.train import run

ROOT = Path(__file__).resolve().parent.parent


def test_run_writes_every_table_with_documented_columns(make_cfg):
    cfg = make_cfg(*TINY, "train.epochs=2", "probes.hist_steps=[0,-1]")
    r = run(cfg)
    assert r.status == "done"
    folder = Path(r.path)
    assert (folder / "config.yaml").exists()
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "done" and status["steps"] == 16
    for name, columns in tables.TABLE_COLUMNS.items():
        df = pd.read_parquet(folder / f"{name}.parquet")
        assert list(df.columns)[: len(columns)] == columns, name  # the documented columns, first, in order
    everything = pd.read_parquet(folder / "layer_stats.parquet")
    assert set(everything.batch) == {tables.TRAIN, tables.PROBE}
    ls = everything[everything.batch == tables.PROBE]
    # the fixed probe: at 0 (before any update), every 4 steps and at the end
    assert sorted(ls.step.unique()) == [0, 4, 8, 12, 16]
    assert set(ls.tensor) == {"preactivation", "activation", "backprop_grad", "weight_grad", "weight"}
    assert {"mean", "var", "std", "p02", "p50", "p98", "saturated_frac", "zero_frac", "nonfinite_count"} <= set(ls.stat)
    assert list(ls.sort_values("layer_index").layer.unique()) == ["dense_00", "dense_01", "dense_02", "logits"]
    # the training batch, inside the step: every probes.train_every=10 steps and at every probe step
    # that trains (not the last); update ratios come from those rows, small and positive
    tr = everything[everything.batch == tables.TRAIN]
    assert sorted(tr.step.unique()) == [0, 4, 8, 10, 12]
    assert set(tr.tensor) == {"preactivation", "activation", "backprop_grad", "weight_grad", "weight", "update",
                              "update_ratio"}
    ur = tr[tr.tensor == "update_ratio"]
    assert sorted(ur.step.unique()) == [0, 4, 8, 10, 12] and (ur.value > 0).all() and (ur.value < 1).all()
    m = pd.read_parquet(folder / "metrics.parquet")
    assert set(m.split) == {"train", "valid", "test"} and set(m.metric) == {"loss", "error"}
    assert sorted(m.step.unique()) == [0, 8, 16]  # step 0 and each epoch end
    h = pd.read_parquet(folder / "histograms.parquet")
    assert sorted(h.step.unique()) == [0, 16]
    one = h[(h.step == 0) & (h.layer == "dense_00") & (h.tensor == "activation")]
    assert one["count"].sum() == 64 * 32  # probe batch x units
    ev = pd.read_parquet(folder / "events.parquet")
    assert len(ev) == 0


def test_training_lowers_the_loss(make_cfg):
    r = run(make_cfg(*TINY, "train.epochs=10", "optimizer=adam", "optimizer.lr=0.01", "init=he_normal",
                     "activation=relu", "probes.every=100"))
    m = r.metrics
    train_loss = m[(m.split == "train") & (m.metric == "loss")].sort_values("step").value.to_numpy()
    assert train_loss[-1] < 0.5 * train_loss[0]


def test_same_seed_same_statistics_and_rerun_is_skipped(make_cfg):
    a = run(make_cfg(*TINY, "seed=3"))
    skipped = run(make_cfg(*TINY, "seed=3"))
    assert skipped.skipped and skipped.run_id == a.run_id
    b = run(make_cfg(*TINY, "seed=3", "force=true"))
    assert b.run_id == a.run_id and not b.skipped
    cols = ["step", "layer", "tensor", "stat"]
    pd.testing.assert_frame_equal(a.layer_stats.sort_values(cols).reset_index(drop=True),
                                  b.layer_stats.sort_values(cols).reset_index(drop=True))
    c = run(make_cfg(*TINY, "seed=4"))
    assert c.run_id != a.run_id
    w = lambda r: r.layer_stats.query("step == 0 and tensor == 'weight' and stat == 'p50'").value.to_numpy()
    assert not np.allclose(w(a), w(c))


def test_constant_1e5_in_deep_relu_is_a_recorded_forward_nan(make_cfg):
    """As Keras' terminate_on_nan test: Constant(1e5) in a deep ReLU net overflows."""
    r = run(make_cfg(*TINY, "model.depth=6", "model.width=64", "init=constant", "init.value=1e5",
                     "activation=relu"))
    assert r.status == "diverged"
    assert r.info["first_nonfinite_step"] == 0
    assert r.info["first_nonfinite_phase"] == "forward"
    ev = r.events[r.events.kind == "first_nonfinite"]
    assert len(ev) == 1
    e = ev.iloc[0]
    assert e.step == 0 and e.phase == "forward"
    # 0.5 * 64 * 1e5 per layer grows 3.2e6x: float32 overflows (3.4e38) in the 6th layer
    assert e.layer == "dense_05" and e.tensor == "preactivation"
    assert r.info["steps"] < 16  # stopped early instead of training on NaN


def test_nan_made_by_the_update_is_attributed_to_the_update(make_cfg):
    r = run(make_cfg(*TINY, "optimizer.lr=inf"))  # W - inf * g is +-inf (or NaN where g = 0)
    assert r.status == "diverged"
    assert r.info["first_nonfinite_phase"] == "update"
    assert r.info["first_nonfinite_tensor"] in ("weight", "bias")
    assert r.info["first_nonfinite_step"] >= 0


def test_continue_past_nan_when_configured(make_cfg):
    r = run(make_cfg(*TINY, "model.depth=6", "model.width=64", "init=constant", "init.value=1e5",
                     "activation=relu", "train.stop_on_nonfinite=false"))
    assert r.status == "diverged" and r.info["steps"] == 8


def test_atomic_table_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    good = pd.DataFrame({"a": [1, 2]})
    atomic.atomic_write_table(path, good)

    def boom(self, *a, **k):
        Path(a[0]).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_table(path, pd.DataFrame({"a": [3]}))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(path), good)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_failed_run_is_recorded(make_cfg):
    cfg = make_cfg(*TINY, "train.batch_size=100000")
    with pytest.raises(ValueError, match="batch_size"):
        run(cfg)
    folders = list(Path(cfg.paths.runs).iterdir())
    assert len(folders) == 1
    st = json.loads((folders[0] / "status.json").read_text())
    assert st["status"] == "failed" and "batch_size" in st["error"]


def _cli(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "initsuite", "run", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_run_prints_its_folder(tmp_path):
    p = _cli(*TINY, "train.max_steps=3", "train.progress=false", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("  run folder: ")
    folder = Path(last.split(": ", 1)[1])
    assert folder.is_relative_to(tmp_path / "results" / "runs")  # relative to where it was launched
    assert (folder / "layer_stats.parquet").exists()


def test_cli_bad_type_names_the_key(tmp_path):
    p = _cli("model.depth=ten", cwd=tmp_path)
    assert p.returncode != 0
    assert "model.depth" in p.stderr and "ten" in p.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_cli_unknown_init_lists_valid_ones(tmp_path):
    p = _cli("dataset=synthetic", "init.name=xavier_uniform", cwd=tmp_path)
    assert p.returncode != 0
    assert "xavier_uniform" in p.stderr and "glorot_uniform" in p.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_cli_missing_data_is_one_clear_message(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    p = _cli("dataset=mnist", "dataset.source=files", f"dataset.path={empty}", cwd=tmp_path)
    assert p.returncode == 2
    assert "train-images-idx3-ubyte.gz" in p.stderr and "dataset.path" in p.stderr
    assert "Traceback" not in p.stderr
