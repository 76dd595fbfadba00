"""initsuite inside your own ``model.fit``: one line instruments a plain Keras 3 training script.

    model = initsuite.keras.watch(model, probe=(x_test[:300], y_test[:300]), out="results/runs/adam")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=3)           # unchanged

The measurements are the suite's own (:class:`initsuite.measure.instrument.Instrument`):

* **Training-batch statistics inside the train step** (``batch = train`` rows, every
  ``train_every``-th step): the watched model's ``train_step`` is Keras' TensorFlow
  ``train_step`` with the Instrument's pieces in it (forward with the taps recording, the
  user's compiled loss, ``tape.gradient`` of the loss with respect to the weights and to the
  recorded tensors, :meth:`Instrument.update`), so ``model.fit`` compiles it into its own
  train function (``jit_compile`` on or off, ``steps_per_execution``, ``tf.data`` or arrays).
* **The fixed probe batch** (``batch = probe`` rows and histograms) at step 0, at log-spaced
  steps 10, 30, 100, 300, ... and each epoch's end (or every ``every`` steps) and at the last step.
* **Per-step NaN/Inf forensics**: the first non-finite value's step, phase (init, forward, loss,
  backward, update), layer and tensor. By default the fit then stops (``model.stop_training =
  True``, as ``keras.callbacks.TerminateOnNaN`` does); ``on_nonfinite="continue"`` keeps going.

Steps count updates: the statistics "at step s" are of the weights after s updates (step 0: the
model as built). The host reads the NaN flag every ``check_every`` steps (each read waits for the
device), so a stopping fit stops within ``check_every`` steps of its first NaN; the record in
``status.json`` and ``events`` names the step where it happened.

**Mixed precision.** The Instrument takes every statistic in float32. Under ``mixed_float16``
Keras wraps the optimizer in a ``LossScaleOptimizer`` that multiplies the loss by a scale S: the
statistics are of the unscaled gradients (dC/ds and dC/dW divided by S), and the optimizer gets
the scaled ones and unscales them itself. A step whose scaled gradients overflow while the loss is
finite is the loss scaler's business (it skips the update and lowers S): it is not measured and not
a divergence. ``mixed_bfloat16`` needs no scaling.

**The run folder** (:class:`initsuite.run.results.RunDir`): ``out`` is ``<comparison>/runs/<name>``
and holds ``config.yaml``, ``status.json`` (``running`` -> ``done`` | ``diverged`` | ``failed``) and
the four tables, the layout of a sweep's run, so ``initsuite figures <comparison>`` collects and
draws every watched fit written under it. Fitting the same watched model again continues the run:
steps go on counting and the tables grow.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from omegaconf import OmegaConf, open_dict

from initsuite.atomic import describe_error
from initsuite.config import Config
from initsuite.measure.instrument import Instrument
from initsuite.run import rows as row_mod
from initsuite.run.results import RunDir
from initsuite.run.train import log_spaced_steps
from initsuite.setup import custom
from initsuite.tables import TABLE_COLUMNS, empty_table

STOP, CONTINUE = "stop", "continue"
ON_NONFINITE = (STOP, CONTINUE)
EXPERIMENT = "watch"  # the experiment column of a watched run
MODEL_NAME = "watched"  # the model column: a watched model is described by model.kwargs (class, parameters)
DATASET = "user"  # the dataset column: the user's own data
_LOG_SPACED = sorted(log_spaced_steps(10 ** 15))
_ACCURACY = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")


def watch(model, probe, *, out=None, name: Optional[str] = None, **options) -> "keras.Model":
    """Instrument ``model`` for its own ``compile``/``fit``, in place, and return it.

    ``probe``: the fixed probe batch ``(x, y)`` (arrays, tensors, or a ``tf.data.Dataset`` whose
    first batch is taken), fed to the model and the compiled loss as a training batch would be.
    ``out``: the run folder, ``<comparison>/runs/<name>`` (default ``results/runs/<name>``;
    ``name`` defaults to the model's name and the time). Other options: :class:`Watch`.

    The model's ``fit`` gets the :class:`Watch` callback added (the only change to the model's
    API); the instrumented ``train_step`` is put in when a fit starts, after ``compile``."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"watch(model, ...) needs a keras.Model (Keras {keras.__version__}), got "
                        f"{type(model).__module__}.{type(model).__qualname__}")
    old = getattr(model, "_initsuite_watch", None)
    if old is not None:
        raise ValueError(f"model {model.name!r} is already watched (run folder {old.rdir.path}); one watch per model")
    cb = Watch(probe, out=out if out is not None else default_out(model, name), **options)
    cb.attach(model)
    return model


def default_out(model, name: Optional[str] = None) -> Path:
    """``results/runs/<name>``, ``name`` = the model's name and the time by default."""
    return Path("results") / "runs" / (name or f"{model.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_folder(out) -> Path:
    """The run folder ``out`` checked: it must be ``<comparison>/runs/<name>``, the layout collect reads."""
    path = Path(out).expanduser()
    if path.parent.name != "runs" or not path.name:
        raise ValueError(f"out={str(out)!r}: a watched run folder lives in <comparison folder>/runs/<name>, so that "
                         f"`initsuite figures <comparison folder>` finds it (e.g. out='results/runs/{path.name or 'adam'}')")
    return path.resolve()


class Watch(keras.callbacks.Callback):
    """The watch as a Keras callback: ``model.fit(..., callbacks=[Watch(probe, out=...)])`` works
    like :func:`watch` (which adds it to every ``fit`` of the model).

    Arguments (all but ``probe`` keyword-only):

    * ``probe``: the fixed probe batch ``(x, y)``.
    * ``out``: the run folder ``<comparison>/runs/<name>``; its name is the run id in the tables.
    * ``every``: fixed-probe cadence in steps; None: steps 0, 10, 30, 100, 300, ... and each epoch's
      end. Step 0 and the last step are always probed.
    * ``train_every``: training-batch statistics every this many steps (0: off); ``train_buffer``:
      rows kept on the device between host reads; ``train_quantiles``: percentiles and histograms
      of the training batch too.
    * ``hist_steps``: probe steps that keep histograms (-1: the last step); ``hist_bins``, ``percentiles``.
    * ``on_nonfinite``: ``"stop"`` (default) or ``"continue"``; ``check_every``: steps between the
      host's reads of the NaN flag (and always after the first update and at the end).
    * ``label``: the run's name in legends (``init`` column; default: the kernels' initializer).
    * ``seed``: the seed the script used (the ``seed`` column; runs differing only in it are averaged).
    * ``experiment``: the ``experiment`` column; ``verbose``: print the run folder at the end.
    """

    def __init__(self, probe, *, out=None, every: Optional[int] = None, train_every: int = 10,
                 train_buffer: int = 100, train_quantiles: bool = False, hist_steps: Sequence[int] = (0, -1),
                 hist_bins: int = 100, percentiles: Sequence[float] = (2.0, 50.0, 98.0),
                 on_nonfinite: str = STOP, check_every: int = 50, label: Optional[str] = None, seed: int = 0,
                 experiment: str = EXPERIMENT, verbose: bool = True):
        super().__init__()
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {', '.join(map(repr, ON_NONFINITE))}, got {on_nonfinite!r}")
        for key, value, lo in (("every", every, 1), ("train_every", train_every, 0), ("train_buffer", train_buffer, 1),
                               ("hist_bins", hist_bins, 1), ("check_every", check_every, 1), ("seed", seed, 0)):
            if value is None and key == "every":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ValueError(f"{key} must be an integer >= {lo}, got {value!r}")
        bad = [q for q in percentiles if not 0 <= float(q) <= 100]
        if bad:
            raise ValueError(f"percentiles must lie in [0, 100], got {bad}")
        self.probe_x, self.probe_y = probe_batch(probe)
        self.rdir = RunDir(run_folder(out if out is not None else Path("results") / "runs" / "watched"))
        self.rid = self.rdir.path.name
        self.every = None if every is None else int(every)
        self.hist_steps = [int(s) for s in hist_steps]
        self.on_nonfinite, self.check_every = on_nonfinite, int(check_every)
        self.label, self.verbose = label, bool(verbose)
        self.cfg = OmegaConf.structured(Config)  # the suite's schema: what collect, figures and verdicts read
        with open_dict(self.cfg):
            self.cfg.experiment = str(experiment)
            self.cfg.seed = int(seed)
            self.cfg.paths.results = str(self.rdir.path.parent.parent)
            self.cfg.probes.every = self.every
            self.cfg.probes.train_every = int(train_every)
            self.cfg.probes.train_buffer = int(train_buffer)
            self.cfg.probes.train_quantiles = bool(train_quantiles)
            self.cfg.probes.hist_steps = self.hist_steps
            self.cfg.probes.hist_bins = int(hist_bins)
            self.cfg.probes.percentiles = [float(q) for q in percentiles]
            self.cfg.probes.batch_size = int(_batch_len(self.probe_x))
            self.cfg.train.stop_on_nonfinite = on_nonfinite == STOP
            self.cfg.train.nonfinite_check_every = int(check_every)
            self.cfg.train.progress = False
        self.inst: Optional[Instrument] = None
        self.built = None
        self._optimizer = None
        self._bound_step = None
        self.step_var: Optional[tf.Variable] = None
        self.rows: Dict[str, List[dict]] = {name: [] for name in TABLE_COLUMNS}
        self.step = 0  # updates done (host count)
        self.fit_info: Dict[str, Any] = {}
        self._epochs_done = 0
        self._epoch_marks: List[Tuple[int, int, Optional[int]]] = []  # (first step, epoch number, steps per epoch)
        self._probed: set = set()
        self._noted = 0  # steps whose training-batch row the host has counted
        self._checked = 0  # the step of the last NaN-flag read
        self._first: Optional[Dict[str, Any]] = None
        self._started = None
        self._train_s = 0.0
        self._fresh = True  # the folder is cleared of an earlier run's files at the first fit

    # -- attaching ------------------------------------------------------------------------
    def attach(self, model) -> None:
        """Add this callback to every ``model.fit`` (an instance attribute wrapping Keras' ``fit``)."""
        original = model.fit
        sig = inspect.signature(original)
        cb = self

        @functools.wraps(original)
        def fit(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            callbacks = bound.arguments.get("callbacks")
            if isinstance(callbacks, keras.callbacks.CallbackList):
                if cb not in callbacks.callbacks:
                    callbacks.append(cb)
                    cb.set_model(model)
            else:
                callbacks = list(callbacks or [])
                if cb not in callbacks:
                    callbacks.append(cb)
            bound.arguments["callbacks"] = callbacks
            cb.fit_info = _describe_fit(bound.arguments)
            try:
                return original(*bound.args, **bound.kwargs)
            except BaseException as exc:
                cb.failed(exc)
                raise

        model.fit = fit
        model._initsuite_watch = self

    def set_model(self, model) -> None:
        """Called by ``fit`` before it builds its train function: put the instrumented step in."""
        super().set_model(model)
        if getattr(model, "optimizer", None) is None:  # evaluate/predict on an uncompiled model: nothing to do
            return
        retrace = False
        if self.inst is None or self.inst.model is not model:
            self._instrument(model)
            retrace = True
        elif self._optimizer is not model.optimizer:  # compiled again: its optimizer and loss
            self.inst.optimizer = _inner_optimizer(model.optimizer)
            self.inst.loss_fn = _loss_fn(model)
            retrace = True
        if self.cfg.probes.train_quantiles and model.jit_compile:
            # Exact selection keeps a number of values known only at run time: XLA cannot compile it
            # into the step. config.yaml records the jit_compile the fit used.
            warnings.warn("initsuite watch: train_quantiles=True trains without XLA (jit_compile=False): "
                          "exact selection cannot be compiled into the train step", stacklevel=2)
            model.jit_compile = False
            retrace = True
        if model.__dict__.get("train_step") is not self._bound_step:
            model.train_step = self._bound_step
            retrace = True
        if retrace:
            model.train_function = None  # fit builds its train function anew, with the instrumented step
        self._optimizer = model.optimizer

    def _instrument(self, model) -> None:
        try:
            sample = keras.tree.map_structure(lambda t: t[:2], self.probe_x)
            self.built = custom.describe(model, sample=sample)
        except custom.BuilderError:
            raise
        except Exception as exc:
            raise ValueError(f"the probe batch does not fit model {model.name!r} (probe x: "
                             f"{_shapes(self.probe_x)}): {type(exc).__name__}: {exc}") from exc
        self.inst = Instrument(self.built, _loss_fn(model), _inner_optimizer(model.optimizer), self.cfg)
        with tf.init_scope():
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="initsuite_watch_step")
        self._bound_step = functools.partial(_train_step, self, model)

    # -- the schedule -----------------------------------------------------------------------
    def epoch_of(self, step: int) -> float:
        mark = None
        for m in self._epoch_marks:
            if m[0] <= step:
                mark = m
        if mark is None:
            return 0.0
        first, number, spe = mark
        return float(number) + ((step - first) / spe if spe else 0.0)

    def _probe_due(self, step: int) -> bool:
        if self.every is not None:
            return step % self.every == 0
        return step in _LOG_SPACED

    def _hist_due(self, step: int, last: bool) -> bool:
        return step in self.hist_steps or (last and -1 in self.hist_steps)

    # -- host-side work -----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.inst is None:
            raise RuntimeError("initsuite Watch: the model was not instrumented (fit calls set_model first; "
                               "was the callback given to a fit of another model?)")
        self.step = int(self.step_var.numpy())
        self._started = time.time()
        if self._fresh:
            for name in ("status.json", "config.yaml", *(f"{t}.parquet" for t in TABLE_COLUMNS)):
                (self.rdir.path / name).unlink(missing_ok=True)  # an earlier run's files: start over
            self.rdir.path.mkdir(parents=True, exist_ok=True)
            self._fresh = False
        self._describe_config()
        self.rdir.write_config(OmegaConf.to_container(self.cfg, resolve=True))
        self.rdir.write_status("running", run_id=self.rid, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               pid=os.getpid(), host=os.uname().nodename, error=None,
                               **row_mod.first_nonfinite_fields(self._first))
        if self.step not in self._probed:
            self._probe(self.step, with_hist=self._hist_due(self.step, False))

    def on_epoch_begin(self, epoch, logs=None):
        spe = self.params.get("steps") if self.params else None
        self._epoch_marks.append((self.step, self._epochs_done, int(spe) if spe else None))
        self._epoch_start = self.step

    def on_train_batch_begin(self, batch, logs=None):
        self._advance(self._epoch_start + int(batch))

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done += 1
        self._advance(int(self.step_var.numpy()), force_check=True)
        self._metric_rows(self.step, logs or {})
        if self.every is None or self.step % self.every == 0:
            if self.step not in self._probed:
                self._probe(self.step, with_hist=self._hist_due(self.step, False))

    def on_train_end(self, logs=None):
        self._advance(int(self.step_var.numpy()), force_check=True, probe=False)
        if self.step not in self._probed or self._hist_due(self.step, True) and not self._has_hist(self.step):
            self._drop_probe(self.step)
            self._probe(self.step, with_hist=self._hist_due(self.step, True))
        self._train_s += time.time() - self._started
        self._finish()

    def _advance(self, step: int, force_check: bool = False, probe: bool = True) -> None:
        """The host's work when it learns that ``step`` updates are done."""
        if self.inst.stats is not None:
            every = self.inst.train_every
            for s in range(self._noted, step):  # the rows the device wrote since the last call
                if s % every == 0:
                    self.inst.stats.note(s)
        self._noted = max(self._noted, step)
        self.step = step
        if probe and self._probe_due(step) and step not in self._probed:
            self._probe(step, with_hist=self._hist_due(step, False))
            self._metric_rows(step, _metrics_result(self.model))
        if force_check or step == 1 or step - self._checked >= self.check_every:
            self._check_nonfinite(step)

    def _probe(self, step: int, with_hist: bool) -> None:
        stats, hists = self.inst.probe(self.probe_x, self.probe_y, bool(with_hist))
        row_mod.add_probe(self.rows, self.rid, step, self.epoch_of(step), stats, hists, self.inst.layer_index)
        self._probed.add(step)

    def _has_hist(self, step: int) -> bool:
        return any(r["step"] == step and r["batch"] == "probe" for r in self.rows["histograms"])

    def _drop_probe(self, step: int) -> None:
        for name in ("layer_stats", "histograms"):
            self.rows[name] = [r for r in self.rows[name] if not (r["step"] == step and r["batch"] == "probe")]

    def _metric_rows(self, step: int, logs: Dict[str, Any]) -> None:
        epoch = self.epoch_of(step)
        for key, value in logs.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            split, metric = ("valid", key[4:]) if key.startswith("val_") else ("train", key)
            found = [(metric, value)]
            if metric in _ACCURACY:
                found.append(("error", 1.0 - value))
            self.rows["metrics"] = [r for r in self.rows["metrics"]
                                    if not (r["step"] == step and r["split"] == split
                                            and r["metric"] in {m for m, _ in found})]
            self.rows["metrics"] += [dict(run_id=self.rid, step=step, epoch=epoch, split=split, metric=m,
                                          value=v) for m, v in found]

    def _check_nonfinite(self, step: int) -> None:
        self._checked = step
        if self._first is None:
            first = self.inst.first_nonfinite()
            if first is None:
                return
            self._first = first
            self.rows["events"].append(row_mod.nonfinite_event(self.rid, first, self.epoch_of(first["step"]), step))
        if self.on_nonfinite == STOP and self.model is not None:
            self.model.stop_training = True

    def _take_step_stats(self) -> None:
        row_mod.add_step_stats(self.rows, self.rid, self.inst, self.epoch_of)

    def _tables(self) -> Dict[str, pd.DataFrame]:
        return {name: pd.DataFrame(rows, columns=TABLE_COLUMNS[name]) if rows else empty_table(name)
                for name, rows in self.rows.items()}

    def _finish(self) -> None:
        self._take_step_stats()
        self._check_nonfinite(self.step)
        self.rdir.write_tables(self._tables())
        status = "diverged" if self._first is not None else "done"
        info = dict(run_id=self.rid, steps=self.step, total_steps=self.step,
                    steps_per_epoch=self._epoch_marks[-1][2] if self._epoch_marks else None,
                    train_s=self._train_s, wall_s=self._train_s,
                    device="GPU" if tf.config.list_logical_devices("GPU") else "CPU",
                    data=self.fit_info.get("data", "model.fit"), data_source=DATASET,
                    n_train=self.fit_info.get("n_train"), n_valid=self.fit_info.get("n_valid"),
                    n_test=int(_batch_len(self.probe_x)), layers=[p.name for p in self.built.points],
                    reinitialized=[], error=None, **row_mod.first_nonfinite_fields(self._first),
                    **row_mod.final_metrics(self.rows["metrics"]))
        self.rdir.write_status(status, **info)
        if self.verbose:
            where = ""
            if self._first:
                f = self._first
                where = f" (first NaN/Inf: step {f['step']}, {f['phase']} phase, layer {f['layer']}, {f['tensor']})"
            print(f"[initsuite] watched fit {self.rid}: {status} after {self.step} steps{where}; run folder "
                  f"{self.rdir.path}; draw with: initsuite figures {self.rdir.path.parent.parent}", flush=True)

    def failed(self, exc: BaseException) -> None:
        """A fit that raised: status ``failed`` with the error, and the rows measured so far."""
        if self.inst is None or self._started is None:
            return
        try:
            self._take_step_stats()
            self.rdir.write_tables(self._tables())
        except Exception:  # the error that matters is the fit's
            pass
        self.rdir.write_status("failed", run_id=self.rid, steps=self.step, error=describe_error(exc),
                               traceback=traceback.format_exc(), **row_mod.first_nonfinite_fields(self._first))

    # -- config.yaml ------------------------------------------------------------------------
    def _describe_config(self) -> None:
        """The watched model, optimizer and fit in the suite's config schema (the columns collect makes)."""
        model, cfg = self.model, self.cfg
        opt = _inner_optimizer(model.optimizer)
        oc = _optimizer_config(opt)
        init = _kernel_initializer(self.built)
        act = _activation_of(self.built)
        policy = keras.mixed_precision.global_policy().name if not hasattr(model, "dtype_policy") \
            else model.dtype_policy.name
        with open_dict(cfg):
            cfg.dataset.name = DATASET
            cfg.dataset.source = DATASET
            first = keras.tree.flatten(self.probe_x)[0]
            cfg.dataset.image_shape = [int(d) for d in first.shape[1:]]
            out_dim = _output_units(self.built)
            if out_dim:
                cfg.dataset.num_classes = out_dim
            cfg.model.name = MODEL_NAME
            cfg.model.depth = sum(1 for p in self.built.points if p.act_layer is not None)
            cfg.model.width = _width(self.built)
            cfg.model.kwargs = {"class": type(model).__name__, "params": int(model.count_params())}
            cfg.init.name = init
            cfg.init.label = self.label or init
            cfg.activation.name = act
            cfg.optimizer.name = _snake(type(opt).__name__)
            for key in ("lr", "momentum", "beta_1", "beta_2", "epsilon"):
                if oc.get(key) is not None:
                    cfg.optimizer[key] = float(f"{float(oc[key]):.7g}")  # float32's digits
            cfg.train.epochs = int(self._epochs_done + (self.params.get("epochs") or 0)) if self.params else 1
            cfg.train.batch_size = int(self.fit_info.get("batch_size") or 0)
            cfg.train.jit_compile = bool(model.jit_compile)
            cfg.train.mixed_precision = policy == "mixed_bfloat16"
            cfg.extra = {"watch": dict(
                model=model.name, model_class=f"{type(model).__module__}.{type(model).__qualname__}",
                optimizer=f"{type(model.optimizer).__module__}.{type(model.optimizer).__qualname__}",
                loss=_describe_loss(model), dtype_policy=policy, keras=keras.__version__,
                steps_per_execution=int(getattr(model, "steps_per_execution", 1) or 1),
                data=self.fit_info.get("data"),
                layers=[dict(layer=p.name, layer_class=type(p.kernel_layer).__name__,
                             preactivation=p.pre_layer is not None) for p in self.built.points])}


# --------------------------------------------------------------------------- the train step


def _train_step(watch: Watch, model, data):
    """Keras' TensorFlow ``train_step`` (``keras/src/backend/tensorflow/trainer.py``) with the
    Instrument's pieces in their order: start_of_step, forward_recorded, loss, gradients of the
    weights and of the recorded tensors, update (check, apply, forensics, the step's row)."""
    inst, opt = watch.inst, model.optimizer
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    step = tf.convert_to_tensor(watch.step_var)  # this step's number, read before the update
    record = tf.equal(step % inst.train_every, 0) if inst.stats is not None else False
    start = inst.start_of_step()
    has_training = getattr(model, "_call_has_training_arg", True)
    call = (lambda t: model(t, training=True)) if has_training else (lambda t: model(t))
    with tf.GradientTape() as tape:
        y_pred, rec = inst.forward_recorded(x, True, call=call)
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        model._loss_tracker.update_state(
            _unscale_for_distribution(loss),
            sample_weight=tf.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0])
        scaled_loss = opt.scale_loss(loss)
    tvars = model.trainable_variables
    grads, tgrads = tape.gradient(scaled_loss, (tvars, inst.grad_targets(rec)))
    scaling = _scales_loss(opt)
    if not scaling:
        inst.update(step, rec, loss, grads, tgrads, start, record)
    else:
        scale = tf.cast(opt.scale_loss(tf.constant(1.0, tf.float32)), tf.float32)
        scaled = {id(v): g for g, v in zip(grads, tvars)}

        def unscale(gs):
            return [None if g is None else tf.cast(g, tf.float32) / scale for g in gs]

        def apply(pairs):  # the optimizer gets the scaled gradients and unscales them itself
            opt.apply_gradients([(scaled[id(v)], v) for _, v in pairs])

        def measured():
            inst.update(step, rec, loss, unscale(grads), unscale(tgrads), start, record, apply=apply)
            return tf.constant(0)

        def overflow():  # the loss scaler skips this update and lowers its scale
            opt.apply_gradients([(g, v) for g, v in zip(grads, tvars) if g is not None])
            return tf.constant(0)

        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
        tf.cond(tf.logical_and(tf.reduce_all(tf.math.is_finite(loss)), tf.logical_not(finite)),
                overflow, measured)
    watch.step_var.assign_add(1)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _unscale_for_distribution(loss):
    try:
        from keras.src.losses.loss import unscale_loss_for_distribution
    except ImportError:  # pragma: no cover - another Keras layout
        return loss
    return unscale_loss_for_distribution(loss)


def _scales_loss(opt) -> bool:
    """Whether ``optimizer.scale_loss`` multiplies the loss (LossScaleOptimizer, loss_scale_factor)."""
    return isinstance(opt, keras.optimizers.LossScaleOptimizer) or getattr(opt, "loss_scale_factor", None) is not None


def _inner_optimizer(opt):
    """The optimizer that writes the weights (a LossScaleOptimizer's inner one): what the
    Instrument watches for the update statistics."""
    return getattr(opt, "inner_optimizer", None) or opt


def _loss_fn(model):
    """The probe's loss: the model's compiled loss (and its own losses), as ``fit`` computes it."""
    def loss_fn(y, y_pred):
        return model._compute_loss(x=None, y=y, y_pred=y_pred, sample_weight=None, training=False)
    return loss_fn


# --------------------------------------------------------------------------- describing


def probe_batch(probe) -> Tuple[Any, Any]:
    """``(x, y)`` as tensors (a ``tf.data.Dataset``: its first batch); errors say what is wrong."""
    if isinstance(probe, tf.data.Dataset):
        try:
            probe = next(iter(probe))
        except StopIteration:
            raise ValueError("probe: the dataset is empty") from None
    if not isinstance(probe, (tuple, list)) or len(probe) != 2:
        raise ValueError(f"probe must be (x, y), the fixed probe batch (e.g. probe=(x_test[:300], y_test[:300])), "
                         f"got {type(probe).__name__}")
    x, y = (keras.tree.map_structure(_to_tensor, t) for t in probe)
    n, m = _batch_len(x), _batch_len(y)
    if n == 0:
        raise ValueError("probe: x holds no examples")
    if n != m:
        raise ValueError(f"probe: x has {n} examples, y has {m}")
    return x, y


def _to_tensor(t):
    t = tf.convert_to_tensor(t)
    if t.dtype == tf.float64:
        t = tf.cast(t, tf.float32)
    return t


def _batch_len(x) -> int:
    first = keras.tree.flatten(x)[0]
    return int(first.shape[0]) if first.shape.rank else 0


def _shapes(x) -> str:
    return str(keras.tree.map_structure(lambda t: tuple(t.shape), x))


def _describe_fit(args: Dict[str, Any]) -> Dict[str, Any]:
    """What the host knows about a fit's data: its kind, batch size and number of examples."""
    x = args.get("x")
    out: Dict[str, Any] = {}
    if isinstance(x, tf.data.Dataset):
        out["data"] = "tf.data"
        first = keras.tree.flatten(x.element_spec)[0]
        dim = first.shape[0] if first.shape.rank else None
        out["batch_size"] = int(dim) if dim is not None else None
    elif x is not None:
        try:
            n = int(np.shape(keras.tree.flatten(x)[0])[0])
        except Exception:  # a generator or PyDataset: unknown length
            n = None
        out["data"] = "arrays" if n is not None else type(x).__name__
        out["batch_size"] = int(args.get("batch_size") or 32) if n is not None else args.get("batch_size")
        split = float(args.get("validation_split") or 0.0)
        if n is not None:
            out["n_train"] = n - int(n * split)
            if split:
                out["n_valid"] = int(n * split)
    else:
        out["data"] = type(x).__name__
    return out


def _metrics_result(model) -> Dict[str, Any]:
    try:
        result = model.get_metrics_result()
    except Exception:  # no metric has seen a batch yet
        return {}
    flat = {}
    for k, v in result.items():
        if isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    return flat


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _kernel_initializer(built) -> str:
    """The snake_case name of the measured kernels' initializer if they share one, else ``mixed``
    (``unknown`` where a layer does not say)."""
    names = set()
    for p in built.points:
        init = getattr(p.kernel_layer, "kernel_initializer", None)
        if init is None:
            init = getattr(p.kernel_layer, "depthwise_initializer", None) or \
                getattr(p.kernel_layer, "embeddings_initializer", None)
        names.add(_snake(type(init).__name__) if init is not None else "unknown")
    return names.pop() if len(names) == 1 else "mixed"


def _units(layer) -> Optional[int]:
    for attr in ("units", "filters", "output_dim"):
        v = getattr(layer, attr, None)
        if isinstance(v, (int, np.integer)):
            return int(v)
    return None


def _width(built) -> int:
    """The widest hidden kernel layer (units or filters): the ``width`` column."""
    widths = [_units(p.kernel_layer) for p in built.points[:-1]]
    widths = [w for w in widths if w]
    return max(widths) if widths else (_units(built.points[-1].kernel_layer) or 1)


def _output_units(built) -> Optional[int]:
    return _units(built.points[-1].kernel_layer)


def _activation_of(built) -> str:
    """The registry name of the one known activation between the layers, or ``keep``."""
    names = set()
    for p in built.points[:-1]:
        if p.act_layer is not None and p.act_layer is not p.kernel_layer:
            names.add(custom._activation_name(p.act_layer, None, None))
        else:
            fn = getattr(p.kernel_layer, "activation", None)
            names.add(custom._KERAS_TO_REGISTRY.get(getattr(fn, "__name__", "")))
    return names.pop() if len(names) == 1 and None not in names else custom.KEEP


def _optimizer_config(opt) -> Dict[str, Any]:
    try:
        oc = dict(opt.get_config())
    except Exception:
        oc = {}
    out = {k: oc.get(k) for k in ("momentum", "beta_1", "beta_2", "epsilon")}
    try:
        out["lr"] = float(np.asarray(opt.learning_rate))
    except Exception:
        out["lr"] = None
    out = {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


def _describe_loss(model) -> str:
    loss = getattr(model, "loss", None)
    if loss is None:
        return "compute_loss" if type(model).compute_loss is not keras.Model.compute_loss else "none"
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or str(loss)
