"""``make bench``: what initsuite's instrumentation costs, measured against plain Keras.

For each case (the paper MLP 784-1000x5-10 and ``conf/model/cnn.yaml``, both tanh, on
MNIST-shaped synthetic data, at batch sizes 10 and 128), the variants train the same
model with the same optimizer (plain SGD), loss, batch size and ``tf.data`` stream
(:func:`initsuite.run.train.train_dataset`), side by side in one process:

=======================  ===================================================================
``keras_fit``            ``model.fit``: the baseline
``initsuite_default``    initsuite's loop at its defaults: training-batch statistics every
                         ``probes.train_every`` (10) steps; the fixed probe's cost is added
                         per its default log-spaced cadence over one MNIST epoch (below)
``initsuite_moments``    training-batch statistics at every step (``probes.train_every=1``)
``initsuite_forensics``  ``probes.enabled=false``: the loop and its per-step NaN/Inf check only
``initsuite_all``        every statistic, every step: ``train_every=1`` with the training
                         batch's exact percentiles and histograms (``probes.train_quantiles``)
``keras_tensorboard``    ``model.fit`` + ``TensorBoard(histogram_freq=1)``, one fit epoch per
                         window, i.e. weight histograms once per window
``keras_watch``          ``model.fit`` with :func:`initsuite.keras.watch` at its defaults, its
                         fixed probe amortized as ``initsuite_default``'s
=======================  ===================================================================

Method.

* Throughput: every variant is built and traced first (tracing is excluded), then timed
  over windows of ``Case.window`` training steps (100, or at least ``WINDOW_EXAMPLES``
  examples at small batch sizes) taken from the middle of a call (``WARMUP``
  steps in, so iterator start-up is excluded too): initsuite's own loop
  (``Trainer.fit`` with a :class:`StepClock` step callback) and ``model.fit`` with a callback clock.
  Both clocks first wait for the device to finish the queued steps. Windows run
  interleaved and mirrored, A B C D E E D C B A A B ..., so a slow drift of the machine
  hits every variant alike; a variant's examples/s is the median of its windows and its
  ratio the median of the per-repetition ratios to ``keras_fit`` (paired, so the drift
  cancels). The windows hold no fixed-probe step (``probes.every`` beyond them).
* The fixed probe, amortized: its time (the median of a few calls, with and without
  histograms) is measured apart, and ``initsuite_default``'s ratio is the paired window
  ratio times the share of one MNIST epoch (60,000 examples) that is training when the
  default cadence probes it (log-spaced steps 0, 10, 30, 100, ..., the epoch's end;
  histograms at the first and last): ``ratio = r_window T / (T + sum of probe times)``,
  T = the epoch's steps at the window's speed.
* Peak memory: each variant again in a fresh process (a process's high-water mark
  cannot be reset, and in one process the variants would share it): the peak RSS
  (``VmHWM``) of importing TensorFlow, building, tracing and a short run with the probes
  at its first and last step, histograms included; on a GPU the device allocator's peak.
* FLOP/s: the model's training FLOPs (3x the forward pass's 2 n_in n_out per dense
  layer, 2 H W k_h k_w C_in C_out per convolution; the probes' extra work is not
  counted) times examples/s, against the machine's measured float32 matmul peak
  (the best of a few 2048x2048 products, at the start and at the end).
* Sweep: N small runs on an N-core machine, one after another in this process, then
  together in N loky worker processes (as the Hydra joblib launcher runs them), one
  thread each; this process and every worker have done one run before the clock starts.
* Precision: a tiny run with XLA (``train.jit_compile``) and one in mixed bfloat16
  precision (``train.mixed_precision``) against a float32 run, statistic by statistic.

It writes ``bench.json`` and ``bench.md`` under ``results/bench/`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from initsuite.atomic import atomic_write_text

BASELINE = "keras_fit"
VARIANTS = ("keras_fit", "initsuite_default", "initsuite_moments", "initsuite_forensics", "initsuite_all",
            "keras_tensorboard", "keras_watch")
KERAS_VARIANTS = ("keras_fit", "keras_tensorboard", "keras_watch")
WARMUP = 5  # steps into each timed call before its window opens
# The issue's targets: throughput as a fraction of keras_fit, peak memory as a multiple of it.
THROUGHPUT_TARGETS = {"initsuite_default": 0.95, "initsuite_moments": 0.85, "initsuite_forensics": 0.97,
                      "keras_watch": 0.95}
AMORTIZED = ("initsuite_default", "keras_watch")  # default cadence: the probe's cost added per epoch
ALL_TARGET = ("initsuite_all", "mlp_b128", 0.3)  # every statistic, every step: >= 0.3x on the MLP at batch 128
EPOCH_EXAMPLES = 60000  # the default cadence is amortized over one MNIST epoch
# Published costs of peers (not measured here): run time relative to no instrumentation, as throughput.
PEERS = [
    ("Cockpit economy, every step, CIFAR-10 3c3d CNN (RTX 2080 Ti)", 1 / 1.5),
    ("Cockpit full, every step, CIFAR-10 3c3d CNN", 1 / 21.0),
    ("Cockpit economy, every 16 steps, CIFAR-10 3c3d CNN", 1 / 1.0),
    ("Cockpit full, every 16 steps, CIFAR-10 3c3d CNN", 1 / 2.3),
    ("Cockpit economy, every step, MNIST MLP (GPU)", 1 / 4.25),
    ("Cockpit full, every step, MNIST MLP (GPU)", 1 / 141.0),
    ("TF Debugger V2 health modes, GPU Transformer b64", 1 / 1.5),
]
MEMORY_TARGET = 1.2
FLOPS_TARGET = 0.5  # of the matmul peak: the paper MLP at batch size 128, on CPU
FLOPS_CASE = "mlp_b128"
# Tolerances of the precision check, on the error measure of compare_stats.
PRECISION_TOLERANCE = {"xla": 1e-4, "mixed_bfloat16": 5e-2}

N_TRAIN = 10000  # MNIST-shaped synthetic training examples (28x28x1, 10 classes)
PROBE_BATCH = 300  # the paper's fixed probe batch
COMMON = [
    "dataset=synthetic", "dataset.image_shape=[28,28,1]", "dataset.num_classes=10",
    f"dataset.n_train={N_TRAIN}", "dataset.n_valid=10", f"dataset.n_test={PROBE_BATCH}",
    "activation=tanh", "init=glorot_uniform", "optimizer=sgd", "optimizer.lr=0.01",
    "train.epochs=1000", "train.eval_examples=0", "train.progress=false", "force=true",
]
MODELS = {
    "mlp": ["model=mlp", "model.depth=5", "model.width=1000"],  # the paper's 784-1000x5-10
    "cnn": ["model=cnn"],  # conf/model/cnn.yaml
}
SWEEP_RUN = [  # one small sweep run (a few seconds)
    "dataset=synthetic", "dataset.n_train=2048", "dataset.n_test=128", "dataset.n_valid=128",
    "model.depth=3", "model.width=128", "train.batch_size=32", "train.epochs=2", "probes.every=16",
    "probes.batch_size=128", "train.progress=false", "force=true",
]


WINDOW_EXAMPLES = 4000  # a timed window holds at least this many examples (400 steps at batch 10)


@dataclass(frozen=True)
class Case:
    """One model at one batch size; ``steps`` per timed window (default: 100, or enough steps for
    WINDOW_EXAMPLES examples at small batches, where 100 steps of the MLP last about a second and
    a shared machine's hiccups would decide the ratio), ``all_steps`` for ``initsuite_all``,
    whose every step is a probe."""

    model: str
    batch_size: int
    steps: Optional[int] = None
    all_steps: int = 20

    @property
    def name(self) -> str:
        return f"{self.model}_b{self.batch_size}"

    def window(self, variant: str) -> int:
        if variant == "initsuite_all":
            return self.all_steps
        return int(self.steps) if self.steps else max(100, -(-WINDOW_EXAMPLES // self.batch_size))


def default_cases(quick: bool = False) -> List[Case]:
    """The paper MLP and the CNN at batch sizes 10 and 128; ``quick``: the MLP only."""
    models = ("mlp",) if quick else ("mlp", "cnn")
    return [Case(m, b) for m in models for b in (10, 128)]


def parse_cases(text: str, steps: Optional[int] = None) -> List[Case]:
    """"mlp_b10,cnn_b128" -> cases; a name that is not <model>_b<batch size> raises ValueError."""
    cases = []
    for name in (w.strip() for w in text.split(",")):
        if not name:
            continue
        model, _, b = name.partition("_b")
        if model not in MODELS or not b.isdigit() or int(b) < 1:
            raise ValueError(f"case {name!r} is not <model>_b<batch size> with model in {', '.join(MODELS)}")
        cases.append(Case(model, int(b), steps=steps))
    return cases


def variant_overrides(case: Case, variant: str, jit: bool = False) -> List[str]:
    """The initsuite config of one variant of one case (the Keras variants use it too, for
    the data, the model and the optimizer). No fixed-probe step falls inside a window (the
    probe at step 0 and the last is outside it; its cost is measured apart)."""
    total = WARMUP + case.window(variant)
    out = COMMON + MODELS[case.model] + [f"train.batch_size={case.batch_size}", f"train.max_steps={total}",
                                         f"train.jit_compile={str(bool(jit)).lower()}", f"probes.every={total}"]
    if variant == "initsuite_forensics":
        out.append("probes.enabled=false")
    elif variant == "initsuite_moments":
        out.append("probes.train_every=1")
    elif variant == "initsuite_all":
        out += ["probes.train_every=1", "probes.train_quantiles=true"]
    return out


def default_cadence_ratio(window_ratio: float, examples_per_s: float, batch_size: int, probe_s: float,
                          probe_hist_s: float, epoch_examples: int = EPOCH_EXAMPLES, epochs: int = 1) -> Dict[str, float]:
    """``initsuite_default`` over ``epochs`` epochs: the window's paired ratio times the share of
    training time left when the default cadence (log-spaced steps and each epoch's end;
    histograms at the first and the last) adds its probes."""
    from initsuite.run.train import log_spaced_steps

    per_epoch = epoch_examples // batch_size
    steps = per_epoch * int(epochs)
    probes = sorted(log_spaced_steps(steps) | {per_epoch * e for e in range(1, int(epochs) + 1)})
    train_s = steps * batch_size / examples_per_s
    probe_total = (len(probes) - 2) * probe_s + 2 * probe_hist_s
    return dict(ratio=window_ratio * train_s / (train_s + probe_total), epoch_steps=per_epoch, epochs=int(epochs),
                probes=len(probes), train_s=train_s, probe_s=probe_total)


LONGER = 10  # epochs of the second amortization the report shows (a typical MNIST training)


# --------------------------------------------------------------------------- bookkeeping


def interleaved_order(variants: Sequence[str], reps: int) -> List[Tuple[int, str]]:
    """(repetition, variant) in the order the windows run: A B C, C B A, A B C, ... Mirrored
    repetitions cancel a linear drift of the machine between paired variants."""
    order = []
    for r in range(reps):
        for v in (variants if r % 2 == 0 else list(reversed(variants))):
            order.append((r, v))
    return order


def examples_per_second(steps: int, batch_size: int, seconds: float) -> float:
    return steps * batch_size / seconds if seconds > 0 else float("nan")


def matmul_flops(n: int, seconds: float) -> float:
    """FLOP/s of one n x n by n x n float32 product that took ``seconds``: 2 n^3 / t."""
    return 2.0 * n ** 3 / seconds


def layer_flops(layer) -> int:
    """Forward FLOPs per example of one Keras layer: a multiply and an add per weight use.
    Dense: 2 n_in n_out; Conv2D: 2 H_out W_out k_h k_w C_in C_out / groups; others 0
    (elementwise work is small next to these and not what the matmul peak measures)."""
    import keras

    if isinstance(layer, keras.layers.Dense):
        n_in = int(layer.kernel.shape[0])
        return 2 * n_in * int(layer.units)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin_g, cout = (int(d) for d in layer.kernel.shape)
        out = layer.output.shape if hasattr(layer, "output") else None
        h, w = int(out[1]), int(out[2])
        return 2 * h * w * kh * kw * cin_g * cout
    return 0


def model_flops(model) -> int:
    """Forward FLOPs per example of a built Keras model (nested models included)."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers and layer is not model:
            total += model_flops(layer)
        else:
            total += layer_flops(layer)
    return total


def train_flops(model) -> int:
    """Training FLOPs per example: forward + gradient of the inputs + gradient of the
    weights, each about one forward pass."""
    return 3 * model_flops(model)


def median(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def summarize_case(samples: Dict[str, List[float]], baseline: str = BASELINE) -> Dict[str, Dict[str, Any]]:
    """Per variant: median examples/s and the median of the paired per-repetition ratios
    to the baseline (sample i of every variant comes from repetition i)."""
    base = samples.get(baseline, [])
    out = {}
    for variant, xs in samples.items():
        ratios = [x / b for x, b in zip(xs, base) if b and b > 0]
        out[variant] = {"examples_per_s": median(xs), "samples": list(xs),
                        "ratio": median(ratios), "ratio_samples": ratios}
    return out


def check_targets(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One verdict per target: value, target, ok, and by how much it is missed."""
    verdicts = []

    def add(name, case, value, target, higher_is_better=True, unit="x", cpu_value=None):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            ok = None
        else:
            ok = (value >= target) if higher_is_better else (value <= target)
        missed = None if ok in (True, None) else round(abs(value - target), 4)
        verdicts.append(dict(target=name, case=case, value=value, goal=target, cpu_value=cpu_value,
                             comparison=">=" if higher_is_better else "<=", unit=unit, ok=ok, missed_by=missed))

    for case in report.get("cases", []):
        rows = case["variants"]
        for variant, goal in THROUGHPUT_TARGETS.items():
            if variant in rows:
                add(f"throughput {variant}", case["case"], rows[variant]["ratio"], goal,
                    cpu_value=rows[variant].get("cpu_ratio"))
        variant, where, goal = ALL_TARGET
        if variant in rows and case["case"] == where:
            add(f"throughput {variant}", case["case"], rows[variant]["ratio"], goal,
                cpu_value=rows[variant].get("cpu_ratio"))
        base_mem = rows.get(BASELINE, {}).get("peak_mb")
        for variant in [v for v in VARIANTS if v != BASELINE]:
            mem = rows.get(variant, {}).get("peak_mb")
            if base_mem and mem:
                add(f"peak memory {variant}", case["case"], mem / base_mem, MEMORY_TARGET, higher_is_better=False)
        if case["case"] == FLOPS_CASE and report.get("device") == "CPU" and "initsuite_default" in rows:
            add("FLOP/s initsuite_default vs matmul peak", case["case"], rows["initsuite_default"].get("peak_frac"),
                FLOPS_TARGET, unit="of peak")
    sweep = report.get("sweep")
    if sweep and sweep.get("speedup") is not None:
        add(f"sweep speed-up, {sweep['n_jobs']} jobs", "-", sweep["speedup"], 1.0)
    for mode, res in (report.get("precision") or {}).items():
        add(f"statistics under {mode}", "-", res["max_error"], res["tolerance"], higher_is_better=False, unit="")
    return verdicts


def compare_stats(ref, other) -> Dict[str, float]:
    """Largest difference of two runs' ``layer_stats`` per family of statistic, each on its
    own scale: location and spread (mean, percentiles, std) in units of the reference
    tensor's std; var and update ratios relative; fractions and non-finite counts absolute.
    Rows are matched on (step, batch, layer, tensor, stat); norms are relative."""
    import numpy as np
    import pandas as pd

    from initsuite.tables import PROBE

    ref, other = (t if "batch" in t.columns else t.assign(batch=PROBE) for t in (ref, other))
    keys = ["step", "batch", "layer", "tensor", "stat"]
    m = pd.merge(ref[keys + ["value"]], other[keys + ["value"]], on=keys, suffixes=("_ref", "_other"))
    std = ref[ref.stat == "std"].set_index(["step", "batch", "layer", "tensor"]).value
    out = {"location": 0.0, "relative": 0.0, "fraction": 0.0, "count": 0.0, "compared": float(len(m))}
    for r in m.itertuples(index=False):
        a, b = float(r.value_ref), float(r.value_other)
        if not (np.isfinite(a) and np.isfinite(b)):
            if not (np.isnan(a) and np.isnan(b)):
                out["count"] = max(out["count"], float("inf"))
            continue
        if r.stat in ("var", "norm") or r.tensor == "update_ratio":
            family, err = "relative", abs(a - b) / max(abs(a), 1e-30)
        elif r.stat.endswith("_frac"):
            family, err = "fraction", abs(a - b)
        elif r.stat == "nonfinite_count":
            family, err = "count", abs(a - b)
        else:
            scale = std.get((r.step, r.batch, r.layer, r.tensor), float("nan"))
            scale = scale if np.isfinite(scale) and scale > 0 else max(abs(a), 1e-30)
            family, err = "location", abs(a - b) / scale
        out[family] = max(out[family], float(err))
    return out


# --------------------------------------------------------------------------- machine


def machine_info() -> Dict[str, Any]:
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    for d in tf.config.list_physical_devices("GPU"):
        try:
            gpus.append(tf.config.experimental.get_device_details(d).get("device_name", d.name))
        except Exception:  # pragma: no cover - details are best effort
            gpus.append(d.name)
    return dict(host=platform.node(), cpu=cpu, cores=os.cpu_count(), gpus=gpus, python=platform.python_version(),
                tensorflow=tf.__version__, keras=keras.__version__, system=f"{platform.system()} {platform.release()}")


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every OS
        return None


def measure_matmul_peak(n: int = 2048, repeats: int = 5) -> Dict[str, float]:
    """The machine's float32 matmul FLOP/s: the best of ``repeats`` n x n products (each
    waited for), on the default device."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    float(mm(a, b))  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        float(mm(a, b))
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "seconds": best, "flops": matmul_flops(n, best)}


# --------------------------------------------------------------------------- runners


def probe_median(inst, x, y, with_hist: bool, repeats: int = 3) -> float:
    """Median wall time of ``inst.probe(x, y, with_hist)`` (it returns numbers: it waits for the device)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        inst.probe(x, y, with_hist)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class StepClock:
    """A :class:`~initsuite.run.train.Trainer` step callback: notes (wall time, process CPU time) at
    the given steps, once the device has finished the steps before (it waits for the previous loss)."""

    def __init__(self, steps=()):
        self.steps, self.times = frozenset(steps), {}

    def __call__(self, step: int, loss) -> None:
        if step in self.steps:
            if loss is not None:
                loss.numpy()  # waits for the previous step, queued on the device
            self.times[step] = (time.perf_counter(), time.process_time())


def _sync(model) -> None:
    """Wait for the device: a weight read queues behind every step already issued."""
    model.trainable_variables[-1].numpy()


class InitsuiteRunner:
    """One initsuite variant: a Trainer whose loop is timed between two of its steps."""

    def __init__(self, cfg, workdir: Path, name: str):
        from initsuite.run.results import RunDir
        from initsuite.run.train import Trainer

        rdir = RunDir(workdir / name)
        rdir.path.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.total = int(cfg.train.max_steps)
        self.trainer = Trainer(cfg, name, rdir)
        self.model = self.trainer.model
        self.clock = StepClock()
        self.trainer.step_callbacks.append(self.clock)

    def _fit(self, steps: int) -> None:
        t = self.trainer
        t.cfg.train.max_steps = steps
        t.rows = {k: [] for k in t.rows}  # each call starts afresh; the bench keeps no tables
        t.fit()

    def warm_up(self) -> None:
        """Trace every function the window will call (train step with and without the
        update ratios, probe with and without histograms)."""
        import numpy as np
        import tensorflow as tf

        t = self.trainer
        self.clock.steps = frozenset()
        self._fit(3)
        if self.cfg.probes.enabled:
            n = min(int(self.cfg.probes.batch_size), len(t.data.x_test))
            x, y = tf.constant(t.data.x_test[:n]), tf.constant(t.data.y_test[:n].astype(np.int64))
            t.inst.probe(x, y, False)
            t.inst.probe(x, y, True)
        self.trainer.cfg.train.max_steps = self.total

    def probe_seconds(self, with_hist: bool, repeats: int = 3) -> float:
        """Median wall time of one fixed-probe measurement (traced by :meth:`warm_up`)."""
        import numpy as np
        import tensorflow as tf

        t = self.trainer
        n = min(int(self.cfg.probes.batch_size), len(t.data.x_test))
        x, y = tf.constant(t.data.x_test[:n]), tf.constant(t.data.y_test[:n].astype(np.int64))
        return probe_median(t.inst, x, y, with_hist, repeats)

    def window(self) -> Tuple[float, float]:
        """(wall seconds, process CPU seconds) of the steps WARMUP .. total-1."""
        self.clock.steps, self.clock.times = frozenset({WARMUP, self.total}), {}
        self._fit(self.total)
        (w0, c0), (w1, c1) = self.clock.times[WARMUP], self.clock.times[self.total]
        return w1 - w0, c1 - c0


class KerasRunner:
    """``model.fit`` on the same model, optimizer, loss, batch size and data stream.

    ``tensorboard``: with ``TensorBoard(histogram_freq=1)`` (the measured peer). ``watched``: the
    ``keras_watch`` variant, with :func:`initsuite.keras.watch` attached at the variant config's
    cadence (``probes.train_every``, ``probes.hist_steps``); like ``initsuite_default`` its windows
    hold no fixed-probe step: the probe's time is measured apart (:meth:`probe_seconds`) and
    amortized over an epoch by the harness, the same way for both. The fits of one runner continue
    one watched run (steps go on counting), as a long ``model.fit`` would; the clock stops at the
    end of each fit before the watch probes the last step and writes its tables (once-per-fit
    costs, not per-step ones)."""

    def __init__(self, cfg, workdir: Path, name: str, tensorboard: bool = False, watched: bool = False):
        import keras
        import numpy as np
        import tensorflow as tf

        from initsuite.setup import data as data_mod
        from initsuite.measure.instrument import precision_scope
        from initsuite.setup.optim import make_optimizer
        from initsuite.run.train import build_model, configure_tensorflow, train_dataset

        configure_tensorflow(int(cfg.train.threads))
        keras.utils.set_random_seed(int(cfg.seed))
        data = data_mod.load(cfg.dataset, seed=int(cfg.seed))
        with precision_scope(cfg):
            self.model = build_model(cfg, data.input_shape, data.num_classes).model
        self.watch = None
        if watched:
            from initsuite.run.watch import watch

            n = min(int(cfg.probes.batch_size), len(data.x_test))
            self.probe = (tf.constant(data.x_test[:n]), tf.constant(data.y_test[:n].astype(np.int64)))
            p = cfg.probes
            # every: no probe inside a window (the steps of one runner's fits go on counting, so any
            # finite period would land in some windows)
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
        self.clock = keras_clock()
        self.callbacks = [self.clock]  # a watch is added after it by its fit wrapper
        if tensorboard:
            self.callbacks.append(keras.callbacks.TensorBoard(log_dir=str(workdir / name), histogram_freq=1))

    def warm_up(self) -> None:
        """Trace the train function (and a watch's probe, with and without histograms)."""
        self.clock.start = -1
        self.model.fit(self.ds, epochs=1, steps_per_epoch=3, verbose=0, callbacks=self.callbacks)
        if self.watch is not None:
            self.watch.inst.probe(*self.probe, False)
            self.watch.inst.probe(*self.probe, True)

    def probe_seconds(self, with_hist: bool, repeats: int = 3) -> float:
        """Median wall time of one fixed-probe measurement of the watch (traced by :meth:`warm_up`)."""
        return probe_median(self.watch.inst, *self.probe, with_hist, repeats)

    def window(self) -> Tuple[float, float]:
        self.clock.start = WARMUP
        self.model.fit(self.ds, epochs=1, steps_per_epoch=self.total, verbose=0, callbacks=self.callbacks)
        return self.clock.t1 - self.clock.t0, self.clock.c1 - self.clock.c0


def keras_clock():
    """A Keras callback timing from the start of batch ``start`` to the end of training."""
    import keras

    class KerasClock(keras.callbacks.Callback):
        """Time from the start of batch ``start`` to the end of training (the epoch end,
        where TensorBoard writes its histograms, included). No batch-end hook, so Keras
        keeps dispatching batch ends asynchronously."""

        start = -1
        t0 = t1 = c0 = c1 = float("nan")

        def on_train_batch_begin(self, batch, logs=None):
            if batch == self.start:
                _sync(self.model)
                self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_end(self, logs=None):
            _sync(self.model)
            self.t1, self.c1 = time.perf_counter(), time.process_time()

    return KerasClock()


def tensorboard_available() -> bool:
    """Keras' TensorBoard callback needs the ``tensorboard`` package (``pip install tensorboard``)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def make_runner(case: Case, variant: str, workdir: Path, jit: bool = False):
    from initsuite.configure import compose

    cfg = compose(variant_overrides(case, variant, jit) + [f"paths.results={workdir}"])
    name = f"{case.name}-{variant}"
    if variant in KERAS_VARIANTS:
        return KerasRunner(cfg, workdir, name, tensorboard=variant == "keras_tensorboard",
                           watched=variant == "keras_watch")
    return InitsuiteRunner(cfg, workdir, name)


# --------------------------------------------------------------------------- the parts


def time_case(case: Case, variants: Sequence[str], reps: int, workdir: Path, jit: bool = False,
              log=print) -> Dict[str, Any]:
    """Throughput of every variant of one case: build, warm up, then interleaved windows."""
    # initsuite's Trainers clear the Keras session when built: build them first.
    runners = {v: make_runner(case, v, workdir, jit) for v in sorted(variants, key=lambda v: v in KERAS_VARIANTS)}
    flops = train_flops(runners[variants[0]].model)
    for v in variants:
        runners[v].warm_up()
    samples: Dict[str, List[float]] = {v: [] for v in variants}
    cpu_samples: Dict[str, List[float]] = {v: [] for v in variants}
    for rep, v in interleaved_order(variants, reps):
        wall, cpu = runners[v].window()
        samples[v].append(examples_per_second(case.window(v), case.batch_size, wall))
        cpu_samples[v].append(examples_per_second(case.window(v), case.batch_size, cpu))
        log(f"  {case.name} rep {rep + 1}/{reps} {v:<20} {samples[v][-1]:10.1f} examples/s "
            f"({cpu_samples[v][-1]:.1f} per CPU-second)")
    rows = summarize_case(samples)
    for v, row in summarize_case(cpu_samples).items():
        rows[v]["examples_per_cpu_s"] = row["examples_per_s"]
        rows[v]["cpu_ratio"] = row["ratio"]
        rows[v]["cpu_ratio_samples"] = row["ratio_samples"]
    for v, row in rows.items():
        row["window_steps"] = case.window(v)
        row["flops"] = row["examples_per_s"] * flops
    for variant in [v for v in AMORTIZED if v in rows]:  # the fixed probe at the default cadence, per epoch
        r = rows[variant]
        runner = runners[variant]
        r["probe_s"], r["probe_hist_s"] = runner.probe_seconds(False), runner.probe_seconds(True)
        r["window_ratio"], r["window_cpu_ratio"] = r["ratio"], r.get("cpu_ratio")
        epoch = default_cadence_ratio(r["ratio"], r["examples_per_s"], case.batch_size, r["probe_s"],
                                      r["probe_hist_s"])
        r["epoch"] = epoch
        r["epochs_longer"] = default_cadence_ratio(r["ratio"], r["examples_per_s"], case.batch_size, r["probe_s"],
                                                   r["probe_hist_s"], epochs=LONGER)
        r["ratio"] = epoch["ratio"]
        if r.get("cpu_ratio") is not None:
            r["cpu_ratio"] = r["cpu_ratio"] * epoch["ratio"] / r["window_ratio"]
        log(f"  {case.name} {variant}: probe {r['probe_s']:.3f} s ({r['probe_hist_s']:.3f} s with "
            f"histograms), {epoch['probes']} probes per {epoch['epoch_steps']}-step epoch: ratio "
            f"{r['window_ratio']:.3f} -> {epoch['ratio']:.3f}")
    return dict(case=case.name, model=case.model, batch_size=case.batch_size,
                train_flops_per_example=flops, variants=rows)


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: ``VmHWM`` of /proc/self/status, which
    starts afresh at exec; ``ru_maxrss`` would not: a child inherits its parent's at fork
    (here the parent's whole benchmark). Elsewhere ``ru_maxrss``."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10  # bytes on macOS, KiB on Linux


def _memory_child(spec: Dict[str, Any]) -> Dict[str, Any]:
    """In a fresh process: build one variant, trace it, run ``steps`` steps (initsuite:
    probes at the first and last step, histograms included); report the peaks."""
    import tensorflow as tf

    case = Case(spec["model"], int(spec["batch_size"]))
    workdir = Path(spec["workdir"])
    runner = make_runner(case, spec["variant"], workdir, bool(spec.get("jit")))
    gpu = bool(tf.config.list_logical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    if isinstance(runner, InitsuiteRunner):
        runner._fit(int(spec["steps"]))
    else:
        runner.model.fit(runner.ds, epochs=1, steps_per_epoch=int(spec["steps"]), verbose=0,
                         callbacks=runner.callbacks)
    out = {"peak_rss_mb": peak_rss_mb()}
    if gpu:
        out["gpu_peak_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return out


def measure_memory(case: Case, variants: Sequence[str], workdir: Path, jit: bool = False, steps: int = 5,
                   jobs: int = 1, log=print) -> Dict[str, Dict[str, float]]:
    """Peak memory of each variant in its own process (``jobs`` at a time)."""
    specs = {v: dict(model=case.model, batch_size=case.batch_size, variant=v, workdir=str(workdir / "memory"),
                     jit=jit, steps=steps) for v in variants}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    pending = list(specs.items())
    running: List[Tuple[str, subprocess.Popen]] = []
    out: Dict[str, Dict[str, float]] = {}
    while pending or running:
        while pending and len(running) < max(1, jobs):
            v, spec = pending.pop(0)
            cmd = [sys.executable, "-m", "initsuite.bench", "--memory-child", json.dumps(spec)]
            running.append((v, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                env=env)))
        v, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            log(f"  {case.name} {v}: memory child failed ({stderr.strip().splitlines()[-1:] or '?'})")
            continue
        out[v] = json.loads(stdout.strip().splitlines()[-1])
        log(f"  {case.name} {v:<20} peak RSS {out[v]['peak_rss_mb']:8.0f} MB")
    return out


def _sweep_job(overrides: List[str], threads: int) -> float:
    """One sweep run in a worker; returns its wall time."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import contextlib
    import io

    from initsuite.configure import compose
    from initsuite.run.train import run

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run(compose(overrides + [f"train.threads={threads}"]))
    return time.perf_counter() - t0


def _warm_worker(overrides: List[str], threads: int) -> int:
    """A first run in a worker, as this process had one: TensorFlow's runtime, Hydra and the
    shared statistics function start before the clock does, on both sides."""
    _sweep_job(overrides, threads)
    return os.getpid()


def measure_sweep(workdir: Path, n_jobs: Optional[int] = None, log=print) -> Dict[str, Any]:
    """N small runs one after another (this process, TensorFlow's own thread count), then
    together in N warm loky workers (one thread each): wall times and the speed-up."""
    from joblib import Parallel, delayed

    n = int(n_jobs or os.cpu_count() or 1)
    threads = max(1, (os.cpu_count() or 1) // n)
    runs = [SWEEP_RUN + [f"seed={i}", f"paths.results={workdir / 'sweep'}"] for i in range(n)]
    _sweep_job(runs[0] + ["seed=999"], 0)  # warm this process as the workers are warmed
    t0 = time.perf_counter()
    for r in runs:
        _sweep_job(r, 0)
    sequential = time.perf_counter() - t0
    log(f"  sweep: {n} runs one after another: {sequential:.1f} s")
    with Parallel(n_jobs=n, backend="loky") as parallel:
        pids = parallel(delayed(_warm_worker)(runs[0] + [f"seed={999 + i}"], threads) for i in range(n))
        t0 = time.perf_counter()
        parallel(delayed(_sweep_job)(r, threads) for r in runs)
        together = time.perf_counter() - t0
    log(f"  sweep: {n} runs together ({len(set(pids))} workers, {threads} thread(s) each): {together:.1f} s")
    return dict(n_jobs=n, runs=n, threads_per_job=threads, sequential_s=sequential, parallel_s=together,
                speedup=sequential / together if together > 0 else None)


PRECISION_RUN = [
    "dataset=synthetic", "dataset.n_train=512", "dataset.n_test=128", "dataset.n_valid=64", "model.depth=3",
    "model.width=64", "train.batch_size=32", "train.max_steps=8", "probes.every=4", "probes.batch_size=128",
    "train.progress=false", "force=true", "seed=0",
]


def precision_check(workdir: Path, modes: Sequence[str] = ("xla", "mixed_bfloat16"), log=print) -> Dict[str, Any]:
    """The same tiny run in float32, with XLA and in mixed bfloat16 precision: the largest
    difference of their statistics (:func:`compare_stats`) against the stated tolerance."""
    import contextlib
    import io

    from initsuite.configure import compose
    from initsuite.run.train import run

    def one(extra):
        cfg = compose(PRECISION_RUN + [f"paths.results={workdir / 'precision'}"] + extra)
        with contextlib.redirect_stdout(io.StringIO()):
            return run(cfg)

    ref = one([])
    out = {}
    for mode in modes:
        other = one(["train.jit_compile=true"] if mode == "xla" else ["train.mixed_precision=true"])
        errs = compare_stats(ref.layer_stats, other.layer_stats)
        worst = max(errs["location"], errs["relative"], errs["fraction"], errs["count"])
        out[mode] = dict(errors=errs, max_error=float(worst), tolerance=PRECISION_TOLERANCE[mode],
                         ok=bool(worst <= PRECISION_TOLERANCE[mode]), status=other.status,
                         steps=sorted(int(s) for s in other.layer_stats.step.unique()))
        log(f"  precision {mode}: largest difference {worst:.2e} (tolerance {PRECISION_TOLERANCE[mode]:g})")
    return out


# --------------------------------------------------------------------------- report


def _fmt(x, spec=".3g", none="-"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def to_markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    peak = report.get("matmul_peak", {}).get("flops")
    lines = [
        "# initsuite benchmark",
        "",
        f"{report['created']} on {m['cpu']} ({m['cores']} cores{', GPU: ' + ', '.join(m['gpus']) if m['gpus'] else ''}), "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}; device {report['device']}; "
        f"load average {report.get('load_before')} before, {report.get('load_after')} after"
        f"{'; QUICK run' if report['settings'].get('quick') else ''}.",
        "",
        f"Matmul peak (float32, {report.get('matmul_peak', {}).get('n', '?')}^2): **{_fmt(peak and peak / 1e9, '.1f')} GFLOP/s**. "
        f"Medians of {report['settings']['reps']} interleaved windows; ratio = paired median against `keras_fit`.",
        "",
        "| case | variant | examples/s | ratio | CPU-time ratio | peak MB | memory ratio | GFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in report.get("cases", []):
        rows = case["variants"]
        base_mem = rows.get(BASELINE, {}).get("peak_mb")
        for v in VARIANTS:
            if v not in rows:
                continue
            r = rows[v]
            mem = r.get("peak_mb")
            lines.append(f"| {case['case']} | {v} | {_fmt(r['examples_per_s'], '.0f')} | {_fmt(r['ratio'], '.3f')} | "
                         f"{_fmt(r.get('cpu_ratio'), '.3f')} | {_fmt(mem, '.0f')} | {_fmt(mem / base_mem if mem and base_mem else None, '.2f')} | "
                         f"{_fmt(r.get('flops') and r['flops'] / 1e9, '.1f')} | "
                         f"{_fmt(r.get('peak_frac') and 100 * r['peak_frac'], '.0f')} |")
    cores = m.get("cores") or 1
    busy = max((report.get("load_before") or [0])[0], (report.get("load_after") or [0])[0]) > cores
    lines += ["", "## Targets", "", "Judged on wall-clock ratios; the CPU-time ratio (examples per CPU-second of "
              "this process) is shown beside them: other processes disturb it much less."
              + (f" **The machine was shared (load average above its {cores} cores): wall-clock ratios are noisy.**"
                 if busy else ""), "",
              "| target | case | value | CPU-time | goal | met | missed by |", "|---|---|---:|---:|---|---|---:|"]
    for t in report.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["ok"]]
        lines.append(f"| {t['target']} | {t['case']} | {_fmt(t['value'])} | {_fmt(t.get('cpu_value'))} | "
                     f"{t['comparison']} {t['goal']:g} {t['unit']} | {met} | {_fmt(t['missed_by'])} |")
    sweep = report.get("sweep")
    if sweep:
        lines += ["", f"Sweep: {sweep['runs']} small runs one after another {sweep['sequential_s']:.1f} s, together in "
                      f"{sweep['n_jobs']} joblib (loky) workers {sweep['parallel_s']:.1f} s: speed-up "
                      f"**{_fmt(sweep['speedup'], '.2f')}x**."]
    prec = report.get("precision")
    if prec:
        lines += ["", "Precision (largest difference from a float32 run; location stats in units of the tensor's "
                      "std, var and update ratios relative, fractions absolute):", ""]
        for mode, r in prec.items():
            e = r["errors"]
            lines.append(f"- {mode}: location {e['location']:.2e}, relative {e['relative']:.2e}, "
                         f"fraction {e['fraction']:.2e}, counts {e['count']:g} -> max {r['max_error']:.2e} "
                         f"(tolerance {r['tolerance']:g}, {'ok' if r['ok'] else 'EXCEEDED'})")
    probes = [(f"{c['case']} {v}", c["variants"][v]) for c in report.get("cases", []) for v in AMORTIZED
              if "epoch" in c["variants"].get(v, {})]
    if probes:
        lines += ["", "Default cadence over one MNIST epoch (the window's ratio times the share of the epoch "
                      "left to training once the fixed probe runs at its log-spaced steps):", "",
                  f"| case | window ratio | probe s | with histograms s | probes per epoch | epoch steps | ratio, 1 epoch "
                  f"| ratio, {LONGER} epochs ({LONGER}-epoch probes) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in probes:
            e, longer = r["epoch"], r.get("epochs_longer") or {}
            lines.append(f"| {name} | {_fmt(r['window_ratio'], '.3f')} | {_fmt(r['probe_s'], '.3f')} | "
                         f"{_fmt(r['probe_hist_s'], '.3f')} | {e['probes']} | {e['epoch_steps']} | "
                         f"{_fmt(e['ratio'], '.3f')} | {_fmt(longer.get('ratio'), '.3f')} ({longer.get('probes', '-')}) |")
    lines += ["", "Published peers, for scale (as published, not measured here; throughput = 1 / their run-time "
                  "factor):", "", "| peer | throughput |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f}x |" for name, value in PEERS]
    lines += ["", "Method: see `initsuite/bench/__init__.py`. `initsuite_all` = the training batch's every statistic "
                  "(moments, exact percentiles, histograms) at every step; "
                  "`keras_tensorboard` = `TensorBoard(histogram_freq=1)` with one fit epoch per window.", ""]
    return "\n".join(lines)


def _plain(x):
    """NumPy scalars (and anything else JSON does not know) as plain Python values."""
    return x.item() if hasattr(x, "item") else str(x)


def write_report(report: Dict[str, Any], out_dir: Path) -> Tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "bench.json", out_dir / "bench.md"
    atomic_write_text(js, json.dumps(report, indent=2, default=_plain))
    atomic_write_text(md, to_markdown(report))
    return js, md


def finish_report(report: Dict[str, Any]) -> Dict[str, Any]:
    """Fill the derived columns (memory, share of the matmul peak) and the verdicts."""
    peak = report.get("matmul_peak", {}).get("flops")
    for case in report.get("cases", []):
        mem = (report.get("memory") or {}).get(case["case"], {})
        for v, row in case["variants"].items():
            if v in mem:
                row["peak_mb"] = mem[v].get("gpu_peak_mb", mem[v]["peak_rss_mb"])
                row["memory"] = mem[v]
            if peak and row.get("flops") is not None:
                row["peak_frac"] = row["flops"] / peak
    report["targets"] = check_targets(report)
    return report


def run_bench(cases: Sequence[Case], reps: int = 3, out_dir: Path = Path("results/bench"), quick: bool = False,
              memory: bool = True, sweep: bool = True, precision: bool = True, jit: bool = False,
              variants: Sequence[str] = VARIANTS, log=print) -> Dict[str, Any]:
    import tensorflow as tf

    from initsuite.run.train import configure_tensorflow

    configure_tensorflow(0)
    skipped = {}
    if "keras_tensorboard" in variants and not tensorboard_available():
        skipped["keras_tensorboard"] = "the tensorboard package is not installed (pip install tensorboard)"
        variants = [v for v in variants if v != "keras_tensorboard"]
        log(f"[bench] keras_tensorboard skipped: {skipped['keras_tensorboard']}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tmp-", dir=out_dir))  # run folders, TensorBoard logs; removed at the end
    report: Dict[str, Any] = dict(
        created=time.strftime("%Y-%m-%d %H:%M:%S%z"), machine=machine_info(),
        device="GPU" if tf.config.list_logical_devices("GPU") else "CPU", load_before=load_average(),
        settings=dict(reps=reps, quick=quick, jit_compile=jit, warmup_steps=WARMUP, n_train=N_TRAIN,
                      probe_batch=PROBE_BATCH, cases=[asdict(c) for c in cases], variants=list(variants),
                      skipped=skipped),
    )
    t_start = time.perf_counter()
    try:
        log("[bench] matmul peak ...")
        report["matmul_peak"] = measure_matmul_peak()
        log(f"  {report['matmul_peak']['flops'] / 1e9:.1f} GFLOP/s")
        report["cases"] = []
        for case in cases:
            log(f"[bench] throughput {case.name} ...")
            report["cases"].append(time_case(case, list(variants), reps, workdir, jit, log))
        if memory:
            report["memory"] = {}
            for case in cases:
                log(f"[bench] peak memory {case.name} (a fresh process per variant) ...")
                # CPU contention does not change a peak, so the processes may share the cores
                report["memory"][case.name] = measure_memory(case, variants, workdir, jit,
                                                             jobs=min(4, os.cpu_count() or 1), log=log)
        if sweep:
            log("[bench] sweep throughput ...")
            report["sweep"] = measure_sweep(workdir, log=log)
        if precision:
            log("[bench] XLA and mixed-precision statistics ...")
            report["precision"] = precision_check(workdir, log=log)
        # Again at the end, keeping the best: other processes only ever make it look lower.
        again = measure_matmul_peak()
        if again["flops"] > report["matmul_peak"]["flops"]:
            report["matmul_peak"] = again
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["load_after"] = load_average()
    report["bench_s"] = time.perf_counter() - t_start
    finish_report(report)
    js, md = write_report(report, out_dir)
    log("")
    log(to_markdown(report))
    log(f"[bench] wrote {js} and {md} ({report['bench_s']:.0f} s)")
    return report


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(prog="make bench", description="initsuite's instrumentation cost against plain Keras.")
    p.add_argument("--quick", action="store_true",
                   help="the MLP cases, one repetition, no memory processes: a smoke test, not a measurement")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions per case (default 3; quick 1)")
    p.add_argument("--cases", default=None, help="comma list like mlp_b10,cnn_b128 (default: mlp and cnn at 10 and 128)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps per timed window (default: 100, at least {WINDOW_EXAMPLES} examples)")
    p.add_argument("--variants", default=None, help=f"comma list of variants (default: all of {', '.join(VARIANTS)}); "
                                                     f"{BASELINE} is always included")
    p.add_argument("--out", default="results/bench", help="output folder")
    p.add_argument("--jit", action="store_true", help="XLA for every variant (train.jit_compile / Keras jit_compile)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory processes")
    p.add_argument("--no-sweep", action="store_true", help="skip the sweep-throughput part")
    p.add_argument("--no-precision", action="store_true", help="skip the XLA / mixed-precision statistics check")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.memory_child:
        print(json.dumps(_memory_child(json.loads(a.memory_child))), flush=True)
        return {}
    try:
        cases = parse_cases(a.cases, a.steps) if a.cases else [Case(c.model, c.batch_size, steps=a.steps)
                                                                 for c in default_cases(a.quick)]
    except ValueError as e:
        p.error(f"--cases: {e}")
    reps = a.reps if a.reps is not None else (1 if a.quick else 3)
    variants = list(VARIANTS)
    if a.variants:
        unknown = [v for v in a.variants.split(",") if v not in VARIANTS]
        if unknown:
            p.error(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
        variants = [v for v in VARIANTS if v == BASELINE or v in a.variants.split(",")]
    return run_bench(cases, reps=reps, out_dir=Path(a.out), quick=a.quick, memory=not (a.no_memory or a.quick),
                     sweep=not a.no_sweep, precision=not a.no_precision, jit=a.jit, variants=variants)


if __name__ == "__main__":
    main()
