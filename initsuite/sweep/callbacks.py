"""Hydra callbacks of a sweep (registered by ``conf/hydra/callbacks/sweep.yaml``).

:class:`SweepCallback` runs in the launching process: before the first job it prints
what is about to run and starts the progress line; after the last job it collects the
run folders into the sweep's tables, draws every figure and ``report.html`` from them,
and prints the summary, the failures with their logs, and, as the very last line, the
sweep folder.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from initsuite.setup import data

from initsuite.sweep import progress

from initsuite import sweep
from initsuite.configure import CONF_DIR


class SweepCallback(Callback):
    """Progress line while the jobs run; collection, summary and the folder's path after them."""

    def __init__(self, collect: bool = True, figures: bool = True) -> None:
        self.collect, self.figures = collect, figures
        self.monitor: Optional[progress.ProgressMonitor] = None

    def __getstate__(self):
        # Hydra ships its context, callbacks included, to every job process: not the thread.
        return {**self.__dict__, "monitor": None}

    @staticmethod
    def _sweep_dir(config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)).expanduser().resolve()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir(config)
        _resolve_data_once(config, sweep_dir)
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
            sweep_dir = self._sweep_dir(config)
            try:
                collected = sweep.collect(sweep_dir)
            except OSError as exc:  # a full disk: every run folder is intact; `initsuite collect` redoes this
                print(f"[sweep] {sweep.write_error(exc)}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            page = None
            if self.figures and len(collected["runs"]):
                from initsuite.analysis import report  # tables in, figures out: no TensorFlow

                try:
                    page = report.build(sweep_dir, dict(collected))
                except Exception as exc:  # a figure bug must not hide the sweep's results
                    print(f"[sweep] figures failed ({type(exc).__name__}: {exc}); the tables are written; "
                          f"retry with: initsuite figures {sweep_dir}", file=sys.stderr, flush=True)
            sweep.report(collected, str(config.get("experiment", "")) or None, report_path=page)


def swept_datasets(config: DictConfig) -> List[str]:
    """The dataset names a sweep will run: the values of a swept ``dataset`` axis, or the configured one."""
    params = config.hydra.sweeper.get("params") or {}
    values = [str(v) for k, v in params.items() if str(k).lstrip("+~") == "dataset"]
    values += [o.split("=", 1)[1] for o in config.hydra.overrides.task if o.lstrip("+~").split("=", 1)[0] == "dataset"]
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or [str(config.dataset.name)]


def _resolve_data_once(config: DictConfig, sweep_dir: Path) -> None:
    """Before the first run: resolve ``dataset.source=auto`` for every dataset of the sweep, once, into
    ``<sweep>/data_sources.json`` (so the runs, wherever they execute, never mix sources) and say which
    data is used as the sweep's first line. Missing or corrupt data would fail every run with the same
    message: stop here with that one message instead (exit 2)."""
    names = swept_datasets(config)
    resolutions = {}
    try:
        for name in names:
            node = OmegaConf.merge(config.dataset, {"name": name}) if name != config.dataset.name else config.dataset
            if len(names) > 1:  # a dataset axis: each dataset's own defaults (conf/dataset/<name>.yaml)
                own = CONF_DIR / "dataset" / f"{name}.yaml"
                if own.exists():
                    node = OmegaConf.merge(config.dataset, OmegaConf.load(own))
            resolved = data.resolve_source(node)
            resolutions[name] = resolved.as_dict()
            if name != "synthetic" and len(names) == 1:
                pinned = OmegaConf.merge(node, {"source": resolved.source, "path": resolved.path or node.path})
                data.load(pinned, seed=int(config.seed))  # corrupt files: one message now, not one per run
    except data.DataError as exc:
        print(f"initsuite: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    from initsuite.atomic import atomic_write_text

    # A relaunch re-resolves: a sweep started on the sample and resumed with real data gets new run ids.
    atomic_write_text(sweep_dir / sweep.DATA_SOURCES_NAME, json.dumps(resolutions, indent=1))
    for r in resolutions.values():
        print(r["description"], file=sys.stderr, flush=True)
