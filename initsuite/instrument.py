"""The compiled pieces of a run: the training step with NaN/Inf forensics, the probe
measurement and the evaluation pass, all ``tf.function``s over one model.

NaN/Inf forensics, every step, nearly free: the step checks only what it already
holds and is small — each measured layer's outputs, the loss, and the
back-propagated gradients dC/ds (one pass over the activations, not over the
weights). Only when that check fails for the first time does a ``tf.cond``
branch run the full ordered search:

1. the weights as the previous update left them (phase ``update``, step t-1;
   ``init`` at step 0),
2. forward: each layer's pre-activation then activation, from the input up,
3. the loss,
4. backward: from the top layer down, dC/ds, then the layer's weight gradients.

The first failing item is stored in two variables the host reads now and then.
A weight gradient that overflows while everything else is finite is caught one
step later, as a non-finite weight left by that update.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from initsuite.probes import CheckItem, Taps, histogram, main_kernel, robust_range, slope, tensor_stats

HIST_TENSORS = ("activation", "preactivation", "backprop_grad", "weight_grad")


def _all_finite(t) -> tf.Tensor:
    return tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))


class Instrument:
    def __init__(self, built, loss_fn, optimizer, cfg):
        self.built = built
        self.model = built.model
        self.points = list(built.points)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.percentiles = [float(q) for q in cfg.probes.percentiles]
        self.hist_bins = int(cfg.probes.hist_bins)
        self.layer_index = {p.name: i for i, p in enumerate(self.points)}
        tap_layers = {}
        for p in self.points:
            if p.pre_layer is not None:
                tap_layers[(p.name, "pre")] = p.pre_layer
            if p.act_layer is not None:
                tap_layers[(p.name, "act")] = p.act_layer
        self.taps = Taps(tap_layers)
        self.kernels = {p.name: main_kernel(p.kernel_layer) for p in self.points}
        owner = {}
        for p in self.points:
            for v in p.kernel_layer.trainable_weights:
                owner.setdefault(id(v), p.name)
        self.var_owner = owner
        self.nf_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="first_nonfinite_step")
        self.nf_index = tf.Variable(-1, dtype=tf.int32, trainable=False, name="first_nonfinite_item")
        self.check_items: Optional[List[CheckItem]] = None
        jit = bool(cfg.train.jit_compile)
        self._train = {
            False: tf.function(lambda x, y, s: self._train_step(x, y, s, False), jit_compile=jit),
            True: tf.function(lambda x, y, s: self._train_step(x, y, s, True), jit_compile=jit),
        }
        self._probe = {
            False: tf.function(lambda x, y: self._probe_step(x, y, False)),
            True: tf.function(lambda x, y: self._probe_step(x, y, True)),
        }
        shape = [None] + [int(d) for d in self.model.inputs[0].shape[1:]] if getattr(self.model, "inputs", None) else None
        sig = [tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int64)] if shape else None
        self._eval = tf.function(self._eval_batch, input_signature=sig, reduce_retracing=sig is None)

    # -- helpers --------------------------------------------------------------------------
    def _grad_key(self, p) -> Tuple[str, str]:
        return (p.name, "pre") if p.pre_layer is not None else (p.name, "act")

    def _var_label(self, v) -> Tuple[str, str]:
        layer = self.var_owner.get(id(v), getattr(v, "path", v.name))
        tensor = "weight" if len(v.shape) >= 2 else "bias" if len(v.shape) == 1 else "scalar"
        return layer, tensor

    def _layer_index_of(self, layer: str) -> int:
        return self.layer_index.get(layer, -1)

    # -- training -------------------------------------------------------------------------
    def _forward(self, x, training: bool):
        with self.taps.record() as rec:
            logits = self.model(x, training=training)
        return logits, rec

    def _train_step(self, x, y, step, measure: bool):
        tvars = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits, rec = self._forward(x, True)
            loss = self.loss_fn(y, tf.cast(logits, tf.float32))
        targets = [rec[self._grad_key(p)] for p in self.points if self._grad_key(p) in rec]
        grads, tgrads = tape.gradient(loss, (tvars, targets))

        cheap = [_all_finite(t) for t in rec.values()] + [_all_finite(loss)] + [
            _all_finite(g) for g in tgrads if g is not None]
        ok = tf.reduce_all(tf.stack(cheap))
        fresh = tf.logical_and(tf.logical_not(ok), self.nf_index < 0)
        tf.cond(fresh, lambda: self._forensics(step, rec, loss, tvars, grads, tgrads), lambda: tf.constant(0))

        before = {}
        if measure:
            before = {n: tf.identity(tf.convert_to_tensor(k)) for n, k in self.kernels.items() if k is not None}
        pairs = [(g, v) for g, v in zip(grads, tvars) if g is not None]
        self.optimizer.apply_gradients(pairs)
        ratios = {}
        for name, w0 in before.items():
            w1 = tf.convert_to_tensor(self.kernels[name])
            ratios[name] = tf.norm(w1 - w0) / tf.maximum(tf.norm(w0), 1e-30)
        return loss, ratios

    def _forensics(self, step, rec, loss, tvars, grads, tgrads):
        items: List[CheckItem] = []
        flags = []

        def add(item, tensor):
            items.append(item)
            flags.append(tf.logical_not(_all_finite(tensor)))

        for v in tvars:  # what the previous update left
            layer, tensor = self._var_label(v)
            add(CheckItem("update", layer, self._layer_index_of(layer), tensor, -1), v)
        for p in self.points:
            for key, tensor in (((p.name, "pre"), "preactivation"), ((p.name, "act"), "activation")):
                if key in rec:
                    add(CheckItem("forward", p.name, self._layer_index_of(p.name), tensor), rec[key])
        add(CheckItem("loss", "loss", -1, "loss"), loss)
        tgrad_of = {}
        i = 0
        for p in self.points:
            if self._grad_key(p) in rec:
                tgrad_of[p.name] = tgrads[i]
                i += 1
        grads_by_layer: Dict[str, list] = {}
        for g, v in zip(grads, tvars):
            if g is not None:
                layer, tensor = self._var_label(v)
                grads_by_layer.setdefault(layer, []).append((tensor, g))
        for p in reversed(self.points):
            if tgrad_of.get(p.name) is not None:
                add(CheckItem("backward", p.name, self._layer_index_of(p.name), "backprop_grad"), tgrad_of[p.name])
            for tensor, g in grads_by_layer.pop(p.name, []):
                add(CheckItem("backward", p.name, -1 if p.name not in self.layer_index else self._layer_index_of(p.name),
                              f"{tensor}_grad"), g)
        for layer, rest in grads_by_layer.items():  # variables outside the measured layers
            for tensor, g in rest:
                add(CheckItem("backward", layer, -1, f"{tensor}_grad"), g)
        if self.check_items is None:
            self.check_items = items
        bad = tf.stack(flags)
        idx = tf.cast(tf.argmax(tf.cast(bad, tf.int32)), tf.int32)
        offsets = tf.constant([it.step_offset for it in items], tf.int64)
        self.nf_step.assign(step + tf.gather(offsets, idx))
        self.nf_index.assign(idx)
        return tf.constant(0)

    def train_step(self, x, y, step, measure: bool):
        loss, ratios = self._train[bool(measure)](x, y, step)
        if measure:
            return loss, {k: float(v) for k, v in ratios.items()}
        return loss, None

    def first_nonfinite(self) -> Optional[Dict[str, Any]]:
        idx = int(self.nf_index.numpy())
        if idx < 0 or self.check_items is None:
            return None
        item = self.check_items[idx]
        step = int(self.nf_step.numpy())
        phase = item.phase
        if phase == "update" and step < 0:  # non-finite before the first update: the initializer
            phase, step = "init", 0
        return dict(step=step, phase=phase, layer=item.layer, layer_index=item.layer_index, tensor=item.tensor)

    # -- measurement ----------------------------------------------------------------------
    def _probe_step(self, x, y, with_hist: bool):
        kernels = [self.kernels[p.name] for p in self.points]
        with tf.GradientTape() as tape:
            logits, rec = self._forward(x, False)
            loss = self.loss_fn(y, tf.cast(logits, tf.float32))
        keys = [self._grad_key(p) for p in self.points]
        targets = [rec.get(k) for k in keys]
        present = [t for t in targets if t is not None]
        kvars = [k for k in kernels if k is not None]
        tg, kg = tape.gradient(loss, (present, kvars))
        tgrad, kgrad = {}, {}
        it_t, it_k = iter(tg), iter(kg)
        for p, t, k in zip(self.points, targets, kernels):
            tgrad[p.name] = next(it_t) if t is not None else None
            kgrad[p.name] = next(it_k) if k is not None else None

        qs = self.percentiles
        stats: Dict[str, Dict[str, tf.Tensor]] = {}
        tensors: Dict[str, Dict[str, Any]] = {t: {} for t in HIST_TENSORS}
        fn, thr = self.built.activation_fn, self.built.saturation_threshold
        for p, k in zip(self.points, kernels):
            s = rec.get((p.name, "pre"))
            z = rec.get((p.name, "act"))
            if s is not None:
                stats[f"{p.name}|preactivation"] = tensor_stats(s, qs)
                tensors["preactivation"][p.name] = s
            if z is not None:
                sat = None
                if s is not None and fn is not None and thr is not None:
                    sat = tf.abs(slope(fn, tf.cast(s, tf.float32))) < thr
                stats[f"{p.name}|activation"] = tensor_stats(z, qs, sat)
                tensors["activation"][p.name] = z
            if tgrad[p.name] is not None:
                stats[f"{p.name}|backprop_grad"] = tensor_stats(tgrad[p.name], qs)
                tensors["backprop_grad"][p.name] = tgrad[p.name]
            if k is not None:
                stats[f"{p.name}|weight"] = tensor_stats(k, qs)
                if kgrad[p.name] is not None:
                    stats[f"{p.name}|weight_grad"] = tensor_stats(kgrad[p.name], qs)
                    tensors["weight_grad"][p.name] = kgrad[p.name]
        hists = {}
        if with_hist:
            for tensor, by_layer in tensors.items():
                if not by_layer:
                    continue
                lo, hi = robust_range(list(by_layer.values()))
                for name, t in by_layer.items():
                    hists[f"{name}|{tensor}"] = (lo, hi, histogram(t, lo, hi, self.hist_bins))
        return stats, hists

    def probe(self, x, y, with_hist: bool):
        """Statistics {(layer, tensor): {stat: float}} and histograms
        {(layer, tensor): (edges, counts)} of the probe batch at the current weights."""
        stats, hists = self._probe[bool(with_hist)](x, y)
        out_stats = {}
        for key, values in stats.items():
            layer, tensor = key.split("|")
            out_stats[(layer, tensor)] = {k: float(v) for k, v in values.items()}
        out_hists = {}
        for key, (lo, hi, counts) in hists.items():
            layer, tensor = key.split("|")
            edges = np.linspace(float(lo), float(max(hi, lo + 1e-12)), self.hist_bins + 1)
            out_hists[(layer, tensor)] = (edges, counts.numpy())
        return out_stats, out_hists

    # -- evaluation -----------------------------------------------------------------------
    def _eval_batch(self, x, y):
        logits = tf.cast(self.model(x, training=False), tf.float32)
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        errors = tf.reduce_sum(tf.cast(tf.not_equal(tf.argmax(logits, axis=-1), y), tf.float32))
        return tf.reduce_sum(losses), errors

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int) -> Tuple[float, float]:
        """Mean loss and error rate over (x, y)."""
        total_loss, total_err = 0.0, 0.0
        for i in range(0, len(x), batch):
            l, e = self._eval(tf.constant(x[i:i + batch]), tf.constant(y[i:i + batch].astype(np.int64)))
            total_loss += float(l)
            total_err += float(e)
        n = max(len(x), 1)
        return total_loss / n, total_err / n
