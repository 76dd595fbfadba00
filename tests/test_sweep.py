"""Sweeps: the grid, resources, progress, collecting (with broken folders), failures, resume
after SIGKILL through joblib, and the smoke preset through submitit_local."""

import json
import os
import tempfile
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from initsuite.sweep import progress

from initsuite import sweep
from initsuite.configure import compose
from initsuite.run import train
from initsuite.run.results import RunDir
from initsuite.tables import CONFIG_COLUMNS, TABLE_COLUMNS, run_id

ROOT = Path(__file__).resolve().parent.parent
TINY_POINT = ["experiment=smoke", "model.depth=1", "activation=tanh"]


def expected_ids(jobs, results):
    # the id of the config the run records: its data source pinned (initsuite.run.train.run_dir_for)
    return {train.run_dir_for(compose([*j, f"paths.results={results}"])).path.name for j in jobs}


# --------------------------------------------------------------------------- grid and command line


def test_sweep_argv_makes_a_multirun_of_the_default_preset_with_the_sweep_base():
    argv = sweep.sweep_argv(["experiments/sweep.py", "seed=0,1"])
    assert argv[0] == "experiments/sweep.py" and "--multirun" in argv
    assert "experiment=default" in argv and "hydra/callbacks=sweep" in argv and "seed=0,1" in argv
    mine = sweep.sweep_argv(["x", "-m", "experiment=smoke", "hydra/callbacks=other"])
    assert mine.count("-m") == 1 and "--multirun" not in mine
    assert "experiment=default" not in mine and "hydra/callbacks=sweep" not in mine


def test_grid_is_the_product_of_the_axes_and_args_narrow_or_add_axes():
    jobs = sweep.grid("smoke")
    assert len(jobs) == 8 and len({tuple(sorted(j)) for j in jobs}) == 8
    narrowed = sweep.grid("smoke", ["model.depth=3"])
    assert len(narrowed) == 4 and all("model.depth=3" in j for j in narrowed)
    assert len(sweep.grid("smoke", ["seed=0,1"])) == 16


def test_sweep_config_puts_the_sweep_in_a_stable_folder_with_the_callback(tmp_path):
    cfg = compose(["experiment=smoke", "hydra/callbacks=sweep", f"paths.results={tmp_path}"], return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.sweep.dir") == f"{tmp_path}/sweeps/smoke"
    assert cfg.hydra.callbacks.sweep._target_ == "initsuite.sweep.callbacks.SweepCallback"
    assert "JoblibLauncher" in cfg.hydra.launcher._target_ and str(cfg.hydra.launcher.batch_size) == "1"
    assert 1 <= cfg.hydra.launcher.n_jobs <= sweep.usable_cores()


def test_slurm_launcher_is_submitit_with_a_run_per_task():
    cfg = compose(["experiment=smoke", "hydra/callbacks=sweep", "hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.cpus_per_task >= 1
    assert sweep.launch_mode(launcher).threads == launcher.cpus_per_task


# --------------------------------------------------------------------------- resources


def test_local_resources_fit_the_cores_and_one_job_per_gpu(monkeypatch):
    jobs, threads = sweep.local_resources()
    assert jobs >= 1 and threads >= 1 and jobs * threads <= sweep.usable_cores()
    monkeypatch.setattr(sweep, "visible_gpus", lambda: ("0", "1"))
    monkeypatch.setattr(sweep, "usable_cores", lambda: 16)
    monkeypatch.setattr(sweep, "_available_gb", lambda: 64.0)
    assert sweep.local_resources() == (2 * sweep.JOBS_PER_GPU, 16 // (2 * sweep.JOBS_PER_GPU))
    monkeypatch.setattr(sweep, "visible_gpus", lambda: ())
    assert sweep.local_resources() == (16, 1)
    monkeypatch.setattr(sweep, "_available_gb", lambda: 5.0)  # memory for 2 jobs only
    assert sweep.local_resources() == (2, 8)


def test_launch_modes():
    assert not sweep.launch_mode({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}).parallel
    one = sweep.launch_mode({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                             "n_jobs": 1})
    assert one.kind == "joblib" and not one.parallel and one.threads == sweep.usable_cores()
    every = sweep.launch_mode({"_target_": "x.JoblibLauncher", "n_jobs": -1})
    assert every.jobs == sweep.usable_cores() and every.threads == 1
    slurm = sweep.launch_mode({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                               "cpus_per_task": 4})
    assert slurm.parallel and slurm.threads == 4


def test_pin_gpu_gives_each_worker_process_its_own_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # lock files of this test only (here and in the child)
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(sweep, "_gpu_lock", None)
    sweep.visible_gpus.cache_clear()
    try:
        assert sweep.pin_gpu() == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        other = subprocess.run(
            [sys.executable, "-c", "import os; os.environ['CUDA_VISIBLE_DEVICES']='0,1'\n"
                                   "from initsuite.sweep import pin_gpu; print(pin_gpu())"],
            capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}, timeout=120)
        assert other.stdout.strip().splitlines()[-1] == "1"  # GPU 0 is held by this process
    finally:
        if sweep._gpu_lock not in (None, True):
            sweep._gpu_lock.close()
        sweep.visible_gpus.cache_clear()


# --------------------------------------------------------------------------- what the user sees


def test_summary_gives_mean_and_std_over_seeds_and_divergence():
    rows = []
    for seed, err in enumerate([0.10, 0.20, 0.30]):
        rows.append(dict(dataset="mnist", model="mlp", width=8, optimizer="sgd", lr=0.1, batch_size=4, epochs=1,
                         init="standard", activation="tanh", depth=2, seed=seed, status="done",
                         final_test_error=err, first_nonfinite_step=pd.NA))
    for seed, (status, step) in enumerate([("diverged", 7), ("diverged", 3), ("done", None)]):
        rows.append(dict(dataset="mnist", model="mlp", width=8, optimizer="sgd", lr=0.1, batch_size=4, epochs=1,
                         init="truncated_normal_tf1", activation="relu", depth=5, seed=seed, status=status,
                         final_test_error=0.5 if status == "done" else 0.9,
                         first_nonfinite_step=step if step is not None else pd.NA))
    runs = pd.DataFrame(rows)
    runs["first_nonfinite_step"] = runs.first_nonfinite_step.astype("Int64")
    table = sweep.summary_table(runs).set_index("init")
    assert table.loc["standard", "test_error_mean"] == pytest.approx(20.0)
    assert table.loc["standard", "test_error_std"] == pytest.approx(np.std([10, 20, 30], ddof=1))
    assert table.loc["standard", "diverged"] == 0
    tf1 = table.loc["truncated_normal_tf1"]
    assert tf1.diverged == 2 and tf1.first_nan_step == 3 and tf1.test_error_mean == pytest.approx(50.0)
    text = sweep.format_summary(sweep.summary_table(runs))
    assert "20.00 ± 10.00" in text and "first NaN step" in text
    assert "dataset" not in text  # axes that do not vary are not shown


def test_progress_line_counts_this_launch_and_estimates_the_rest(tmp_path):
    progress.write_marker(tmp_path, "0", {"status": "done", "skipped": True})
    progress.reset(tmp_path)  # a new launch forgets the old markers
    for key, status, skipped in [("0", "done", True), ("1", "done", False), ("2", "diverged", False),
                                 ("3", "failed", False)]:
        progress.write_marker(tmp_path, key, {"status": status, "skipped": skipped})
    mon = progress.ProgressMonitor(tmp_path, total=10, name="t", live=False)
    c = mon.counts()
    assert (c.finished, c.skipped, c.diverged, c.failed) == (4, 1, 1, 1)
    assert progress.eta(c, 10, elapsed=30.0) == pytest.approx(6 * 30.0 / 3)
    line = progress.format_line("t", c, 10, 30.0)
    assert line.startswith("[sweep t] 4/10 runs (1 already finished)")
    assert "1 diverged" in line and "1 failed" in line and "30s elapsed" in line and "ETA 1m00s" in line


# --------------------------------------------------------------------------- in-process sweeps


def test_run_grid_failure_is_listed_not_fatal_then_relaunch_skips_and_force_reruns(tmp_path, capsys):
    points = [["init=standard"], ["init=glorot_uniform"], ["init=standard", "train.batch_size=100000"]]
    common = [*TINY_POINT, f"paths.results={tmp_path}"]
    got = sweep.run_grid(points, common)
    runs = got["runs"]
    assert len(runs) == 3 and sorted(runs.status) == ["done", "done", "failed"]
    failed = runs[runs.status == "failed"].iloc[0]
    assert "batch_size" in failed.error and Path(failed.log).exists()
    assert "Traceback" in Path(failed.log).read_text()
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "sweeps" / "smoke")
    assert any("failed runs (1)" in line for line in out) and any(failed.log in line for line in out)
    # every collected table carries the config columns, for the finished runs only
    for name in TABLE_COLUMNS:
        df = pd.read_parquet(tmp_path / "sweeps" / "smoke" / f"{name}.parquet")
        assert set(CONFIG_COLUMNS) <= set(df.columns)
    ls = got["layer_stats"]
    assert set(ls.run_id) == set(runs[runs.status == "done"].run_id)
    assert set(ls.init) == {"standard", "glorot_uniform"} and (ls.experiment == "smoke").all()

    started = {r.run_id: RunDir(r.path).read_status()["started"] for r in runs.itertuples() if r.status == "done"}
    again = sweep.run_grid(points[:2], common, verbose=False)
    markers = progress.read_markers(tmp_path / "sweeps" / "smoke")
    assert len(markers) == 2 and all(m["skipped"] for m in markers)
    assert {r.run_id: RunDir(r.path).read_status()["started"] for r in again["runs"].itertuples()
            if r.status == "done"} == started
    time.sleep(1.1)  # status times have one-second resolution
    sweep.run_grid(points[:1], [*common, "force=true"], verbose=False)
    markers = progress.read_markers(tmp_path / "sweeps" / "smoke")
    assert len(markers) == 1 and not markers[0]["skipped"]
    rid = markers[0]["run_id"]
    assert RunDir(tmp_path / "sweeps" / "smoke" / "runs" / rid).read_status()["started"] != started[rid]


def test_collect_tolerates_broken_and_unfinished_run_folders(tmp_path):
    got = sweep.run_grid([["init=standard"], ["init=glorot_uniform"]], [*TINY_POINT, f"paths.results={tmp_path}"],
                         verbose=False)
    sweep_dir = got.sweep_dir
    good = list(got["runs"].path)
    runs_dir = sweep_dir / "runs"
    # 1) garbage status, 2) no config, 3) a finished run with a corrupt table, 4) a run still running
    (runs_dir / "aaaaaaaaaaaa").mkdir()
    (runs_dir / "aaaaaaaaaaaa" / "status.json").write_text("{not json")
    (runs_dir / "bbbbbbbbbbbb").mkdir()
    (runs_dir / "bbbbbbbbbbbb" / "status.json").write_text(json.dumps({"status": "done"}))
    import shutil

    shutil.copytree(good[0], runs_dir / "cccccccccccc")
    (runs_dir / "cccccccccccc" / "metrics.parquet").write_bytes(b"PAR1 truncated")
    shutil.copytree(good[1], runs_dir / "dddddddddddd")
    RunDir(runs_dir / "dddddddddddd").write_status("running", run_id="dddddddddddd")

    again = sweep.collect(sweep_dir)
    skipped = {Path(f).name: why for f, why in again.skipped}
    assert set(skipped) == {"aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"}
    assert "status.json" in skipped["aaaaaaaaaaaa"] and "config.yaml" in skipped["bbbbbbbbbbbb"]
    assert "metrics.parquet" in skipped["cccccccccccc"]
    assert [Path(p).name for p in again.pending] == ["dddddddddddd"]
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert sorted(runs.status) == ["damaged"] * 3 + ["done", "done", "running"] and runs.run_id.is_unique
    assert dict(zip(runs.run_id, runs.reason)) == {**skipped, **{rid: None for rid in runs.run_id
                                                                 if rid not in skipped}}
    for name in TABLE_COLUMNS:
        df = pd.read_parquet(sweep_dir / f"{name}.parquet")
        if len(df):
            assert set(df.run_id) <= set(got["runs"].run_id)  # nothing from the broken or unfinished folders
    text = sweep.report(again, stream=open(os.devnull, "w"))
    assert "skipped 3 broken run folders" in text and "1 runs still running" in text
    assert text.splitlines()[-1] == str(sweep_dir)
    # the command line does the same, and says what it needs
    cli = subprocess.run([sys.executable, "-m", "initsuite", "collect", str(sweep_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and cli.stdout.strip().splitlines()[-1] == str(sweep_dir)
    missing = subprocess.run([sys.executable, "-m", "initsuite", "collect", str(tmp_path / "nope")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "no sweep folder" in missing.stderr


# --------------------------------------------------------------------------- end to end through Hydra


def _sweep_cmd(results, *args):
    return [sys.executable, "-m", "initsuite", "sweep", "experiment=smoke", f"paths.results={results}", *args]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_smoke_sweep_killed_with_sigkill_and_relaunched_ends_with_every_run_once(tmp_path):
    sweep_dir = tmp_path / "sweeps" / "smoke"
    grid = ["model.depth=1"]  # 4 runs: one finished before the kill, the others in flight or not started
    jobs = sweep.grid("smoke", grid)
    want = expected_ids(jobs, tmp_path)
    assert len(want) == 4

    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(_sweep_cmd(tmp_path, "hydra.launcher.n_jobs=2", *grid), cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    deadline = time.time() + 300
    done_before = {}
    while time.time() < deadline and first.poll() is None:
        statuses = {p.parent.name: RunDir(p.parent).read_status() for p in sweep_dir.glob("runs/*/status.json")}
        done_before = {k: s for k, s in statuses.items() if s and s["status"] == "done"}
        if done_before:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the sweep ended before it could be killed: " + (tmp_path / "first.log").read_text()
    os.killpg(first.pid, signal.SIGKILL)  # the launcher and its workers, mid-sweep
    first.wait(timeout=60)
    assert 1 <= len(done_before) < 4

    second = subprocess.run(_sweep_cmd(tmp_path, "hydra.launcher.n_jobs=2", *grid), cwd=ROOT, capture_output=True,
                            text=True, env=_env(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().splitlines()[-1] == str(sweep_dir)  # the last line is the sweep folder
    assert "4/4 runs" in second.stderr  # the progress line

    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert runs.run_id.is_unique and set(runs.run_id) == want and (runs.status == "done").all()
    assert {p.name for p in (sweep_dir / "runs").iterdir()} == want
    for rid, status in done_before.items():  # finished before the kill: skipped, not redone
        assert RunDir(sweep_dir / "runs" / rid).read_status()["started"] == status["started"]
    markers = progress.read_markers(sweep_dir)
    assert len(markers) == 4 and sum(m["skipped"] for m in markers) >= len(done_before)
    for name in TABLE_COLUMNS:
        df = pd.read_parquet(sweep_dir / f"{name}.parquet")
        assert set(CONFIG_COLUMNS) <= set(df.columns)
        if name != "events":
            assert set(df.run_id) == want
    ls = pd.read_parquet(sweep_dir / "layer_stats.parquet")
    assert not ls.duplicated(["run_id", "step", "batch", "layer", "tensor", "stat"]).any()
    assert set(zip(runs.init, runs.activation, runs.depth)) == {
        (i, a, 1) for i in ("standard", "glorot_uniform") for a in ("tanh", "relu")}


@pytest.mark.slow
def test_smoke_sweep_through_submitit_local(tmp_path):
    args = ["hydra/launcher=submitit_local", "activation=tanh", "model.depth=1"]
    out = subprocess.run(_sweep_cmd(tmp_path, *args), cwd=ROOT, capture_output=True, text=True, env=_env(),
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep_dir = tmp_path / "sweeps" / "smoke"
    assert out.stdout.strip().splitlines()[-1] == str(sweep_dir)
    assert (sweep_dir / ".submitit").is_dir()  # it really went through submitit
    runs = pd.read_parquet(sweep_dir / "runs.parquet")
    assert set(runs.run_id) == expected_ids(sweep.grid("smoke", args[1:]), tmp_path)
    assert (runs.status == "done").all() and set(runs.init) == {"standard", "glorot_uniform"}
    assert len(pd.read_parquet(sweep_dir / "metrics.parquet"))


def test_missing_data_stops_the_sweep_once_before_any_run(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    out = subprocess.run(_sweep_cmd(tmp_path, "dataset=mnist", "dataset.source=files", f"dataset.path={empty}"),
                         cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 2
    assert out.stderr.count("train-images-idx3-ubyte.gz") >= 1 and "dataset.path" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "sweeps" / "smoke" / "runs").exists()  # no run was started
