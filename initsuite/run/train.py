"""One instrumented training run: ``run(cfg) -> RunResult``.

Data flow: config -> data, model (with the chosen initializer and activation),
probes -> a ``tf.GradientTape`` training loop inside ``tf.function`` -> the run
folder's tables. The loop measures the fixed probe batch at step 0 (before any
update), at log-spaced steps and epoch ends (or every ``probes.every`` steps) and at the
last step; every ``probes.train_every`` steps the compiled step itself reduces its own
training batch into a device buffer (:mod:`initsuite.measure.step_stats`; rows with
``batch = train``). Every training step is checked for NaN/Inf at the cost of one pass
over the activations, and the first non-finite value's step, layer and phase are data.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from initsuite.setup import activations, custom, initializers, lsuv, models

from initsuite.run import checkpoint  # noqa: F401  (lsuv: data-driven inits)
from initsuite.atomic import describe_error, small_tables_allocator
from initsuite.config import ConfigError, check as check_values
from initsuite.registry import UnknownNameError
from initsuite.run import lease as leases
from initsuite.run import rows
from initsuite.run.results import RunDir, run_dir_for as _run_dir_for
from initsuite.setup import data as data_mod
from initsuite.setup.data import DataError
from initsuite.setup.optim import OPTIMIZERS, make_optimizer
from initsuite.tables import FINISHED, HELD, PROBE, TABLE_COLUMNS, TRAIN, batch_rows, empty_table

EVAL_BATCH = 1000


@dataclass
class RunResult:
    run_id: str
    path: Path
    status: str
    layer_stats: pd.DataFrame
    metrics: pd.DataFrame
    histograms: pd.DataFrame
    events: pd.DataFrame
    info: Dict[str, Any]
    skipped: bool = False


def as_container(cfg) -> Dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return dict(cfg)


def validate(cfg) -> None:
    """Fail before any work on names the registries do not know (their errors list the valid ones)
    and on values out of range (:func:`initsuite.config.check`)."""
    check_values(cfg)
    initializers.get(cfg.init.name)
    if cfg.model.name == "custom":
        custom.validate(cfg)  # the builder imports and takes its arguments; activation may be `keep`
    elif cfg.activation.name == "keep":
        raise ConfigError(f"activation=keep keeps a custom model's own activations; model={cfg.model.name} "
                          f"needs one of: {', '.join(activations.names())}")
    else:
        activations.get(cfg.activation.name)
    if cfg.model.name not in models.MODELS and cfg.model.name != "custom":
        models.MODELS.get(cfg.model.name)
    OPTIMIZERS.get(cfg.optimizer.name)


def run_dir_for(cfg) -> RunDir:
    """The run folder of a composed config (``dataset.source`` pinned first: :func:`pin_data_source`)."""
    pin_data_source(cfg)
    return _run_dir_for(as_container(cfg))


def pin_data_source(cfg) -> None:
    """``dataset.source=auto`` replaced by the source it stands for (:func:`initsuite.setup.data.pin`)."""
    with open_dict(cfg):
        data_mod.pin(cfg.dataset)


def run(cfg) -> RunResult:
    """Train one configured run and write its folder. A run whose folder already says
    ``done`` or ``diverged`` is not redone unless ``force=true``; one that another live
    process holds (its lease, :mod:`initsuite.run.lease`) is skipped with status ``held``."""
    validate(cfg)
    rdir = run_dir_for(cfg)  # pins the data source first: the id names the data used
    container = as_container(cfg)
    rid = rdir.path.name
    if _finished(rdir, cfg):
        return load_result(rdir, skipped=True)
    lease = leases.acquire(rdir.path, float(cfg.train.lease_heartbeat_s), float(cfg.train.lease_stale_s))
    if not isinstance(lease, leases.Lease):
        _log(f"[initsuite] run {rid} is held by {leases.holder(lease)}: skipped ({rdir.path})")
        return RunResult(rid, rdir.path, HELD, *(empty_table(n) for n in TABLE_COLUMNS),
                         info={"held_by": leases.holder(lease)}, skipped=True)
    with lease:
        if lease.took_over:
            _log(f"[initsuite] run {rid}: took over the stale lease of {leases.holder(lease.took_over)}")
        if _finished(rdir, cfg):  # finished by the previous holder while we looked
            return load_result(rdir, skipped=True)
        return _run_leased(cfg, container, rid, rdir, lease)


def _finished(rdir: RunDir, cfg) -> bool:
    prior = rdir.read_status()
    if not prior or prior.get("status") not in FINISHED or cfg.get("force", False):
        return False
    damage = rdir.damage()
    if damage:
        _log(f"[initsuite] run {rdir.path.name} says {prior['status']} but is damaged ({damage}): running it again")
        return False
    _log(f"[initsuite] run {rdir.path.name} is already {prior['status']}: {rdir.path} (force=true reruns it)")
    return True


def _run_leased(cfg, container, rid: str, rdir: RunDir, lease) -> RunResult:
    rdir.write_config(container)
    started = time.time()
    rdir.write_status("running", run_id=rid, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      pid=os.getpid(), host=os.uname().nodename, error=None)
    if cfg.get("force", False):
        checkpoint.remove(rdir.path)  # a forced rerun starts over
    for tmp in rdir.path.glob(".*.tmp"):  # what a write killed before its rename left (we hold the lease)
        tmp.unlink(missing_ok=True)
    try:
        with checkpoint.Signals() as signals:
            trainer = Trainer(cfg, rid, rdir)
            trainer.lease = lease
            trainer.checkpoints = checkpoint.Schedule(int(cfg.train.checkpoint_every),
                                                      float(cfg.train.checkpoint_minutes), signals)
            info = trainer.fit()
    except checkpoint.RunInterrupted as exc:  # its checkpoint is written: the relaunch resumes there
        rdir.write_status("interrupted", steps=exc.step, signal=exc.signal, wall_s=time.time() - started,
                          error=f"interrupted by {exc.signal} at step {exc.step}: relaunch to resume")
        _log(f"[initsuite] run {rid}: interrupted by {exc.signal} at step {exc.step}; its checkpoint is written, "
             f"the same command resumes it")
        checkpoint.forward(exc)  # submitit: requeue the job
        raise
    except BaseException as exc:  # recorded, then raised: the caller decides whether to go on
        if not isinstance(exc, leases.LeaseLost):  # the new holder owns the folder now
            rdir.write_status("failed", wall_s=time.time() - started, error=describe_error(exc),
                              traceback=traceback.format_exc())
        raise
    info["wall_s"] = time.time() - started
    rdir.write_status(info.pop("status"), **info)
    checkpoint.remove(rdir.path)  # finished: the tables hold everything
    result = load_result(rdir)
    print_summary(result)
    return result


def run_cli(cfg) -> RunResult:
    """``run`` for the command line: a mistake the user can fix (unknown name, bad value,
    missing or corrupt data) is printed as one clear message and exit status 2, not a
    traceback, and leaves no run folder behind (unless the folder was there before)."""
    from initsuite.configure import user_message

    try:
        path = run_dir_for(cfg).path
    except Exception:  # does not resolve: run() raises the error below
        path = None
    existed = path is not None and path.exists()
    made = path  # the outermost folder this run would create (results/ and runs/ too, on a first run)
    while made is not None and not existed and not made.parent.exists():
        made = made.parent
    try:
        return run(cfg)
    except checkpoint.RunInterrupted as exc:
        print(f"initsuite: {exc}; the checkpoint is written: run the same command again to resume",
              file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise
        if made is not None and not existed:
            shutil.rmtree(made, ignore_errors=True)
        print(f"initsuite: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def load_result(rdir: RunDir, skipped: bool = False) -> RunResult:
    tables = {}
    for name in ("layer_stats", "metrics", "histograms", "events"):
        path = rdir.table_path(name)
        tables[name] = pd.read_parquet(path) if path.exists() else empty_table(name)
    info = rdir.read_status() or {}
    return RunResult(info.get("run_id", rdir.path.name), rdir.path, info.get("status", "unknown"),
                     tables["layer_stats"], tables["metrics"], tables["histograms"], tables["events"],
                     info, skipped)


def _log(msg: str) -> None:
    print(msg, flush=True)


def configure_tensorflow(threads: int) -> None:
    """Thread counts must be set before TensorFlow starts its runtime; later calls are ignored."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # each run traces its own tf.functions; the retracing warning is noise
    if threads and threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass
    try:
        # Same config + seed -> identical statistics on CPU.
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass


class Trainer:
    def __init__(self, cfg, rid: str, rdir: RunDir):
        import keras  # TensorFlow starts with the first run, not with the import
        import tensorflow as tf

        self.cfg, self.rid, self.rdir = cfg, rid, rdir
        configure_tensorflow(int(cfg.train.threads))
        small_tables_allocator()
        keras.backend.clear_session()  # no state leaks between runs of one process
        keras.utils.set_random_seed(int(cfg.seed))
        self.tf = tf
        self.data = data_mod.load(cfg.dataset, seed=int(cfg.seed))
        from initsuite.measure.instrument import precision_scope

        with precision_scope(cfg):  # float32, or bfloat16 compute for train.mixed_precision
            self.built = build_model(cfg, self.data.input_shape, self.data.num_classes)
        self.model = self.built.model
        self.init_info = {}
        post_build = initializers.get(cfg.init.name).post_build
        if post_build is not None:  # data-driven init: sees one training batch before step 0
            n = min(int(cfg.train.batch_size), len(self.data.x_train))
            self.init_info = post_build(self.built, self.data.x_train[:n], cfg) or {}
        self.optimizer = make_optimizer(cfg.optimizer)
        self.optimizer.build(self.model.trainable_variables)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
        self.rows: Dict[str, List[dict]] = {"layer_stats": [], "metrics": [], "histograms": [], "events": []}
        # Called as callback(step, loss) before each step (loss: the previous step's, a device tensor,
        # or None): for tools that watch the loop, e.g. the benchmark's clock; the loop knows none of them.
        self.step_callbacks: List[Callable[[int, Any], None]] = []
        from initsuite.measure.instrument import Instrument

        self.inst = Instrument(self.built, self.loss_fn, self.optimizer, cfg)

    # -- schedule -------------------------------------------------------------------------
    def _schedule(self):
        cfg = self.cfg
        n = len(self.data.x_train)
        bs = int(cfg.train.batch_size)
        if n < bs:
            raise ConfigError(f"train.batch_size={bs} is larger than the training set ({n} examples)")
        self.steps_per_epoch = n // bs
        total = self.steps_per_epoch * int(cfg.train.epochs)
        if cfg.train.max_steps is not None:
            total = min(total, int(cfg.train.max_steps))
        self.total_steps = total
        if cfg.probes.every is None:  # log-spaced, and each epoch's end
            probe_steps = log_spaced_steps(total) | {e * self.steps_per_epoch for e in
                                                     range(1, int(cfg.train.epochs) + 1)}
            probe_steps = {s for s in probe_steps if s <= total} | {0, total}
        else:
            probe_steps = set(range(0, total + 1, int(cfg.probes.every))) | {0, total}
        hist = set()
        for s in cfg.probes.hist_steps:
            s = int(s)
            s = total if s < 0 else s
            if 0 <= s <= total:
                hist.add(s)
        self.hist_steps = hist
        self.probe_steps = probe_steps | hist if cfg.probes.enabled else set()
        eval_steps = {0, total} | {e * self.steps_per_epoch for e in range(1, int(cfg.train.epochs) + 1)}
        if int(cfg.train.eval_every) > 0:
            eval_steps |= set(range(0, total + 1, int(cfg.train.eval_every)))
        eval_steps |= {int(s) for s in (cfg.train.get("eval_steps") or []) if int(s) >= 0}
        self.eval_steps = {s for s in eval_steps if s <= total}

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    # -- data -----------------------------------------------------------------------------
    def _train_dataset(self, skip: int = 0):
        ds = train_dataset(self.data, int(self.cfg.train.batch_size), int(self.cfg.seed))
        return ds.skip(skip) if skip else ds  # the seeded order, from where a checkpoint left it

    def _eval_sets(self):
        d, k = self.data, int(self.cfg.train.eval_examples)
        return {
            "train": (d.x_train[:k], d.y_train[:k]),
            "valid": (d.x_valid[:k], d.y_valid[:k]),
            "test": (d.x_test[:k], d.y_test[:k]),
        }

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> Dict[str, Any]:
        cfg, tf = self.cfg, self.tf
        self._schedule()
        probe_n = min(int(cfg.probes.batch_size), len(self.data.x_test))
        probe_x = tf.constant(self.data.x_test[:probe_n])
        probe_y = tf.constant(self.data.y_test[:probe_n].astype(np.int64))
        eval_sets = self._eval_sets()
        check_every = max(1, int(cfg.train.nonfinite_check_every))
        stop_on_nan = bool(cfg.train.stop_on_nonfinite)
        start = self._resume()  # 0, or the step of the run's checkpoint (its state restored)
        it = iter(self._train_dataset(skip=start))
        status, step, loss = "done", start, None
        show_loss, next_show = bool(cfg.train.progress), 0.0
        bar = tqdm(total=self.total_steps, desc=f"run {self.rid}", unit="step", leave=False,
                   disable=not cfg.train.progress, mininterval=1.0, file=sys.stderr)
        t0 = time.time()
        try:
            while True:
                self._step_hook(step)
                for callback in self.step_callbacks:  # tools that watch the loop (make bench's clock)
                    callback(step, loss)
                measure = step in self.probe_steps
                if measure:
                    self._probe(step, probe_x, probe_y)
                if step in self.eval_steps:
                    self._evaluate(step, eval_sets)
                # Reading the in-graph flag syncs with the device, so only now and then
                # (and right after the first update, where bad inits show up).
                diverged = self._check_nonfinite(step) if (
                    measure or step % check_every == 0 or step in (1, self.total_steps)) else False
                if diverged and stop_on_nan:
                    status = "diverged"
                    break
                if step >= self.total_steps:
                    break
                loss = self.inst.train_step_on(it, step, self.inst.records(step, measure))
                step += 1
                bar.update(1)
                # Reading the loss waits for the device: only for the bar, at most once a second.
                if show_loss and (time.monotonic() >= next_show or step == self.total_steps):
                    bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
                    next_show = time.monotonic() + 1.0
            if status == "done" and self.inst.first_nonfinite() is not None:
                status = "diverged"  # kept going past a NaN (train.stop_on_nonfinite=false)
        finally:
            bar.close()
        train_s = time.time() - t0
        self._take_step_stats()
        self._flush()
        first = self.inst.first_nonfinite()
        info: Dict[str, Any] = {
            "status": status,
            "steps": step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "train_s": train_s,
            "device": self.device,
            "data": self.data.description,
            "data_source": self.data.source,
            **self.data.sizes,
            "layers": [p.name for p in self.built.points],
            "reinitialized": list(self.built.reinitialized),
            "init_info": self.init_info,
            "first_nonfinite_step": first["step"] if first else None,
            "first_nonfinite_layer": first["layer"] if first else None,
            "first_nonfinite_phase": first["phase"] if first else None,
            "first_nonfinite_tensor": first["tensor"] if first else None,
        }
        info.update(self._final_metrics())
        return info

    lease = None  # the run's lease (initsuite.run.lease), set by run()
    checkpoints = None  # when to checkpoint (initsuite.run.checkpoint.Schedule), set by run()
    start_step = 0

    def _step_hook(self, step: int) -> None:
        """Called at the top of every step, before its measurements: stops a run whose lease
        another launcher took over; writes a checkpoint when one is due, or when a signal
        came (and then stops the run: :class:`initsuite.run.checkpoint.RunInterrupted`)."""
        if self.lease is not None:
            self.lease.check()
        sched = self.checkpoints
        if sched is None or step >= self.total_steps:  # the last step: finishing is quicker than resuming
            return
        signum = sched.signals.pending() if sched.signals is not None else None
        if signum is not None or sched.due(step, self.start_step):
            self._take_step_stats()  # the checkpoint holds every row recorded so far
            checkpoint.save(self, step)
            sched.saved()
            if signum is not None:
                raise checkpoint.RunInterrupted(step, signum, sched.signals.previous(signum))

    def _resume(self) -> int:
        """Restore the run's checkpoint, if it has one that fits; the step to go on from."""
        self.start_step = 0
        ckpt = checkpoint.load(self.rdir.path) if self.checkpoints is not None else None
        if ckpt is not None:
            why = checkpoint.mismatch(self, ckpt)
            if why:
                _log(f"[initsuite] run {self.rid}: not resuming from its checkpoint ({why}): starting at step 0")
            else:
                self.start_step = checkpoint.restore(self, ckpt)
                _log(f"[initsuite] run {self.rid}: resumed from its checkpoint at step {self.start_step} "
                     f"of {self.total_steps}")
        return self.start_step

    # -- measurements ---------------------------------------------------------------------
    def _probe(self, step: int, x, y) -> None:
        with_hist = step in self.hist_steps
        stats, hists = self.inst.probe(x, y, with_hist)
        rows.add_probe(self.rows, self.rid, step, self.epoch_of(step), stats, hists, self.inst.layer_index)

    def _take_step_stats(self) -> None:
        """The training-batch rows the device buffer holds (``batch = train``), into the tables."""
        rows.add_step_stats(self.rows, self.rid, self.inst, self.epoch_of)

    def _evaluate(self, step: int, eval_sets) -> None:
        epoch = self.epoch_of(step)
        for split, (x, y) in eval_sets.items():
            loss, err = self.inst.evaluate(x, y, EVAL_BATCH)
            for metric, value in (("loss", loss), ("error", err)):
                self.rows["metrics"].append(dict(run_id=self.rid, step=step, epoch=epoch, split=split,
                                                 metric=metric, value=float(value)))

    def _check_nonfinite(self, step: int) -> bool:
        first = self.inst.first_nonfinite()
        if first is None:
            return False
        if not any(r["kind"] == "first_nonfinite" for r in self.rows["events"]):
            self.rows["events"].append(rows.nonfinite_event(self.rid, first, self.epoch_of(first["step"]), step))
        return True

    def _final_metrics(self) -> Dict[str, Any]:
        out = {}
        m = pd.DataFrame(self.rows["metrics"])
        if len(m):
            last = m[m.step == m.step.max()]
            for r in last.itertuples():
                out[f"final_{r.split}_{r.metric}"] = r.value
        return out

    def _flush(self) -> None:
        out = {}
        for name, recorded in self.rows.items():
            df = pd.DataFrame(recorded) if recorded else empty_table(name)
            if "batch" in df.columns and len(df):
                # one order however the rows arrived (a resumed run takes its training-batch rows at
                # the checkpoint, an uninterrupted one at the end): the probe's, then the training batch's
                df = df.sort_values(["batch", "step"], kind="stable", key=lambda c: c.map({PROBE: 0, TRAIN: 1})
                                    if c.name == "batch" else c).reset_index(drop=True)
            out[name] = df
        self.rdir.write_tables(out)


def log_spaced_steps(total: int) -> set:
    """0, 10, 30, 100, 300, 1000, ... up to ``total`` (two per decade: the early steps, where an
    initialization shows, are resolved; a long run adds a probe per half decade)."""
    out, decade = {0}, 10
    while decade <= total:
        out |= {s for s in (decade, 3 * decade) if s <= total}
        decade *= 10
    return out


def train_dataset(data, batch_size: int, seed: int):
    """The training stream: shuffled each epoch from ``seed``, batches of ``batch_size``
    (the last partial batch dropped), repeated, prefetched while the device computes. The
    step takes its batch from the iterator inside the graph, as ``model.fit`` does (on a
    GPU the host-to-device copy is part of the step there too)."""
    import tensorflow as tf

    if getattr(data, "train_stream", None) is not None:  # online data (shapeset): fresh examples forever
        return data.train_stream(int(batch_size), int(seed))
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train.astype(np.int64)))
    ds = ds.shuffle(len(data.x_train), seed=int(seed), reshuffle_each_iteration=True)
    return ds.batch(int(batch_size), drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)


def build_model(cfg, input_shape, num_classes):
    if cfg.model.name == "custom":
        return custom.build(cfg, input_shape, num_classes)
    return models.build(cfg, input_shape, num_classes)


def print_summary(result: RunResult) -> None:
    """A short per-layer table at the first and last measured step, then the folder."""
    ls = batch_rows(result.layer_stats)  # the fixed probe's rows
    info = result.info
    lines = [f"[initsuite] run {result.run_id}: {result.status} after {info.get('steps', '?')} steps "
             f"on {info.get('device', '?')} ({info.get('wall_s', 0):.1f} s)"]
    if info.get("data"):
        lines.append(f"  data: {info['data']}, {info.get('n_train')} train / {info.get('n_valid')} valid / "
                     f"{info.get('n_test')} test examples")
    if len(ls):
        want = {("activation", "std"): "act std", ("backprop_grad", "var"): "dC/ds var",
                ("weight_grad", "var"): "dC/dW var", ("activation", "saturated_frac"): "saturated"}
        for step in sorted({ls.step.min(), ls.step.max()}):
            sub = ls[ls.step == step]
            lines.append(f"  step {step}:")
            lines.append("    " + f"{'layer':<14}" + "".join(f"{v:>12}" for v in want.values()))
            for layer, g in sub.sort_values("layer_index").groupby("layer_index", sort=True):
                name = g.layer.iloc[0]
                cells = []
                for (tensor, stat) in want:
                    v = g[(g.tensor == tensor) & (g.stat == stat)].value
                    cells.append(f"{v.iloc[0]:>12.3g}" if len(v) else f"{'-':>12}")
                lines.append("    " + f"{name:<14}" + "".join(cells))
    for split in ("train", "valid", "test"):
        if f"final_{split}_error" in info:
            lines.append(f"  final {split}: loss {info[f'final_{split}_loss']:.4g}, "
                         f"error {100 * info[f'final_{split}_error']:.2f} %")
    if info.get("first_nonfinite_step") is not None:
        lines.append(f"  first NaN/Inf: step {info['first_nonfinite_step']}, phase {info['first_nonfinite_phase']}, "
                     f"layer {info['first_nonfinite_layer']} ({info['first_nonfinite_tensor']})")
    lines.append(f"  run folder: {result.path}")
    _log("\n".join(lines))
