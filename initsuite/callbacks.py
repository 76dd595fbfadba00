"""Hydra callbacks of a sweep (registered by ``conf/hydra/callbacks/sweep.yaml``).

:class:`SweepCallback` runs in the launching process: before the first job it prints
what is about to run and starts the progress line; after the last job it collects the
run folders into the sweep's tables and prints the summary, the failures with their
logs, and, as the very last line, the sweep folder.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from initsuite import progress, sweep


class SweepCallback(Callback):
    """Progress line while the jobs run; collection, summary and the folder's path after them."""

    def __init__(self, collect: bool = True) -> None:
        self.collect = collect
        self.monitor: Optional[progress.ProgressMonitor] = None

    def __getstate__(self):
        # Hydra ships its context, callbacks included, to every job process: not the thread.
        return {**self.__dict__, "monitor": None}

    @staticmethod
    def _sweep_dir(config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)).expanduser().resolve()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_data_once(config)
        sweep_dir = self._sweep_dir(config)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            params = config.hydra.sweeper.get("params")
            total: Optional[int] = len(sweep.job_overrides(
                OmegaConf.to_container(params, resolve=False) if params else {}, list(config.hydra.overrides.task)))
        except Exception:  # another sweeper (e.g. optuna): the total is its business
            total = None
        mode = sweep.launch_mode(config.hydra.launcher)
        name = str(config.get("experiment", sweep_dir.name))
        progress.reset(sweep_dir)
        # loky replaces a worker whose memory grew by 300 MB (TensorFlow's caches do): harmless, and
        # its warning would land in the middle of the progress line.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs", category=UserWarning)
        print(f"[sweep {name}] {total if total is not None else '?'} runs, {mode.describe()}, in {sweep_dir}",
              file=sys.stderr, flush=True)
        # Redraw in place only where no per-run bar or job output shares the terminal.
        live = sys.stderr.isatty() and mode.parallel
        self.monitor = progress.ProgressMonitor(sweep_dir, total, name, live=live).start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.collect:
            try:
                collected = sweep.collect(self._sweep_dir(config))
            except OSError as exc:  # a full disk: every run folder is intact; `make collect` redoes this
                print(f"[sweep] {sweep.write_error(exc)}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            sweep.report(collected, str(config.get("experiment", "")) or None)


def _check_data_once(config: DictConfig) -> None:
    """Missing or corrupt data would fail every run of the grid with the same message: when the
    dataset is not a sweep axis, load it once up front and stop with that one message (exit 2)."""
    params = config.hydra.sweeper.get("params") or {}
    swept = [str(k) for k in params] + [o.split("=", 1)[0] for o in config.hydra.overrides.task if "," in o]
    if any(k.lstrip("+~").startswith("dataset") for k in swept) or config.dataset.name == "synthetic":
        return
    from initsuite import data

    try:
        data.load(config.dataset, seed=int(config.seed))
    except data.DataError as exc:
        print(f"initsuite: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
