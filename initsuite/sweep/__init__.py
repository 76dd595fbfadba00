"""Sweeps: a preset's grid of runs, resumable, in parallel or on a cluster, collected into tables.

    make sweep                                     # conf/experiment/default.yaml
    make sweep EXP=tn_vs_xavier ARGS='seed=0'      # any preset; ARGS adds or narrows axes
    initsuite sweep experiment=smoke hydra/launcher=submitit_local

How the pieces fit:

* ``initsuite sweep`` is Hydra's ``--multirun`` over the preset's
  ``hydra.sweeper.params`` (the basic sweeper: a Cartesian product), plus
  ``hydra/callbacks=sweep`` (:func:`sweep_argv`), which fixes the sweep folder
  ``<paths.results>/sweeps/<experiment>/``, picks the local launcher and registers
  :class:`initsuite.sweep.callbacks.SweepCallback` (progress line, collection, summary).
* Each job is :func:`sweep_job` -> :func:`run_one` -> :func:`initsuite.run.train.run`, in
  ``<sweep>/runs/<run_id>/`` with its output in ``run.log``. The run id is a hash of
  the resolved config, so relaunching the same sweep skips runs that are ``done`` or
  ``diverged`` and redoes ``running`` (interrupted) and ``failed`` ones; ``force=true``
  redoes everything. A failing run is recorded and reported, never allowed to stop
  the sweep (with joblib one raising job would abort the whole multirun).
* Launchers: ``local`` (default; Hydra's joblib launcher, one process per job,
  :func:`local_resources` jobs x TensorFlow threads ~ cores; with several GPUs each
  job process is pinned to one, :func:`pin_gpu`), ``basic`` (one process, one run
  at a time, with a per-run progress bar), ``submitit_local`` / ``slurm`` (cluster).
* :func:`collect` gathers the run folders into ``runs``, ``layer_stats``, ``metrics``,
  ``histograms`` and ``events`` parquet tables at the top of the sweep folder, each
  with the config columns (:func:`initsuite.tables.config_frame`) joined.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pandas as pd
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from joblib import Parallel, delayed
from omegaconf import DictConfig, OmegaConf, open_dict

from initsuite.run import checkpoint, lease

from initsuite.setup import data

from initsuite.sweep import progress

from initsuite import tables

from initsuite.analysis import verdicts
from initsuite.atomic import atomic_write_tables, describe_error
from initsuite.configure import compose
from initsuite.run.results import RunDir
from initsuite.tables import run_id
from initsuite.tables import (COLLECT_FIELDS, DAMAGED, FINISHED, HELD, RUN_FIELDS, RUN_TABLES, STATUSES, TABLES,
                              empty_table)

LOG_NAME = "run.log"  # each run's stdout (and, in parallel, stderr), appended per attempt
SWEEP_BASE = "hydra/callbacks=sweep"  # conf/hydra/callbacks/sweep.yaml: folder, launcher, callback
DEFAULT_EXPERIMENT = "default"
GB_PER_JOB = 2.0  # memory one local job may need (TensorFlow + a dataset copy); caps the job count
JOBS_PER_GPU = 2  # the suite's nets are small: a second job keeps a GPU busy while the first traces or evaluates

DATA_SOURCES_NAME = "data_sources.json"  # <sweep>/: dataset -> source resolved once, before the first run


# --------------------------------------------------------------------------- the command line


def sweep_argv(argv: Sequence[str]) -> List[str]:
    """``initsuite sweep``'s command line as Hydra should see it: always a multirun,
    of ``experiment=default`` unless a preset is named, with the sweep settings
    (:data:`SWEEP_BASE`) unless the user chose other callbacks. Anything the user wrote
    (launcher, ``hydra.launcher.n_jobs=4``, axes) still wins."""
    argv = list(argv)
    args = argv[1:]
    if "--multirun" not in args and "-m" not in args:
        args.insert(0, "--multirun")
    if not any(a.lstrip("+").startswith("experiment=") for a in args):
        args.append(f"experiment={DEFAULT_EXPERIMENT}")
    if not any(a.startswith("hydra/callbacks=") for a in args):
        args.append(SWEEP_BASE)
    # Worker processes inherit this: TensorFlow's start-up banner, once per job, is noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return argv[:1] + args


def job_overrides(params: Optional[Mapping[str, Any]], task_overrides: Sequence[str]) -> List[List[str]]:
    """The override list of every job Hydra's basic sweeper makes from a preset's
    ``hydra.sweeper.params`` and the command line (a later value for a key replaces it:
    that is how ``ARGS`` narrows an axis)."""
    args = [f"{k}={v}" for k, v in (params or {}).items()] + list(task_overrides)
    parsed = OverridesParser.create().parse_overrides(args)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def grid(experiment: str = DEFAULT_EXPERIMENT, overrides: Sequence[str] = ()) -> List[List[str]]:
    """The jobs ``make sweep EXP=<experiment> ARGS='<overrides>'`` runs, as override lists."""
    task = [f"experiment={experiment}", *overrides]
    parsed = OverridesParser.create().parse_overrides(task)
    cfg = compose([o.input_line for o in parsed if not o.is_sweep_override()], return_hydra_config=True)
    return job_overrides(OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {},
                         task)


# --------------------------------------------------------------------------- resources


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


def _available_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def visible_gpus() -> Tuple[str, ...]:
    """GPU ids this process may use, without starting TensorFlow: ``CUDA_VISIBLE_DEVICES``
    if set, else what ``nvidia-smi -L`` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = tuple(x.strip() for x in env.split(",") if x.strip())
        return () if ids in ((), ("-1",)) else ids
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU ")))


def local_resources() -> Tuple[int, int]:
    """(parallel jobs, TensorFlow threads per job) for this machine: ``JOBS_PER_GPU`` jobs
    per GPU if there are GPUs, else one per core; never more than the cores or than memory
    allows (``GB_PER_JOB``); threads = cores / jobs."""
    cores = usable_cores()
    gpus = len(visible_gpus())
    jobs = min(cores, gpus * JOBS_PER_GPU) if gpus else cores
    gb = _available_gb()
    if gb:
        jobs = min(jobs, max(1, int(gb // GB_PER_JOB)))
    return jobs, max(1, cores // jobs)


# ${initsuite.n_jobs:} in conf/hydra/launcher/local.yaml
OmegaConf.register_new_resolver("initsuite.n_jobs", lambda: local_resources()[0], replace=True)


_gpu_lock = None  # held open for the life of the worker process: the GPU stays this process's


def pin_gpu() -> Optional[str]:
    """Give this (worker) process one GPU, before TensorFlow starts.

    joblib reuses worker processes and a started TensorFlow cannot change GPUs, so the
    choice is made once per process, through per-machine lock files that the kernel
    frees when a process dies: the first GPU no live worker holds, and with more jobs
    than GPUs (``hydra.launcher.n_jobs``), the least shared one.
    """
    global _gpu_lock
    gpus = visible_gpus()
    if _gpu_lock is not None or len(gpus) < 2:
        return None
    lock_dir = Path(tempfile.gettempdir()) / f"initsuite-gpu-locks-{os.getuid()}"
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(256):
        for gpu in gpus:
            f = open(lock_dir / f"gpu{gpu}.{slot}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _gpu_lock = f
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return gpu
    return None


@dataclass
class LaunchMode:
    """What a Hydra launcher config means for the jobs it runs."""

    kind: str  # basic | joblib | submitit | other
    jobs: Optional[int]  # jobs at a time (None: decided by the cluster)
    threads: int  # TensorFlow threads per job (0: TensorFlow's choice)

    @property
    def parallel(self) -> bool:
        """Jobs that share the terminal or write elsewhere: no per-run bars, output to run.log."""
        return self.kind != "basic" and not (self.kind == "joblib" and self.jobs == 1)

    def describe(self) -> str:
        if self.kind == "basic":
            return "one process, one run at a time"
        if self.kind == "joblib":
            return f"{self.jobs} parallel job{'s' if self.jobs != 1 else ''} x {self.threads} TensorFlow thread" \
                   f"{'s' if self.threads != 1 else ''}"
        return f"{self.kind} launcher" + (f", {self.threads} threads per job" if self.threads else "")


def launch_mode(launcher: Optional[Mapping]) -> LaunchMode:
    target = str((launcher or {}).get("_target_", ""))
    if "joblib" in target.lower():
        jobs = int(launcher.get("n_jobs", -1))
        cores = usable_cores()
        jobs = cores if jobs < 0 else max(1, jobs)  # joblib: -1 = every core
        return LaunchMode("joblib", jobs, max(1, cores // jobs))
    if "submitit" in target.lower():
        return LaunchMode("submitit", None, int(launcher.get("cpus_per_task") or 0))
    if not target or "BasicLauncher" in target:
        return LaunchMode("basic", 1, 0)
    return LaunchMode("other", None, 0)


# --------------------------------------------------------------------------- one job


@contextlib.contextmanager
def _capture(log, quiet: bool, own_process: bool):
    """Send the run's stdout (and, if ``quiet``, stderr) to its log. In a process of its
    own the file descriptors move too, so TensorFlow's C++ messages follow."""
    with contextlib.ExitStack() as stack:
        if quiet and own_process:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = [(fd, os.dup(fd)) for fd in (1, 2)]
            for fd, _ in saved:
                os.dup2(log.fileno(), fd)

            def restore():
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, copy in saved:
                    os.dup2(copy, fd)
                    os.close(copy)

            stack.callback(restore)
        stack.enter_context(contextlib.redirect_stdout(log))
        if quiet:
            stack.enter_context(contextlib.redirect_stderr(log))
        yield


def run_one(cfg: DictConfig, sweep_dir: Path, key: Optional[str] = None, quiet: bool = True,
            own_process: bool = False) -> Dict[str, Any]:
    """Run one grid point in ``<sweep_dir>/runs/<run_id>/`` and report how it ended.

    Never raises for a run that fails: the failure (with its traceback, in ``run.log``
    and ``status.json``) is data, and the sweep goes on. ``quiet``: the run's stderr
    goes to ``run.log`` too (parallel jobs must not write over each other's lines);
    ``own_process``: this process runs jobs only (a joblib or submitit worker).
    """
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    with open_dict(cfg):
        cfg.paths.runs = str(sweep_dir / "runs")
    try:
        # dataset.source=auto as the sweep resolved it once, before its first run (else here): before the id
        pinned = sweep_dir / DATA_SOURCES_NAME
        with open_dict(cfg):
            data.pin(cfg.dataset, json.loads(pinned.read_text()) if pinned.exists() else None)
        rdir = RunDir(sweep_dir / "runs" / run_id(OmegaConf.to_container(cfg, resolve=True)))
    except Exception as exc:  # a config that does not even resolve: no run folder to put it in
        outcome = dict(key=key, run_id=None, status="failed", skipped=False, error=f"{type(exc).__name__}: {exc}")
        progress.write_marker(sweep_dir, key or "unresolved", outcome)
        print(f"[sweep] job {key}: {outcome['error']}", file=sys.stderr)
        return outcome
    rdir.path.mkdir(parents=True, exist_ok=True)
    log_path = rdir.path / LOG_NAME
    outcome: Dict[str, Any] = dict(key=key, run_id=rdir.path.name, path=str(rdir.path), log=str(log_path))
    t0 = time.time()
    with open(log_path, "a", buffering=1) as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} on {socket.gethostname()}\n")
        with _capture(log, quiet, own_process):
            try:
                from initsuite.run import train  # TensorFlow starts here (after any GPU pinning), into the log

                result = train.run(cfg)
                outcome.update(status=result.status, skipped=result.skipped, error=None)
            except checkpoint.RunInterrupted as exc:  # SIGTERM/SIGUSR1: checkpointed; this process stops
                outcome.update(status="interrupted", skipped=False, error=str(exc), wall_s=time.time() - t0)
                progress.write_marker(sweep_dir, key if key is not None else rdir.path.name, outcome)
                raise SystemExit(exc.exit_code) from None
            except lease.LeaseLost as exc:  # another launcher took the run over: it is theirs now
                print(f"[sweep] {exc}", file=log)
                outcome.update(status=HELD, skipped=True, error=None)
            except Exception as exc:
                traceback.print_exc(file=log)
                outcome.update(status="failed", skipped=False, error=describe_error(exc))
                if rdir.read_status() is None:  # failed before the run started (e.g. an unknown name)
                    _record_early_failure(rdir, cfg, outcome["error"], traceback.format_exc())
    status = rdir.read_status() or {}
    outcome.update(wall_s=time.time() - t0, first_nonfinite_step=status.get("first_nonfinite_step"))
    progress.write_marker(sweep_dir, key if key is not None else rdir.path.name, outcome)
    return outcome


def _record_early_failure(rdir: RunDir, cfg, error: str, tb: str) -> None:
    try:
        rdir.write_config(OmegaConf.to_container(cfg, resolve=True))
    except Exception:  # an unresolvable config: the status still says why
        pass
    rdir.write_status("failed", run_id=rdir.path.name, error=error, traceback=tb)


def sweep_job(cfg: DictConfig) -> Dict[str, Any]:
    """The Hydra task of ``initsuite sweep``: one run of the sweep in its folder."""
    hc = HydraConfig.get()
    mode = launch_mode(hc.launcher)
    with open_dict(cfg):
        if not cfg.train.threads:
            cfg.train.threads = mode.threads
        # A per-run bar only where it has the terminal to itself.
        cfg.train.progress = bool(cfg.train.progress) and not mode.parallel and sys.stderr.isatty()
    if mode.kind == "joblib":
        pin_gpu()
    return run_one(cfg, Path(hc.sweep.dir), key=str(hc.job.num), quiet=mode.parallel,
                   own_process=mode.kind in ("joblib", "submitit"))


# --------------------------------------------------------------------------- collecting


class Collected(dict):
    """``collect``'s tables by name, plus what it could not read (``skipped``: (folder, reason);
    these are the ``damaged`` rows of ``runs``), the runs it left out of the per-step tables
    because they have not finished (``pending``) and those another process holds now
    (``held``: (folder, "host:pid"))."""

    def __init__(self, tables: Dict[str, pd.DataFrame], sweep_dir: Path,
                 skipped: List[Tuple[str, str]], pending: List[str],
                 held: Optional[List[Tuple[str, str]]] = None):
        super().__init__(tables)
        self.sweep_dir, self.skipped, self.pending, self.held = sweep_dir, skipped, pending, held or []
        self.outcomes: List[Dict[str, Any]] = []  # run_grid: each grid point's run_one report


def collect(sweep_dir: Path, write: bool = True) -> Collected:
    """Gather ``<sweep_dir>/runs/*/`` into the sweep's tables (and write them, atomically and as
    one set, as ``<sweep_dir>/<name>.parquet``).

    ``runs`` has one row per run folder (config columns, status, first NaN, final metrics, wall
    time, ``held_by``, ``reason``, ``path`` and ``log``); a folder that cannot be read is a
    ``damaged`` row with its ``reason`` (the next launch reruns it). ``layer_stats``, ``metrics``,
    ``histograms`` and ``events`` hold the finished (done / diverged) runs' rows with the config
    columns joined. Works on a sweep that is still running (its unfinished runs are listed in
    ``pending``, those a live process holds in ``held``).
    """
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep folder {sweep_dir}")
    runs_root = sweep_dir / "runs"
    folders = sorted(p for p in runs_root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs_root.is_dir() else []
    rows: List[Dict[str, Any]] = []
    configs: List[Dict[str, Any]] = []
    frames: Dict[str, List[Tuple[int, pd.DataFrame]]] = {name: [] for name in RUN_TABLES}
    skipped: List[Tuple[str, str]] = []
    pending: List[str] = []
    held: List[Tuple[str, str]] = []
    for folder in folders:
        rdir = RunDir(folder)
        status = rdir.read_status() or {}
        log = str(folder / LOG_NAME) if (folder / LOG_NAME).exists() else None
        reason = rdir.damage()
        try:
            cfg = rdir.read_config()
            cfg = cfg if isinstance(cfg, dict) else {}
            tables.identity_columns(cfg)
        except Exception:
            cfg = {}
        per_run = {}
        if reason is None and status["status"] in FINISHED:
            try:
                per_run = {name: rdir.read_table(name) for name in RUN_TABLES}
            except Exception as exc:  # a footer that reads but a body that does not
                reason = f"unreadable table ({type(exc).__name__}: {exc})"
        row = {"run_id": status.get("run_id") or folder.name, **{f: status.get(f) for f in RUN_FIELDS},
               "held_by": None, "reason": None, "path": str(folder), "log": log}
        if reason is not None:  # damage is data: a row that says why; the next launch reruns the run
            row.update(run_id=folder.name, status=DAMAGED, reason=reason, error=reason)
            skipped.append((str(folder), reason))
        else:
            for name, df in per_run.items():
                if len(df):
                    frames[name].append((len(rows), df))
            if row["status"] not in FINISHED:
                stale_s = (cfg.get("train") or {}).get("lease_stale_s", lease.STALE_S)
                row["held_by"] = lease.live_holder(folder, float(stale_s))
                if row["held_by"]:
                    held.append((str(folder), row["held_by"]))
                if row["status"] in ("running", "interrupted"):
                    pending.append(str(folder))
        rows.append(row)
        configs.append(cfg)

    # The config columns: identity columns plus every key that varies across these runs.
    cols = tables.config_frame(configs)
    out = {"runs": _runs_frame(rows, cols)}
    for name, parts in frames.items():
        out[name] = pd.concat([df.assign(**cols.iloc[i].to_dict()) for i, df in parts], ignore_index=True) \
            if parts else empty_table(name).assign(**{c: pd.Series(dtype=object) for c in cols.columns})
    # Plain-words diagnoses (verdicts, verdict_text) beside each run, from the tables just gathered.
    out["runs"] = verdicts.annotate(out)
    if write:  # as one set: a full disk leaves the previous tables, all of them
        atomic_write_tables({sweep_dir / f"{name}.parquet": df for name, df in out.items()})
    return Collected(out, sweep_dir, skipped, pending, held)


def _runs_frame(rows: List[Dict[str, Any]], config: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["run_id", *RUN_FIELDS, *COLLECT_FIELDS, "path", "log"])
    df = pd.concat([df[["run_id"]], config.reset_index(drop=True), df.drop(columns="run_id")], axis=1)
    for c in tables.INT_RUN_FIELDS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in tables.FLOAT_RUN_FIELDS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    order = [c for c in ("dataset", "model", "init", "activation", "depth", "width", "seed") if c in df]
    return df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True) if len(df) else df


# --------------------------------------------------------------------------- what the user sees


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (:func:`initsuite.tables.group_columns`, with init, activation
    and depth always shown): runs, final test error over the seeds that finished without NaN
    (mean, std), how many diverged and the earliest first-NaN step, and how many failed or are
    still running. Only seeds are averaged."""
    if runs.empty:
        return pd.DataFrame()
    group = tables.group_columns(runs)
    keys = [c for c in group if c not in ("init", "activation", "depth")] + ["init", "activation", "depth"]
    keys = [c for c in keys if c in runs] + [c for c in group if c not in keys]
    tables.check_seeds_only(runs, keys)
    rows = []
    for values, g in runs.groupby(keys, sort=True, dropna=False):
        done = g[g.status == "done"].final_test_error.dropna() * 100
        nan = g[g.status == "diverged"].first_nonfinite_step.dropna()
        rows.append({**dict(zip(keys, values if isinstance(values, tuple) else (values,))),
                     "runs": len(g), "test_error_mean": done.mean() if len(done) else float("nan"),
                     "test_error_std": done.std(ddof=1) if len(done) > 1 else float("nan"),
                     "diverged": int((g.status == "diverged").sum()),
                     "first_nan_step": int(nan.min()) if len(nan) else None,
                     "failed": int((g.status == "failed").sum()), "running": int((g.status == "running").sum())})
    return pd.DataFrame(rows)


def format_summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no runs)"
    t = table.copy()

    def err(r):
        if pd.isna(r.test_error_mean):
            return "-"
        return f"{r.test_error_mean:.2f}" + (f" ± {r.test_error_std:.2f}" if not pd.isna(r.test_error_std) else "")

    t["test error %"] = t.apply(err, axis=1)
    t["first NaN step"] = t.first_nan_step.map(lambda v: "-" if v is None or pd.isna(v) else str(int(v)))
    keep = [c for c in t.columns if c not in ("test_error_mean", "test_error_std", "first_nan_step")]
    keep = [c for c in keep if c not in ("failed", "running") or t[c].any()]
    keep = keep[: keep.index("runs") + 1] + ["test error %"] + [c for c in keep[keep.index("runs") + 1:]
                                                                if c not in ("test error %", "first NaN step")]
    keep.insert(keep.index("diverged") + 1, "first NaN step")
    return t[keep].to_string(index=False)


def report(collected: Collected, name: Optional[str] = None, stream=None, report_path: Optional[Path] = None) -> str:
    """Print the end-of-sweep report; its last line is the sweep folder's path."""
    stream = stream or sys.stdout
    runs = collected["runs"]
    counts = runs.status.value_counts().to_dict() if len(runs) else {}
    lines = [f"[sweep {name or collected.sweep_dir.name}] {len(runs)} runs: "
             + ", ".join(f"{counts.get(s, 0)} {s}" for s in (*STATUSES, DAMAGED)
                         if counts.get(s, 0) or s in FINISHED),
             format_summary(summary_table(runs))]
    failed = runs[runs.status == "failed"]
    if len(failed):
        lines.append(f"failed runs ({len(failed)}):")
        for r in failed.itertuples():
            error = str(r.error or "?").strip().splitlines()[0][:200]  # the log has the rest
            lines.append(f"  {r.run_id} init={r.init} activation={r.activation} depth={r.depth} seed={r.seed}: "
                         f"{error}\n    log: {r.log or r.path}")
    if collected.pending:
        lines.append(f"{len(collected.pending)} runs still running or interrupted: their per-step tables are not "
                     f"collected yet")
    if collected.held:
        lines.append(f"{len(collected.held)} runs held by other launchers:")
        lines += [f"  {Path(folder).name}: held by {who}" for folder, who in collected.held]
    if collected.skipped:
        lines.append(f"skipped {len(collected.skipped)} broken run folders ({DAMAGED}; the next launch reruns them):")
        lines += [f"  {folder}: {why}" for folder, why in collected.skipped]
    if report_path is not None:
        lines.append(f"report: {report_path} (figures in {Path(report_path).parent / 'figures'})")
    lines.append(f"tables: {', '.join(f'{t}.parquet' for t in TABLES)} in")
    lines.append(str(collected.sweep_dir))
    text = "\n".join(lines)
    print(text, file=stream, flush=True)
    return text


def collect_main(argv: Optional[Sequence[str]] = None) -> int:
    """``make collect SWEEP=<folder>``: (re)collect a sweep, finished or not, and report."""
    parser = argparse.ArgumentParser(prog="initsuite collect", description=collect_main.__doc__)
    parser.add_argument("sweep", nargs="?", help="sweep folder, e.g. results/sweeps/default")
    args = parser.parse_args(argv)
    if not args.sweep:
        found = sorted(str(p) for p in Path("results/sweeps").glob("*") if p.is_dir())
        parser.error("name the sweep folder: make collect SWEEP=<folder>"
                     + (f" (found: {', '.join(found)})" if found else ""))
    try:
        report(collect(Path(args.sweep)))
    except FileNotFoundError as exc:
        print(f"collect: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk: the previous tables are intact
        print(f"collect: {write_error(exc)}", file=sys.stderr)
        return 1
    return 0


def write_error(exc: OSError) -> str:
    """One line for a collection that could not write its tables."""
    return f"could not write the sweep's tables, the previous ones are kept: {describe_error(exc)}"


# --------------------------------------------------------------------------- from Python


def _grid_job(overrides: Sequence[str], sweep_dir: str, key: str, threads: int, quiet: bool,
              experiment: Optional[str] = None, updates: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    cfg = compose(list(overrides))
    with open_dict(cfg):
        for k, v in (updates or {}).items():  # values the command line cannot spell (a registered builder)
            OmegaConf.update(cfg, k, v, merge=False)
        if experiment:  # set here: with a preset loaded, `experiment=x` would name another preset
            cfg.experiment = experiment
        if threads and not cfg.train.threads:
            cfg.train.threads = threads
        if quiet:
            cfg.train.progress = False
    if threads:
        pin_gpu()
    return run_one(cfg, Path(sweep_dir), key=key, quiet=quiet, own_process=bool(threads))


def run_grid(grid_points: Sequence[Sequence[str]], overrides: Sequence[str] = (), experiment: Optional[str] = None,
             n_jobs: int = 1, verbose: bool = True, updates: Optional[Mapping[str, Any]] = None) -> Collected:
    """Run a grid given as override lists (each on top of ``overrides``) as one sweep, then
    collect it: ``run_grid([["init=standard"], ["init=glorot_uniform"]], ["experiment=smoke"])``.

    The sweep folder is ``<paths.results>/sweeps/<experiment>/``, the one ``make sweep`` uses
    and ``make figures SWEEP=<folder>`` reads; ``experiment`` (if given) replaces the config key
    in every run. ``updates``: ``{dotted key: value}`` set on every composed config (values the
    override grammar cannot spell; in-process only, ``n_jobs=1``). ``n_jobs > 1`` runs the points
    in that many processes (joblib/loky), each with cores / n_jobs TensorFlow threads. Returns
    :func:`collect`'s tables; ``outcomes`` holds each point's :func:`run_one` report, in grid order.
    """
    points = [[*overrides, *p] for p in grid_points] or [list(overrides)]
    first = compose(points[0])
    name = experiment or str(first.experiment)
    sweep_dir = (Path(first.paths.results).expanduser() / "sweeps" / name).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    progress.reset(sweep_dir)
    stream = sys.stderr if verbose else open(os.devnull, "w")
    monitor = progress.ProgressMonitor(sweep_dir, len(points), name, live=False, stream=stream, interval=0.5)
    monitor.start()
    try:
        if n_jobs == 1:
            outcomes = [_grid_job(p, str(sweep_dir), str(i), 0, True, experiment, updates)
                        for i, p in enumerate(points)]
        else:
            if updates:
                raise ValueError("run_grid(updates=...) runs in this process only: use n_jobs=1")
            jobs = usable_cores() if n_jobs < 0 else n_jobs
            threads = max(1, usable_cores() // jobs)
            outcomes = Parallel(n_jobs=jobs, backend="loky", batch_size=1)(
                delayed(_grid_job)(p, str(sweep_dir), str(i), threads, True, experiment)
                for i, p in enumerate(points))
    finally:
        monitor.stop()
        if not verbose:
            stream.close()
    collected = collect(sweep_dir)
    collected.outcomes = list(outcomes)
    if verbose:
        report(collected, name)
    return collected
