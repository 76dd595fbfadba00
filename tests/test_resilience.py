"""Sweeps that survive what machines do to them (issue 14): file modes under the umask, run
leases between concurrent launchers, damaged run folders, bad input, checkpoint and resume."""

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from initsuite.run import lease, train

from initsuite.sweep import progress

from initsuite.analysis import report

from initsuite import sweep
from initsuite.atomic import atomic_write_bytes
from initsuite.configure import compose
from initsuite.run.results import RunDir
from initsuite.tables import HELD, TABLE_COLUMNS, empty_table, run_id

ROOT = Path(__file__).resolve().parent.parent


def fake_run(runs_root: Path, status: str = "done", *overrides: str) -> RunDir:
    """A run folder as train.run leaves it, without training: config, status, empty tables."""
    cfg = OmegaConf.to_container(compose(["experiment=smoke", f"paths.runs={runs_root}", *overrides]),
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


# --------------------------------------------------------------------------- leases


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_lease_is_respected_and_released_on_exit(tmp_path):
    first = lease.acquire(tmp_path / "run", heartbeat_s=0.05, stale_s=60)
    assert isinstance(first, lease.Lease)
    before = json.loads(first.path.read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads(first.path.read_text())["heartbeat"] > before  # the heartbeat thread refreshes it
    second = lease.acquire(tmp_path / "run", heartbeat_s=0, stale_s=60)
    assert second == json.loads(first.path.read_text())  # not taken: the live holder comes back
    assert lease.holder(second) == f"{socket.gethostname()}:{os.getpid()}"
    assert lease.live_holder(tmp_path / "run", 60) == lease.holder(second)
    first.release()
    assert not first.path.exists() and lease.live_holder(tmp_path / "run", 60) is None
    third = lease.acquire(tmp_path / "run", heartbeat_s=0, stale_s=60)
    assert isinstance(third, lease.Lease) and third.took_over is None
    third.release()


def test_a_live_lease_held_by_another_process_is_respected(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; from initsuite.run import lease; "
                               "l = lease.acquire(sys.argv[1], 0.1, 60); print('ok', flush=True); time.sleep(60)",
                               str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "ok"
        got = lease.acquire(tmp_path / "run", heartbeat_s=0, stale_s=60)
        assert not isinstance(got, lease.Lease) and got["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # killed: the pid is dead on this host, so the next launcher takes the run over at once
    taken = lease.acquire(tmp_path / "run", heartbeat_s=0, stale_s=60)
    assert isinstance(taken, lease.Lease) and taken.took_over["pid"] == holder.pid
    assert json.loads(taken.path.read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [lease.LEASE_NAME]  # nothing left aside
    taken.release()


@pytest.mark.parametrize("kind", ["dead_pid", "old_heartbeat", "empty_file"])
def test_a_stale_lease_is_taken_over_and_the_old_holder_notices(tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    if kind == "empty_file":  # a holder killed between creating and writing its lease
        (run / lease.LEASE_NAME).write_text("")
        old = time.time() - 2 * lease.UNREADABLE_GRACE_S
        os.utime(run / lease.LEASE_NAME, (old, old))
        stale = {}
    else:
        stale = {"host": socket.gethostname() if kind == "dead_pid" else "elsewhere", "token": "t0",
                 "pid": _dead_pid() if kind == "dead_pid" else 1, "heartbeat": time.time() - (0 if kind == "dead_pid"
                                                                                            else 120)}
        (run / lease.LEASE_NAME).write_text(json.dumps(stale))
    assert lease.live_holder(run, 60) is None
    got = lease.acquire(run, heartbeat_s=0, stale_s=60)
    assert isinstance(got, lease.Lease) and got.took_over.get("token") == stale.get("token")
    assert got.owned()
    got.release()


def test_a_holder_whose_lease_was_taken_over_stops(tmp_path):
    mine = lease.acquire(tmp_path / "run", heartbeat_s=0, stale_s=60)
    info = dict(mine.info, heartbeat=time.time() - 120, host="elsewhere")  # as if suspended for 2 minutes
    mine.path.write_text(json.dumps(info))
    other = lease.acquire(tmp_path / "run", heartbeat_s=0, stale_s=60)
    assert isinstance(other, lease.Lease)
    mine.beat()
    with pytest.raises(lease.LeaseLost, match="taken over"):
        mine.check()
    mine.release()  # must not remove the new holder's lease
    assert other.owned()
    other.release()


def test_collect_shows_held_runs_and_the_progress_line_counts_them(tmp_path):
    sweep_dir = tmp_path / "sweep"
    rdir = fake_run(sweep_dir / "runs", "running")
    held = lease.acquire(rdir.path, heartbeat_s=0, stale_s=60)
    try:
        got = sweep.collect(sweep_dir)
        runs = got["runs"]
        assert list(runs.held_by) == [f"{socket.gethostname()}:{os.getpid()}"] and list(runs.status) == ["running"]
        text = sweep.report(got, stream=open(os.devnull, "w"))
        assert f"held by {socket.gethostname()}:{os.getpid()}" in text
    finally:
        held.release()
    assert sweep.collect(sweep_dir)["runs"].held_by.isna().all()
    line = progress.format_line("s", progress.Counts.of([{"status": HELD, "skipped": True},
                                                         {"status": "done", "skipped": False}]), 4, 10.0)
    assert "1 held by other launchers" in line and "already finished" not in line and "ETA 20s" in line


def _sweep_cmd(results, *args):
    return [sys.executable, "-m", "initsuite", "sweep", "experiment=smoke", f"paths.results={results}",
            "hydra.launcher.n_jobs=1", *args]


def _env(**extra):
    # PYTHONPATH: this checkout's initsuite, whatever an editable install points at
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), **extra}


def trainings(sweep_dir: Path) -> dict:
    """run id -> how many times its run.log says a training ended."""
    return {p.parent.name: p.read_text().count(": done after ") for p in sweep_dir.glob("runs/*/run.log")}


@pytest.mark.slow
def test_two_concurrent_launchers_train_every_run_exactly_once(tmp_path):
    sweep_dir = tmp_path / "sweeps" / "smoke"
    grid = ["model.depth=1"]  # 4 runs: enough for two launchers to meet on a run
    want = {train.run_dir_for(compose([*j, f"paths.results={tmp_path}"])).path.name
            for j in sweep.grid("smoke", grid)}
    procs = [subprocess.Popen(_sweep_cmd(tmp_path, *grid), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    assert trainings(sweep_dir) == {rid: 1 for rid in want}  # 4 runs, each trained once
    logs = "".join(p.read_text() for p in sweep_dir.glob("runs/*/run.log"))
    assert "is held by" in logs  # they did overlap: one launcher skipped a run the other held
    got = sweep.collect(sweep_dir)
    assert got["runs"].run_id.is_unique and set(got["runs"].run_id) == want and (got["runs"].status == "done").all()
    assert got["runs"].held_by.isna().all()
    ls = got["layer_stats"]
    assert set(ls.run_id) == want and not ls.duplicated(["run_id", "step", "batch", "layer", "tensor", "stat"]).any()


# --------------------------------------------------------------------------- damage is data

TINY_POINT = ["experiment=smoke", "model.depth=1", "activation=tanh", "init=standard"]


def test_damaged_folders_are_reported_with_their_reason_and_rerun_by_the_next_launch(tmp_path):
    common = [*TINY_POINT, f"paths.results={tmp_path}"]
    got = sweep.run_grid([[]], common, verbose=False)
    rdir = RunDir(got["runs"].path.iloc[0])
    good = rdir.read_table("layer_stats")
    damages = {  # what a crash, a full disk or a careless `rm` leaves, and the reason collect must give
        "truncated layer_stats": (lambda: rdir.table_path("layer_stats").write_bytes(
            rdir.table_path("layer_stats").read_bytes()[:100]), "unreadable layer_stats.parquet"),
        "garbage status": (lambda: rdir.status_path.write_bytes(b"\x00\xff{"), "unreadable status.json"),
        "no config": (lambda: (rdir.path / "config.yaml").unlink(), "missing config.yaml"),
    }
    for n, (what, (damage, reason)) in enumerate(damages.items(), start=2):
        damage()
        runs = sweep.collect(got.sweep_dir)["runs"]
        assert len(runs) == 1 and runs.status.iloc[0] == "damaged" and runs.run_id.iloc[0] == rdir.path.name
        assert runs.reason.iloc[0].startswith(reason), what
        again = sweep.run_grid([[]], common, verbose=False)  # reruns it
        assert list(again["runs"].status) == ["done"] and again["runs"].reason.isna().all(), what
        assert (rdir.path / "run.log").read_text().count(": done after ") == n, what
        pd.testing.assert_frame_equal(rdir.read_table("layer_stats"), good)  # same seed: same numbers


def _enospc(hit, monkeypatch):
    """Parquet writes whose (temporary) path satisfies ``hit`` fail as on a full disk."""
    real = pd.DataFrame.to_parquet

    def to_parquet(self, path, *a, **k):
        if hit(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)


def test_a_full_disk_fails_the_run_clearly_and_keeps_every_previous_table(tmp_path, monkeypatch):
    common = [*TINY_POINT, f"paths.results={tmp_path}"]
    got = sweep.run_grid([[]], common, verbose=False)
    sweep_dir, rdir = got.sweep_dir, RunDir(got["runs"].path.iloc[0])
    before = {p: p.read_bytes() for p in [*rdir.path.glob("*.parquet"), *sweep_dir.glob("*.parquet")]}
    assert len(before) == 4 + 5

    _enospc(lambda p: p.is_relative_to(rdir.path), monkeypatch)  # the run's own tables cannot be written
    again = sweep.run_grid([[]], [*common, "force=true"], verbose=False)
    row = again["runs"].iloc[0]
    assert row.status == "failed" and row.error.startswith("disk full (ENOSPC) while writing")
    assert rdir.read_status()["status"] == "failed"
    assert {p: p.read_bytes() for p in rdir.path.glob("*.parquet")} == {p: before[p] for p in rdir.path.glob("*.parquet")}

    monkeypatch.undo()
    before = {p: p.read_bytes() for p in [*rdir.path.glob("*.parquet"), *sweep_dir.glob("*.parquet")]}
    assert pd.read_parquet(sweep_dir / "runs.parquet").status.tolist() == ["failed"]
    # the last of the sweep's tables cannot be written (the others were, to their temporary files)
    _enospc(lambda p: p.name.startswith(".events.parquet."), monkeypatch)
    with pytest.raises(OSError):
        sweep.collect(sweep_dir)
    assert {p: p.read_bytes() for p in [*rdir.path.glob("*.parquet"), *sweep_dir.glob("*.parquet")]} == before
    assert not list(tmp_path.rglob("*.tmp"))
    assert "the previous ones are kept: disk full (ENOSPC)" in sweep.write_error(
        OSError(errno.ENOSPC, "No space left on device", "runs.parquet"))


# --------------------------------------------------------------------------- bad input

BAD = [  # (overrides, what the one-line message must name)
    (["init=nope"], "init=nope"),  # unknown group option
    (["model.nope=3"], "model.nope"),  # unknown key
    (["model.depth=ten"], "model.depth"),  # wrong type
    (["model.depth=1.5"], "model.depth"),
    (["model.width=0"], "model.width"),  # zero and negative sizes
    (["model.depth=-1"], "model.depth"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.epochs=-2"], "train.epochs"),
    (["dataset.n_train=0"], "dataset.n_train"),
    (["probes.batch_size=0"], "probes.batch_size"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["model.depth=100000"], "model.depth"),  # absurd depth
    (["model=custom"], "model.builder"),  # missing builder
    (["model=custom", "model.builder=no_such_module:build"], "model.builder"),
    (["experiment=nope"], "experiment=nope"),  # nonexistent preset
    (["model.depth=1,ten"], "model.depth"),  # one bad value among a sweep axis
    (["train.lease_stale_s=10", "train.lease_heartbeat_s=30"], "train.lease_stale_s"),
]


@pytest.mark.parametrize("entry", ["run", "sweep"])
@pytest.mark.parametrize("overrides,key", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_overrides_get_one_line_naming_the_key_and_exit_2(tmp_path, capsys, entry, overrides, key):
    from initsuite.cli import check_cli

    with pytest.raises(SystemExit) as exit_:
        check_cli(["dataset=synthetic", f"paths.results={tmp_path}/results", *overrides], sweep=entry == "sweep")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("initsuite: ") and key in err, err
    assert "Traceback" not in err and not (tmp_path / "results").exists()


def test_good_overrides_pass_the_check(tmp_path):
    from initsuite.cli import check_cli

    check_cli(["experiment=smoke", f"paths.results={tmp_path}/results", "model.depth=1,2"], sweep=True)
    check_cli(["dataset=synthetic", "--cfg", "job", "model.nope=1"])  # Hydra flags: Hydra's business
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("entry,overrides,key", [
    ("run", ["model.nope=3"], "model.nope"),
    ("run", ["dataset=mnist", "dataset.source=files", "dataset.path=/nonexistent/mnist"], "dataset.path"),
    ("sweep", ["experiment=nope"], "experiment=nope"),
    ("sweep", ["dataset=mnist", "dataset.source=files", "dataset.path=/nonexistent/mnist"], "dataset.path"),
])
def test_the_entry_points_reject_bad_input_before_any_folder(tmp_path, entry, overrides, key):
    args = [f"paths.results={tmp_path}/results", "train.progress=false", *overrides]
    if entry == "sweep" and not any(a.startswith("experiment=") for a in args):
        args.insert(0, "experiment=smoke")
    p = subprocess.run([sys.executable, "-m", "initsuite", entry, *args], cwd=ROOT, capture_output=True, text=True,
                       env=_env(TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.startswith("initsuite: ")]
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not list((tmp_path / "results").rglob("status.json")) and not (tmp_path / "results" / "runs").exists()


# --------------------------------------------------------------------------- checkpoint and resume

RESUME = [*TINY_POINT, "optimizer=adam", "optimizer.lr=0.003", "train.epochs=4", "train.eval_every=6",
          "probes.every=5", "probes.hist_steps=[0,10,-1]", "seed=3"]  # 32 steps, Adam's moments to restore


def _tables(result):
    return {name: getattr(result, name) for name in TABLE_COLUMNS}


def test_a_run_stopped_by_a_signal_resumes_from_its_checkpoint_with_identical_tables(tmp_path, monkeypatch, capsys):
    import signal as signal_mod

    from initsuite.run import checkpoint, train

    whole = train.run(compose([*RESUME, f"paths.results={tmp_path}/a", "train.progress=false"]))
    assert whole.status == "done" and whole.info["steps"] == 32
    assert not (whole.path / checkpoint.CHECKPOINT_NAME).exists()  # finished: removed

    cfg = compose([*RESUME, f"paths.results={tmp_path}/b", "train.progress=false"])
    hook = train.Trainer._step_hook

    def preempted_at_13(self, step):  # SLURM's SIGUSR1, delivered between steps 12 and 13
        if step == 13:
            os.kill(os.getpid(), signal_mod.SIGUSR1)
        return hook(self, step)

    monkeypatch.setattr(train.Trainer, "_step_hook", preempted_at_13)
    with pytest.raises(checkpoint.RunInterrupted) as stop:
        train.run(cfg)
    monkeypatch.undo()
    assert stop.value.step == 13 and stop.value.signal == "SIGUSR1"
    rdir = RunDir(tmp_path / "b" / "runs" / whole.run_id)
    status = rdir.read_status()
    assert status["status"] == "interrupted" and status["steps"] == 13 and status["signal"] == "SIGUSR1"
    assert (rdir.path / checkpoint.CHECKPOINT_NAME).exists() and not (rdir.path / "lease.json").exists()
    assert signal_mod.getsignal(signal_mod.SIGUSR1) is signal_mod.SIG_DFL  # handlers restored
    capsys.readouterr()

    resumed = train.run(cfg)
    assert "resumed from its checkpoint at step 13 of 32" in capsys.readouterr().out
    assert resumed.status == "done" and resumed.info["steps"] == 32
    for name, df in _tables(whole).items():
        pd.testing.assert_frame_equal(getattr(resumed, name), df, obj=name)
    assert len(whole.layer_stats) and len(whole.histograms) and set(whole.layer_stats.step) > {0, 5, 10, 15, 30, 32}


def _interrupt_at(monkeypatch, at: int):
    import signal as signal_mod

    from initsuite.run import train

    hook = train.Trainer._step_hook

    def stop(self, step):
        if step == at:
            os.kill(os.getpid(), signal_mod.SIGTERM)
        return hook(self, step)

    monkeypatch.setattr(train.Trainer, "_step_hook", stop)


def test_periodic_checkpoints_and_a_checkpoint_that_does_not_fit_is_not_trusted(tmp_path, monkeypatch, capsys):
    from initsuite.run import checkpoint, train

    common = [*RESUME, "train.progress=false", "train.checkpoint_every=10"]
    saved = []
    real = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda trainer, step: saved.append(step) or real(trainer, step))
    whole = train.run(compose([*common, f"paths.results={tmp_path}"]))
    assert saved == [10, 20, 30] and not (whole.path / checkpoint.CHECKPOINT_NAME).exists()

    _interrupt_at(monkeypatch, 5)  # another run (seed 4) stopped at step 5 leaves its checkpoint
    with pytest.raises(checkpoint.RunInterrupted):
        train.run(compose([*common, f"paths.results={tmp_path}", "seed=4"]))
    monkeypatch.undo()
    foreign = [p for p in (tmp_path / "runs").glob(f"*/{checkpoint.CHECKPOINT_NAME}")]
    assert len(foreign) == 1 and foreign[0].parent.name != whole.run_id
    # copied into our (unfinished) run's folder, it must be ignored, not restored
    (whole.path / checkpoint.CHECKPOINT_NAME).write_bytes(foreign[0].read_bytes())
    RunDir(whole.path).write_status("interrupted")
    capsys.readouterr()
    again = train.run(compose([*common, f"paths.results={tmp_path}"]))
    out = capsys.readouterr().out
    assert f"not resuming from its checkpoint (it belongs to run {foreign[0].parent.name})" in out
    for name, df in _tables(whole).items():
        pd.testing.assert_frame_equal(getattr(again, name), df, obj=name)


def test_under_submitit_its_sigusr2_handler_requeues_after_the_checkpoint(tmp_path, monkeypatch):
    import signal as signal_mod

    from initsuite.run import checkpoint, train

    calls = []

    def submitit_handler(signum, frame):  # what submitit installs: checkpoint the job, requeue, exit
        calls.append((signum, (rdir.path / checkpoint.CHECKPOINT_NAME).exists(), rdir.read_status()["status"]))
        raise SystemExit(-1)

    cfg = compose([*RESUME, f"paths.results={tmp_path}", "train.progress=false", "train.max_steps=8"])
    rdir = train.run_dir_for(cfg)
    hook = train.Trainer._step_hook
    monkeypatch.setattr(train.Trainer, "_step_hook", lambda self, step: (
        step == 3 and os.kill(os.getpid(), signal_mod.SIGUSR2), hook(self, step)))
    previous = signal_mod.signal(signal_mod.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit):
            train.run(cfg)
    finally:
        signal_mod.signal(signal_mod.SIGUSR2, previous)
    assert calls == [(signal_mod.SIGUSR2, True, "interrupted")]
    assert rdir.read_status()["steps"] == 3


# --------------------------------------------------------------------------- fault injection

FAULT_POINTS = [["init=standard"], ["init=glorot_uniform"]]
FAULT_COMMON = [*TINY_POINT[:3], "train.checkpoint_every=4"]  # 2 runs x 16 steps, a checkpoint every 4

# Runs a small sweep (initsuite.sweep.run_grid) that SIGKILLs itself at the n-th event of one kind:
# `step` (the top of a training step), `write` (just before an atomic write's rename: status,
# config, checkpoint, run tables, progress markers) or `collect` (before a rename of the sweep's
# tables; this one only collects a sweep whose runs are done, and needs no TensorFlow).
_FAULT_DRIVER = r"""
import json, os, signal, sys
site, n, results = sys.argv[1], int(sys.argv[2]), sys.argv[3]
points, common = json.loads(sys.argv[4]), json.loads(sys.argv[5])
from initsuite import sweep
calls = [0]
def tick():
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
real_replace = os.replace
def replace(*a, **k):
    if site in ("write", "collect"):
        tick()
    return real_replace(*a, **k)
os.replace = replace
if site == "collect":
    sweep.collect(os.path.join(results, "sweeps", "smoke"))
else:
    from initsuite.run import train
    real_hook = train.Trainer._step_hook
    def hook(self, step):
        if site == "step":
            tick()
        return real_hook(self, step)
    train.Trainer._step_hook = hook
    sweep.run_grid(points, [*common, f"paths.results={results}"], verbose=False)
print("no fault", calls[0])
"""

_VOLATILE = {"wall_s", "train_s", "started", "updated", "host", "path", "log", "device"}


def _sweep_tables(sweep_dir: Path) -> dict:
    out = {name: pd.read_parquet(sweep_dir / f"{name}.parquet") for name in sweep.TABLES}
    out["runs"] = out["runs"][[c for c in out["runs"].columns if c not in _VOLATILE]]
    return out


@pytest.mark.slow
def test_sigkill_anywhere_then_relaunch_gives_every_run_once_and_the_uninterrupted_tables(tmp_path):
    import random
    import shutil

    reference = sweep.run_grid(FAULT_POINTS, [*FAULT_COMMON, f"paths.results={tmp_path}/ref"], verbose=False)
    want = _sweep_tables(reference.sweep_dir)
    assert list(want["runs"].status) == ["done", "done"] and len(want["layer_stats"])
    rng = random.Random(14)
    # (site, n): 2 runs x 16 steps = 34 step tops; about 30 atomic renames in the two runs; 5 sweep tables
    # two batches of four killed processes: each start imports TensorFlow, the suite's main cost here
    trials = [("step", n) for n in rng.sample(range(1, 35), 3)] + [("write", n) for n in rng.sample(range(1, 31), 3)] \
        + [("collect", n) for n in rng.sample(range(1, 6), 2)]
    results = [tmp_path / f"trial{i}" for i in range(len(trials))]
    for (site, _), where in zip(trials, results):
        if site == "collect":  # a sweep whose runs are done, killed while writing its tables
            shutil.copytree(reference.sweep_dir / "runs", where / "sweeps" / "smoke" / "runs")
    for batch in range(0, len(trials), 4):  # the killed sweeps, four at a time
        procs = [(trials[i], subprocess.Popen(
            [sys.executable, "-c", _FAULT_DRIVER, trials[i][0], str(trials[i][1]), str(results[i]),
             json.dumps(FAULT_POINTS), json.dumps(FAULT_COMMON)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)) for i in range(batch, min(batch + 4, len(trials)))]
        for trial, p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == -9, (trial, out, err[-2000:])
    resumed = 0
    for (site, n), where in zip(trials, results):
        again = sweep.run_grid(FAULT_POINTS, [*FAULT_COMMON, f"paths.results={where}"], verbose=False)
        sweep_dir = again.sweep_dir
        assert trainings(sweep_dir) == {rid: 1 for rid in want["runs"].run_id}, (site, n)
        got = _sweep_tables(sweep_dir)
        for name, df in want.items():
            pd.testing.assert_frame_equal(got[name], df, obj=f"{name} after a SIGKILL at {site} #{n}")
        assert not list(sweep_dir.glob("runs/*/.*.tmp"))  # what a killed write left, cleared by the rerun
        assert not list(sweep_dir.glob("runs/*/lease.json"))  # every lease released
        resumed += any("resumed from its checkpoint at step" in p.read_text() for p in sweep_dir.glob("runs/*/run.log"))
    assert resumed >= 3  # the kills mid-run went on from a checkpoint, not from step 0


@pytest.mark.slow
def test_sigterm_to_the_run_command_checkpoints_and_the_same_command_resumes(tmp_path):
    import signal as signal_mod

    from initsuite.run import checkpoint, train

    args = [*RESUME, "train.epochs=100", "train.eval_every=50", "probes.every=40", "probes.hist_steps=[0]",
            "train.progress=false", "train.checkpoint_every=100"]  # 800 steps
    cmd = [sys.executable, "-m", "initsuite", "run", *args, f"paths.results={tmp_path}/cli"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rdir = train.run_dir_for(compose([*args, f"paths.results={tmp_path}/cli"]))
    deadline = time.time() + 300
    while time.time() < deadline and not (rdir.path / checkpoint.CHECKPOINT_NAME).exists() and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal_mod.SIGTERM)  # past step 100 (its periodic checkpoint is there)
    out, err = first.communicate(timeout=300)
    status = rdir.read_status()
    assert first.returncode == 128 + signal_mod.SIGTERM, err[-2000:]
    assert status["status"] == "interrupted" and 100 <= status["steps"] < 800 and status["signal"] == "SIGTERM"
    assert f"interrupted by SIGTERM at step {status['steps']}" in err and "Traceback" not in err
    assert (rdir.path / checkpoint.CHECKPOINT_NAME).exists()
    second = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resumed from its checkpoint at step {status['steps']} of 800" in second.stdout
    whole = train.run(compose([*args, f"paths.results={tmp_path}/whole"]))
    for name, df in _tables(whole).items():
        pd.testing.assert_frame_equal(pd.read_parquet(rdir.table_path(name)), df, obj=name)
