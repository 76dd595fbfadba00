"""Checkpoint and resume inside a run, and the signals that interrupt one.

A checkpoint is one file, ``<run>/checkpoint.npz``, written atomically (temporary file +
rename): a run killed while writing it keeps the previous one. It holds

* every model variable (weights, BatchNorm statistics, Keras seed-generator states), every
  optimizer variable (iteration count, momenta, Adam moments) and the instrument's
  first-non-finite record, in the order the freshly built run lists them (names and shapes
  are stored too and checked on restore);
* the NumPy and Python global RNG states;
* the step it was taken at (the top of that step, before its measurements) and every table
  row recorded before it.

The input pipeline needs no state of its own: the training stream is a seeded shuffle
(``initsuite.run.train.train_dataset``), so a resumed run rebuilds it and skips the batches the
checkpointed steps consumed. With op determinism on (CPU), a resumed run's tables equal an
uninterrupted run's.

When: every ``train.checkpoint_every`` steps and every ``train.checkpoint_minutes`` minutes
of training (0 turns either off), and at once on SIGTERM or SIGUSR1 (SLURM's preemption and
``--signal``): the run writes a last checkpoint, says ``interrupted`` (with its step) in
status.json, and stops; relaunching the same command resumes it. Under submitit, whose
SIGUSR2 handler requeues the job, that handler runs after the checkpoint is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from initsuite.atomic import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.npz"
SIGNALS = ("SIGTERM", "SIGUSR1")  # always handled while a run trains
CHAINED = ("SIGUSR2",)  # handled only where someone (submitit) already handles them: theirs runs after ours


class RunInterrupted(BaseException):
    """A signal stopped the run after it wrote a checkpoint at ``step``. A BaseException, like
    KeyboardInterrupt: the sweep must stop too, not record it as a failed run and go on."""

    def __init__(self, step: int, signum: int, previous=None):
        self.step, self.signum, self.previous = step, signum, previous
        super().__init__(f"interrupted by {self.signal} at step {step}")

    @property
    def signal(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Signals:
    """While active (a context manager), SIGTERM / SIGUSR1 (and a chained SIGUSR2) only note
    that they came; the training loop asks :meth:`pending` at each step boundary."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum

    def pending(self) -> Optional[int]:
        return self.received

    def previous(self, signum: int):
        """The handler that was installed before ours, if it is a function (submitit's)."""
        prev = self._previous.get(signum)
        return prev if callable(prev) else None

    def __enter__(self) -> "Signals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for name in SIGNALS + CHAINED:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            current = signal.getsignal(sig)
            if name in CHAINED and not callable(current):
                continue
            self._previous[sig] = current
            signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)


def forward(exc: RunInterrupted) -> None:
    """Hand an interrupting signal to the handler that was there before ours (submitit:
    checkpoint its job and requeue it, then exit)."""
    if exc.previous is not None:
        exc.previous(exc.signum, None)


# --------------------------------------------------------------------------- the file


def path_of(run_path: Path) -> Path:
    return Path(run_path) / CHECKPOINT_NAME


def state_variables(trainer) -> List[Any]:
    """What a resumed run must get back, in a fixed order: the model's and the optimizer's
    variables, then every ``tf.Variable`` the instrument holds (by attribute name)."""
    import tensorflow as tf

    inst = [v for _, v in sorted(vars(trainer.inst).items()) if isinstance(v, tf.Variable)]
    return [*trainer.model.variables, *trainer.optimizer.variables, *inst]


def _var_name(v) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", ""))


def save(trainer, step: int) -> Path:
    variables = state_variables(trainer)
    np_state = np.random.get_state()
    meta = {
        "run_id": trainer.rid, "step": int(step), "total_steps": int(trainer.total_steps),
        "names": [_var_name(v) for v in variables], "shapes": [list(np.shape(v)) for v in variables],
        "rows": trainer.rows, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "numpy_rng": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta, default=_plain)), numpy_rng_key=np_state[1], **arrays)
    path = path_of(trainer.rdir.path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")


def load(run_path: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint of a run folder (meta dict with ``arrays``), or None if there is none or
    it cannot be read (then the run starts over)."""
    path = path_of(run_path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            meta["arrays"] = [z[f"v{i}"] for i in range(len(meta["names"]))]
            meta["numpy_rng_key"] = z["numpy_rng_key"]
        return meta
    except Exception:
        return None


def mismatch(trainer, ckpt: Dict[str, Any]) -> Optional[str]:
    """Why a checkpoint does not fit this run (None if it does)."""
    variables = state_variables(trainer)
    if ckpt.get("run_id") != trainer.rid:
        return f"it belongs to run {ckpt.get('run_id')}"
    if ckpt.get("total_steps") != trainer.total_steps:
        return f"it was made for {ckpt.get('total_steps')} steps, this run has {trainer.total_steps}"
    if [list(np.shape(v)) for v in variables] != ckpt["shapes"]:
        return "its variables do not match this model's"
    if not 0 <= int(ckpt["step"]) <= trainer.total_steps:
        return f"step {ckpt['step']} is outside the run"
    return None


def restore(trainer, ckpt: Dict[str, Any]) -> int:
    """Put a checkpoint's state back into a freshly built trainer; returns its step."""
    for v, value in zip(state_variables(trainer), ckpt["arrays"]):
        v.assign(value)
    trainer.rows = {name: list(rows) for name, rows in ckpt["rows"].items()}
    kind, pos, has_gauss, cached = ckpt["numpy_rng"]
    np.random.set_state((kind, ckpt["numpy_rng_key"], pos, has_gauss, cached))
    version, internal, gauss = ckpt["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return int(ckpt["step"])


def remove(run_path: Path) -> None:
    path_of(run_path).unlink(missing_ok=True)


class Schedule:
    """When the loop writes a checkpoint: every ``every`` steps, every ``minutes`` minutes, or
    at once when a signal is pending (then it also stops the run)."""

    def __init__(self, every: int, minutes: float, signals: Optional[Signals] = None):
        self.every, self.seconds = int(every), float(minutes) * 60.0
        self.signals = signals
        self._last = time.monotonic()

    def due(self, step: int, start: int) -> bool:
        if step == start:
            return False  # just restored or just started: nothing new to save
        if self.every > 0 and step % self.every == 0:
            return True
        return self.seconds > 0 and time.monotonic() - self._last >= self.seconds

    def saved(self) -> None:
        self._last = time.monotonic()
