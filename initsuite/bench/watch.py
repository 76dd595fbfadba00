"""The benchmark's ``keras_watch`` variant: ``model.fit`` with :func:`initsuite.keras.watch` attached.

Same model, optimizer (plain SGD), loss, batch size and ``tf.data`` stream as ``keras_fit``
(:class:`initsuite.bench.KerasRunner`); the watch runs at the variant config's probe cadence
(``probes.train_every``, ``probes.hist_steps``; unset keys: the watch's defaults), and like
``initsuite_default`` its windows hold no fixed-probe step: the probe's time is measured apart
(:meth:`WatchRunner.probe_seconds`) and amortized over an epoch by the harness, the same way for
both. The fits of one runner continue one watched run (steps go on counting), as a long
``model.fit`` would. The clock stops at the end of each fit *before* the watch probes the last step
and writes its tables (once-per-fit costs, not per-step ones).

The harness hands in its clock and warm-up (``WatchRunner(cfg, workdir, name, clock=keras_clock(),
warmup=WARMUP)``): :mod:`initsuite.bench` imports this module, so this one does not import it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple


class WatchRunner:
    """``model.fit`` + the watch, timed like :class:`initsuite.bench.KerasRunner` (``clock``: a
    :func:`initsuite.bench.keras_clock`; ``warmup``: :data:`initsuite.bench.WARMUP`)."""

    def __init__(self, cfg, workdir: Path, name: str, *, clock: Any, warmup: int):
        import keras
        import numpy as np
        import tensorflow as tf

        from initsuite.measure.instrument import precision_scope
        from initsuite.run.train import build_model, configure_tensorflow, train_dataset
        from initsuite.run.watch import watch
        from initsuite.setup import data as data_mod
        from initsuite.setup.optim import make_optimizer

        configure_tensorflow(int(cfg.train.threads))
        keras.utils.set_random_seed(int(cfg.seed))
        data = data_mod.load(cfg.dataset, seed=int(cfg.seed))
        with precision_scope(cfg):
            self.model = build_model(cfg, data.input_shape, data.num_classes).model
        n = min(int(cfg.probes.batch_size), len(data.x_test))
        self.probe = (tf.constant(data.x_test[:n]), tf.constant(data.y_test[:n].astype(np.int64)))
        p = cfg.probes
        # every: no probe inside a window (the steps of one runner's fits go on counting, so any
        # finite period would land in some windows); the harness adds the probe's cost per epoch
        self.model = watch(self.model, probe=self.probe, out=Path(workdir) / "runs" / name, every=10 ** 12,
                           train_every=int(p.train_every), train_buffer=int(p.train_buffer),
                           train_quantiles=bool(p.train_quantiles), hist_steps=list(p.hist_steps),
                           hist_bins=int(p.hist_bins), percentiles=list(p.percentiles),
                           check_every=int(cfg.train.nonfinite_check_every), seed=int(cfg.seed), verbose=False)
        self.watch = self.model._initsuite_watch
        self.model.compile(optimizer=make_optimizer(cfg.optimizer),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           jit_compile=bool(cfg.train.jit_compile))
        self.ds = train_dataset(data, int(cfg.train.batch_size), int(cfg.seed))
        self.total = int(cfg.train.max_steps)
        self.clock, self.warmup = clock, int(warmup)
        self.callbacks = [self.clock]  # the watch is added after it by its fit wrapper

    def warm_up(self) -> None:
        """Trace the instrumented train function and both probe functions (with and without histograms)."""
        self.clock.start = -1
        self.model.fit(self.ds, epochs=1, steps_per_epoch=3, verbose=0, callbacks=self.callbacks)
        self.watch.inst.probe(*self.probe, False)
        self.watch.inst.probe(*self.probe, True)

    def probe_seconds(self, with_hist: bool, repeats: int = 3) -> float:
        """Median wall time of one fixed-probe measurement of the watch (traced by :meth:`warm_up`)."""
        import statistics
        import time

        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.watch.inst.probe(*self.probe, with_hist)  # returns numbers: it waits for the device
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def window(self) -> Tuple[float, float]:
        """(wall seconds, process CPU seconds) from batch ``warmup`` to the end of a fit of ``total`` steps."""
        self.clock.start = self.warmup
        self.model.fit(self.ds, epochs=1, steps_per_epoch=self.total, verbose=0, callbacks=self.callbacks)
        return self.clock.t1 - self.clock.t0, self.clock.c1 - self.clock.c0
