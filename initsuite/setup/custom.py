"""Bring your own architecture: ``model=custom model.builder=package.module:function``.

The builder is any function ``build(input_shape, num_classes, activation=..., **model.kwargs)``
that returns a Keras 3 ``keras.Model`` (functional, ``Sequential`` or subclassed; nested
models and residual branches are fine) whose output is the logits. :func:`build` turns
it into the :class:`~initsuite.setup.models.BuiltModel` the training loop instruments:

1. **Load** the builder (:func:`load_builder`). Module paths resolve like ``python -m``:
   installed packages first, then the launch directory and the project root, so
   ``experiments.custom_resnet:build`` works from a checkout. Errors name the
   module, the function and what went wrong, before any run folder is written
   (:func:`validate`).
2. **Call** it with ``activation`` = the configured activation function, or, with
   ``activation=keep``, without that argument: the model keeps its own activations.
3. **Trace** one eager forward pass on a dummy batch, recording the order in which
   layers are first called. That is a topological order of the graph for every
   kind of model, so measured layers are ordered by depth from the input.
4. **Re-initialize** every kernel-bearing layer (:data:`KERNEL_LAYERS`, keyed by
   Keras class, matched along the class hierarchy so subclasses count) with the
   configured initializer, each variable with its own seed, using the right fans
   for its kernel shape (:func:`register_kernel_layer` adds layer types). Biases of
   those layers start at ``init.bias``; everything else (BatchNorm gamma/beta and
   moving statistics, LayerNorm, ...) stays as the builder made it.
5. **Measure** every kernel layer that the forward pass calls. Each is named by its
   Keras path inside the model (``block_1/conv_a``); its output is the measured
   ``activation`` and the back-propagated gradient dC/ds is read there. When the
   output goes straight into an activation layer (``Activation``, ``ReLU``, ...),
   the kernel layer's output is the ``preactivation`` and the activation layer's
   output the ``activation``, as in the built-in models (Glorot & Bengio 2010 read
   s = zW + b and z = f(s)). ``saturated_frac`` needs that split and a known,
   single activation function.

Fans (Glorot & Bengio 2010: n_in inputs feed a unit, n_out units read one input). Keras
computes fans from the kernel shape alone (:func:`initsuite.setup.initializers.compute_fans`),
which is right for Dense and Conv kernels and wrong for three others; the suite draws
with the Keras initializer and rescales the draw by sqrt(Var(right fans) / Var(Keras
fans)), using the registry's own variance formula, so every initializer keeps its
distribution and gets the variance it promises for the right fans:

* ``Conv*DTranspose`` kernel (k..., out, in): Keras (and PyTorch) take fan_in =
  out * rf; here fan_in = in * rf and fan_out = out * rf, the data flow of a stride-1
  transposed convolution.
* ``DepthwiseConv*D`` kernel (k..., in, multiplier): each output channel sees one
  input channel, so fan_in = rf and fan_out = rf * multiplier (Keras: in * rf).
  ``SeparableConv*D``'s depthwise kernel likewise; its pointwise kernel is a 1x1 conv.
* ``Embedding`` table (vocab, dim): a lookup is a one-hot product, each output reads
  one row entry, so fan_in = 1 and fan_out = dim (Keras: vocab). lecun_normal then
  gives N(0, 1), PyTorch's embedding default.

:func:`describe` does steps 3 and 5 only, on a model that exists already, without touching its
weights or its output (``initsuite.keras.watch`` instruments a user's own model with it).

The run folder gets ``reinitialized.json``: every re-initialized variable with its
shape, fans and expected variance, the measured layers in order, and the weights
left as built.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from initsuite.setup import activations, initializers, lsuv  # noqa: F401  (lsuv: data-driven inits)
from initsuite.atomic import atomic_write_text
from initsuite.registry import Registry
from initsuite.setup.models import BuiltModel, ProbePoint
from initsuite.tables import OUTPUT, run_id

KEEP = "keep"  # activation=keep: the builder gets no activation, the model keeps its own
REINIT_FILE = "reinitialized.json"

FanFn = Callable[[Tuple[int, ...]], Tuple[int, int]]


class BuilderError(ValueError):
    """``model.builder`` cannot be used; the message names the builder and what is wrong."""


# --------------------------------------------------------------------------- fans


def keras_fans(shape: Sequence[int]) -> Tuple[int, int]:
    """Dense (in, out) and Conv (k..., in, out): Keras' own fans."""
    return initializers.compute_fans(shape)


def transpose_fans(shape: Sequence[int]) -> Tuple[int, int]:
    """Transposed conv kernel (k..., out, in): fan_in = in * rf, fan_out = out * rf."""
    rf = math.prod(int(s) for s in shape[:-2])
    return int(shape[-1]) * rf, int(shape[-2]) * rf


def depthwise_fans(shape: Sequence[int]) -> Tuple[int, int]:
    """Depthwise kernel (k..., in, multiplier): fan_in = rf, fan_out = rf * multiplier."""
    rf = math.prod(int(s) for s in shape[:-2])
    return rf, rf * int(shape[-1])


def embedding_fans(shape: Sequence[int]) -> Tuple[int, int]:
    """Embedding table (vocab, dim): a one-hot lookup, fan_in = 1, fan_out = dim."""
    return 1, int(shape[-1])


# --------------------------------------------------------------------------- kernel layers


@dataclass(frozen=True)
class KernelRule:
    """Which variables of a layer type the suite initializes, and their fans."""

    kernels: Dict[str, FanFn]  # attribute name -> fans of that kernel's shape
    biases: Tuple[str, ...] = ("bias",)


KERNEL_LAYERS: Registry[KernelRule] = Registry("kernel layer")


def register_kernel_layer(cls: Any, kernels: Optional[Dict[str, FanFn]] = None,
                          biases: Sequence[str] = ("bias",)) -> None:
    """Teach the suite a kernel-bearing layer type (a class or its name; subclasses match too).

    ``kernels`` maps each kernel attribute to a fan function of its shape, e.g.
    ``register_kernel_layer(keras.layers.EinsumDense, {"kernel": keras_fans})``.
    """
    name = cls if isinstance(cls, str) else cls.__name__
    KERNEL_LAYERS.add(name, KernelRule(dict(kernels or {"kernel": keras_fans}), tuple(biases)))


for _name in ("Dense", "Conv1D", "Conv2D", "Conv3D"):
    register_kernel_layer(_name)
for _name in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
    register_kernel_layer(_name, {"kernel": transpose_fans})
for _name in ("DepthwiseConv1D", "DepthwiseConv2D"):
    register_kernel_layer(_name, {"kernel": depthwise_fans})
for _name in ("SeparableConv1D", "SeparableConv2D"):
    register_kernel_layer(_name, {"depthwise_kernel": depthwise_fans, "pointwise_kernel": keras_fans})
register_kernel_layer("Embedding", {"embeddings": embedding_fans}, biases=())


def kernel_rule(layer) -> Optional[KernelRule]:
    """The rule of the nearest registered class in the layer's class hierarchy."""
    for cls in type(layer).__mro__:
        if cls.__name__ in KERNEL_LAYERS:
            return KERNEL_LAYERS.get(cls.__name__)
    return None


# --------------------------------------------------------------------------- builders


class _Registered:
    """Builders registered in this process (``initsuite.setup.custom:registered.<name>``).

    ``initsuite.compare`` puts callables defined in a notebook here, so the config
    holds a string and the run id is stable. They exist only in the process that
    registered them."""

    def __init__(self):
        self._fns: Dict[str, Callable] = {}

    def __getattr__(self, name: str) -> Callable:
        fns = self.__dict__.get("_fns", {})
        if name in fns:
            return fns[name]
        raise AttributeError(
            f"no builder {name!r} is registered in this Python process (registered: "
            f"{', '.join(sorted(fns)) or 'none'}); registered builders live only in the process that "
            f"called initsuite.compare or initsuite.setup.custom.register_builder: use a 'module:function' path "
            f"for sweeps in other processes")


registered = _Registered()


def _source_hash(fn: Callable) -> Optional[str]:
    try:
        blob = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        blob = code.co_code + repr(code.co_consts).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def builder_reference(fn: Callable | str) -> str:
    """The ``model.builder`` string for a builder.

    A string is returned as is. A function importable as ``module:qualname`` (not
    from ``__main__``) gets that path, the same string as on the command line. Anything
    else (a notebook function, a lambda, a closure) is registered under its name and
    referenced as ``initsuite.setup.custom:registered.<name>#<source hash>``: the hash puts
    the builder's code into the run id, so editing the function reruns instead of
    reusing stale results."""
    if isinstance(fn, str):
        return fn
    if not callable(fn):
        raise BuilderError(f"a builder must be a 'module:function' string or a callable, got {fn!r}")
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module and qualname and module != "__main__" and "<" not in qualname:
        obj = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if obj is fn:
            return f"{module}:{qualname}"
    return register_builder(fn)


def register_builder(fn: Callable, name: Optional[str] = None) -> str:
    """Register ``fn`` in this process and return its ``model.builder`` reference."""
    name = name or re.sub(r"\W+", "_", getattr(fn, "__name__", None) or type(fn).__name__).strip("_")
    if not name.isidentifier():
        name = f"builder_{name}"
    registered._fns[name] = fn
    digest = _source_hash(fn)
    return f"{__name__}:registered.{name}" + (f"#{digest}" if digest else "")


def _import(module_name: str):
    """``importlib.import_module``, retrying with the launch directory and the project root
    on ``sys.path`` (the ``initsuite`` command does not put the launch directory there)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise  # the module exists but one of its own imports is missing
        first = exc
    for root in (os.getcwd(), str(Path(__file__).resolve().parents[2])):
        if root in sys.path:
            continue
        sys.path.append(root)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != first.name:
                raise
    raise first


def load_builder(ref: str) -> Callable:
    """The function named by ``'package.module:function'`` (``function`` may be dotted;
    text after ``#`` is a version tag for the run id and ignored here)."""
    if not isinstance(ref, str) or not ref.strip():
        raise BuilderError("model=custom needs model.builder=package.module:function, "
                           "e.g. model.builder=experiments.custom_resnet:build")
    target = ref.split("#", 1)[0].strip()
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise BuilderError(f"model.builder={ref!r} must look like 'package.module:function' "
                           f"(e.g. experiments.custom_resnet:build)")
    try:
        module = _import(module_name)
    except Exception as exc:  # ImportError, SyntaxError, or anything the module raises on import
        where = f"the installed packages, {os.getcwd()} and {Path(__file__).resolve().parents[2]}"
        raise BuilderError(f"model.builder={ref!r}: cannot import module {module_name!r} "
                           f"({type(exc).__name__}: {exc}); searched {where}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise BuilderError(f"model.builder={ref!r}: module {module_name!r} "
                               f"({getattr(module, '__file__', 'built-in')}) has no function {attr!r}: "
                               f"{exc}.{hint}") from None
    if not callable(obj):
        raise BuilderError(f"model.builder={ref!r}: {attr!r} in module {module_name!r} is a "
                           f"{type(obj).__name__}, not a function")
    return obj


def _builder_kwargs(cfg) -> Dict[str, Any]:
    kwargs = cfg.model.get("kwargs") or {}
    if isinstance(kwargs, DictConfig):
        kwargs = OmegaConf.to_container(kwargs, resolve=True)
    kwargs = dict(kwargs)
    clash = {"input_shape", "num_classes", "activation"} & set(kwargs)
    if clash:
        raise BuilderError(f"model.kwargs may not set {', '.join(sorted(clash))}: the suite passes "
                           f"{'them' if len(clash) > 1 else 'it'} (use dataset=... / activation=...)")
    return kwargs


def _activation_arg(cfg) -> Optional[Callable]:
    """The function passed as ``activation``: the registry's elementwise f, named after it."""
    spec, alpha = activations.from_config(cfg.activation)
    inner = spec.tensor_fn(alpha)

    def fn(x):
        return inner(x)

    fn.__name__ = fn.__qualname__ = spec.name
    return fn


def validate(cfg) -> Callable:
    """Check ``model.builder`` before any run folder is written: the module imports, the
    function exists and accepts ``(input_shape, num_classes, [activation], **model.kwargs)``.
    Returns the builder. (Whether it returns a Keras model is checked by :func:`build`.)"""
    ref = cfg.model.get("builder")
    fn = load_builder(ref)
    kwargs = _builder_kwargs(cfg)
    keep = cfg.activation.name == KEEP
    if not keep:
        activations.get(cfg.activation.name)  # unknown names list the valid ones
        kwargs["activation"] = None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return fn
    try:
        sig.bind((1, 1, 1), 2, **kwargs)
    except TypeError as exc:
        hint = ""
        if not keep and "activation" not in sig.parameters and not any(
                p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            hint = (f" It takes no 'activation' argument: run with activation=keep to keep the "
                    f"model's own activations, or add the parameter to pass activation={cfg.activation.name}.")
        raise BuilderError(f"model.builder={ref!r}: {getattr(fn, '__qualname__', fn)}{sig} cannot be called "
                           f"as build(input_shape, num_classes{', activation=...' if not keep else ''}"
                           f"{''.join(f', {k}=...' for k in kwargs if k != 'activation')}): {exc}.{hint}") from None
    return fn


# --------------------------------------------------------------------------- walking a model


def _children(layer) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def layer_paths(model) -> List[Tuple[str, Any]]:
    """(path, layer) for every layer inside ``model``, depth first; a path joins the layer
    names from the top model down (``block_1/conv_a``). A layer reachable twice keeps its
    first path; duplicate paths get a ``~2`` suffix."""
    out: List[Tuple[str, Any]] = []
    seen, used = set(), set()

    def visit(layer, prefix):
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            k = 2
            while path in used:
                path, k = f"{prefix}{child.name}~{k}", k + 1
            used.add(path)
            out.append((path, child))
            visit(child, path + "/")

    visit(model, "")
    return out


@dataclass
class _Call:
    order: int
    inputs: Tuple[int, ...]  # ids of the input tensors
    output: int


def _tensor_ids(obj) -> List[int]:
    import keras

    return [id(t) for t in keras.tree.flatten(obj) if hasattr(t, "shape")]


def trace_calls(model, input_shape: Sequence[int], sample=None) -> Tuple[Dict[int, _Call], Any]:
    """One eager forward pass (training=False) on a dummy batch of 2 (or on ``sample``, a
    batch of real inputs), recording for each layer its first call: rank in call order,
    input and output tensor ids."""
    import keras

    layers = [layer for _, layer in layer_paths(model)]
    calls: Dict[int, _Call] = {}
    alive: list = []  # keep recorded tensors alive so their ids stay unique

    def wrap(layer):
        original = layer.call

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            if id(layer) not in calls:
                calls[id(layer)] = _Call(len(calls), tuple(_tensor_ids((args, kwargs))), id(out))
                alive.append((args, kwargs, out))
            return out

        layer.call = call  # instance attribute, as probes.Taps does

    wrapped = [layer for layer in layers if "call" not in layer.__dict__]
    for layer in wrapped:
        wrap(layer)
    try:
        x = keras.random.normal((2, *[int(d) for d in input_shape]), seed=0) if sample is None else sample
        out = model(x, training=False)
    finally:
        for layer in wrapped:
            del layer.call
    alive.append(out)
    return calls, out


# --------------------------------------------------------------------------- activations of a model

_ACTIVATION_CLASSES = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax")
# Keras built-in activation functions whose registry entry is the same function.
_KERAS_TO_REGISTRY = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softsign": "softsign",
                      "selu": "selu", "elu": "elu", "silu": "swish", "swish": "swish", "linear": "linear"}


def _is_activation_layer(layer) -> bool:
    return any(cls.__name__ in _ACTIVATION_CLASSES for cls in type(layer).__mro__)


def _activation_name(layer, passed: Optional[Callable], cfg_name: str) -> Optional[str]:
    """The registry name of an activation layer's function, or None if unknown."""
    names = {cls.__name__ for cls in type(layer).__mro__}
    if "Activation" in names:
        fn = getattr(layer, "activation", None)
        if passed is not None and fn is passed:
            return cfg_name
        tag = getattr(fn, "_initsuite_activation", None)  # one of the registry's own functions
        if tag is not None:
            return tag[0]
        return _KERAS_TO_REGISTRY.get(getattr(fn, "__name__", ""))
    if "ReLU" in names and not getattr(layer, "max_value", None) and not getattr(layer, "negative_slope", 0) \
            and not getattr(layer, "threshold", 0):
        return "relu"
    return None


def _keeps_finite(layer, name: Optional[str], passed: Optional[Callable], alpha: Optional[float]) -> bool:
    """Whether the activation layer's f is a registry activation that maps every finite s to a
    finite z, with its alpha: the suite's, a tagged registry function's, else Keras' default
    (a Keras function named in ``_KERAS_TO_REGISTRY`` or a plain ReLU layer takes no alpha)."""
    if name is None:
        return False
    fn = getattr(layer, "activation", None)
    tag = getattr(fn, "_initsuite_activation", None)
    a = alpha if passed is not None and fn is passed else tag[1] if tag is not None else None
    return activations.get(name).finite_preserving(a)


def _strip_output_softmax(model, calls, out) -> Optional[str]:
    """The suite's loss takes logits: a softmax on the model's output is removed (replaced
    by the identity). Returns the layer it was taken from."""
    import keras

    out_ids = set(_tensor_ids(out))
    for path, layer in layer_paths(model):
        c = calls.get(id(layer))
        if c is None or c.output not in out_ids:
            continue
        fn = getattr(layer, "activation", None)
        if fn is keras.activations.softmax or getattr(fn, "__name__", "") in ("softmax", "log_softmax"):
            layer.activation = keras.activations.linear
            return path
        if any(cls.__name__ == "Softmax" for cls in type(layer).__mro__):
            layer.call = lambda inputs, *args, **kwargs: inputs
            return path
    return None


# --------------------------------------------------------------------------- re-initialization


def reinit_variable(var, fans: Tuple[int, int], init_cfg, seed: int, key: str) -> Dict[str, Any]:
    """Draw ``var`` anew with the configured initializer (its own seed from ``key``), rescaled
    so that its variance is the initializer's formula at ``fans``. Returns what was done."""
    spec = initializers.get(init_cfg.name)
    shape = tuple(int(s) for s in var.shape)
    values = np.asarray(initializers.kernel_initializer(init_cfg, seed, key)(shape, dtype="float32"),
                        dtype=np.float64)
    kfans = initializers.compute_fans(shape)
    expected = float(spec.variance(fans[0], fans[1], init_cfg))
    if tuple(fans) != tuple(kfans):
        drawn = float(spec.variance(kfans[0], kfans[1], init_cfg))
        if drawn > 0 and expected > 0 and math.isfinite(expected / drawn):
            values = values * math.sqrt(expected / drawn)
    var.assign(values.astype(np.dtype(getattr(var, "dtype", "float32"))))
    return dict(shape=list(shape), fan_in=int(fans[0]), fan_out=int(fans[1]), keras_fans=list(kfans),
                expected_var=expected, expected_mean=float(spec.mean(init_cfg)))


def reinitialize(model, init_cfg, seed: int, paths: Optional[List[Tuple[str, Any]]] = None) -> List[Dict[str, Any]]:
    """Re-initialize every kernel-bearing layer of a built model; one record per variable."""
    records = []
    for path, layer in paths or layer_paths(model):
        rule = kernel_rule(layer)
        if rule is None:
            continue
        for attr, fan_fn in rule.kernels.items():
            var = getattr(layer, attr, None)
            if var is None:
                continue
            shape = tuple(int(s) for s in var.shape)
            rec = reinit_variable(var, fan_fn(shape), init_cfg, seed, f"{path}/{attr}")
            records.append(dict(layer=path, layer_class=type(layer).__name__, variable=attr, **rec))
        for attr in rule.biases:
            var = getattr(layer, attr, None)
            if var is None:
                continue
            var.assign(np.asarray(initializers.bias_initializer(init_cfg)(tuple(var.shape), dtype="float32")))
            records.append(dict(layer=path, layer_class=type(layer).__name__, variable=attr,
                                shape=[int(s) for s in var.shape], value=float(getattr(init_cfg, "bias", 0.0) or 0.0)))
    return records


# --------------------------------------------------------------------------- build


def build(cfg, input_shape: Sequence[int], num_classes: int) -> BuiltModel:
    """Call the configured builder, re-initialize its kernels, describe where to measure."""
    import keras

    fn = validate(cfg)
    ref = cfg.model.builder
    kwargs = _builder_kwargs(cfg)
    passed = None
    if cfg.activation.name != KEEP:
        passed = kwargs["activation"] = _activation_arg(cfg)
    try:
        model = fn(tuple(int(d) for d in input_shape), int(num_classes), **kwargs)
    except Exception as exc:
        exc.add_note(f"(raised by the model builder model.builder={ref})")
        raise
    if not isinstance(model, keras.Model):
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        raise BuilderError(
            f"model.builder={ref!r}: {getattr(fn, '__qualname__', fn)}() returned {kind} ({str(model)[:80]!r}), "
            f"not a keras.Model: return keras.Model(inputs, outputs), a keras.Sequential or a keras.Model "
            f"subclass (Keras {keras.__version__}; tf_keras / Keras 2 models are not supported)")

    calls, out = trace_calls(model, input_shape)
    out_shape = tuple(getattr(out, "shape", ()))
    if len(out_shape) != 2 or int(out_shape[-1]) != int(num_classes):
        raise BuilderError(f"model.builder={ref!r}: the model's output has shape {out_shape}; the suite needs "
                           f"logits of shape (batch, {num_classes}) for this dataset")
    softmax_from = _strip_output_softmax(model, calls, out)

    paths = layer_paths(model)
    records = reinitialize(model, cfg.init, int(cfg.seed), paths)
    reinit_layers = list(dict.fromkeys(r["layer"] for r in records))

    points, (fn_sat, threshold, intervals) = measure_points(
        calls, paths, passed=passed, activation=cfg.activation.name, alpha=cfg.activation.get("alpha"),
        skip=softmax_from)
    if not points:
        raise BuilderError(f"model.builder={ref!r}: the model has no kernel layer the suite knows "
                           f"({', '.join(KERNEL_LAYERS.names())}); register yours with "
                           f"initsuite.setup.custom.register_kernel_layer")

    measured = {p.name for p in points}
    untouched = [dict(layer=path, variables=[v.path for v in layer.weights])
                 for path, layer in paths if kernel_rule(layer) is None and layer.weights
                 and not _children(layer)]
    _write_record(cfg, dict(
        builder=ref, model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        activation=cfg.activation.name, output_softmax_removed=softmax_from,
        measured=[dict(layer=p.name, layer_index=i, layer_class=type(p.kernel_layer).__name__,
                       preactivation=p.pre_layer is not None) for i, p in enumerate(points)],
        reinitialized=records,
        not_called=[layer for layer in reinit_layers if layer not in measured],
        left_as_built=untouched,
    ))
    return BuiltModel(model=model, points=points, activation_fn=fn_sat, saturation_threshold=threshold,
                      saturated_intervals=intervals, reinitialized=reinit_layers)


# --------------------------------------------------------------------------- where to measure


def measure_points(calls: Dict[int, _Call], paths: List[Tuple[str, Any]], passed: Optional[Callable] = None,
                   activation: Optional[str] = None, alpha: Optional[float] = None, skip: Optional[str] = None):
    """The measured layers of a traced model (step 5 of the module docstring) and its saturation
    rule: ``(points, (activation_fn, saturation_threshold, saturated_intervals))``.

    Every kernel layer the forward pass called, in call order; the last one is the output. A
    kernel layer whose output goes into exactly one activation layer is split into s (its output)
    and z (the activation layer's output). ``passed``/``activation``/``alpha``: the function the
    suite handed the builder and its registry name, so activation layers holding it are known;
    ``skip``: an activation layer not to count (a removed output softmax). The saturation rule is
    set when one known activation sits between the layers, else all three are None."""
    by_input: Dict[int, list] = {}  # tensor id -> the activation layers that read it
    for path, layer in paths:
        c = calls.get(id(layer))
        if c is not None and c.inputs and _is_activation_layer(layer) and path != skip:
            by_input.setdefault(c.inputs[0], []).append(layer)
    kernel_layers = sorted(((calls[id(layer)].order, path, layer) for path, layer in paths
                            if kernel_rule(layer) is not None and id(layer) in calls), key=lambda t: t[0])
    points, act_names, tags = [], set(), set()
    for k, (_, path, layer) in enumerate(kernel_layers):
        followers = by_input.get(calls[id(layer)].output, [])
        if k == len(kernel_layers) - 1:  # the last kernel layer is the output: its result is the logits
            points.append(ProbePoint(path, layer, layer, None, role=OUTPUT))
        elif len(followers) == 1:
            act = followers[0]
            name = _activation_name(act, passed, activation)
            points.append(ProbePoint(path, layer, layer, act, act_keeps_finite=_keeps_finite(act, name, passed, alpha)))
            act_names.add(name)
            tags.add(getattr(getattr(act, "activation", None), "_initsuite_activation", None))
        else:
            points.append(ProbePoint(path, layer, None, layer))
    fn_sat, threshold, intervals = None, None, None
    if len(act_names) == 1 and None not in act_names:  # one known activation between the layers
        spec = activations.get(act_names.pop())
        a = alpha if passed is not None and spec.name == activation else None
        if a is None and len(tags) == 1 and None not in tags:  # the registry's function, with its alpha
            a = next(iter(tags))[1]
        fn_sat, threshold = spec.tensor_fn(a), spec.saturation_threshold(a)
        intervals = spec.saturated_intervals(a)
    return points, (fn_sat, threshold, intervals)


def describe(model, sample=None, input_shape: Optional[Sequence[int]] = None) -> BuiltModel:
    """The :class:`~initsuite.setup.models.BuiltModel` of an existing Keras model, exactly as
    :func:`build` would measure it, **without touching it**: no re-initialization, no output
    softmax removed, nothing written (``initsuite.keras.watch`` instruments a user's model
    this way). The trace runs on ``sample`` (a batch of real inputs; preferred) or on a
    dummy batch of ``input_shape``. ``reinitialized`` is empty."""
    import keras

    if not isinstance(model, keras.Model):
        raise BuilderError(f"expected a keras.Model (Keras {keras.__version__}), got "
                           f"{type(model).__module__}.{type(model).__qualname__}")
    if sample is None and input_shape is None:
        raise BuilderError("describe(model) needs a sample batch or the input shape to trace the model")
    calls, _ = trace_calls(model, input_shape or (), sample=sample)
    paths = layer_paths(model)
    points, (fn_sat, threshold, intervals) = measure_points(calls, paths)
    if not points:
        raise BuilderError(f"the model {model.name!r} has no kernel layer the suite knows "
                           f"({', '.join(KERNEL_LAYERS.names())}); register yours with "
                           f"initsuite.setup.custom.register_kernel_layer")
    return BuiltModel(model=model, points=points, activation_fn=fn_sat, saturation_threshold=threshold,
                      saturated_intervals=intervals, reinitialized=[])


def _write_record(cfg, record: Dict[str, Any]) -> None:
    """``reinitialized.json`` in the run folder, when building inside a run."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        folder = Path(resolved["paths"]["runs"]).expanduser().resolve() / run_id(resolved)
    except Exception:  # a config without paths (a bare build in a test or notebook)
        return
    if folder.is_dir():
        atomic_write_text(folder / REINIT_FILE, json.dumps(record, indent=1, default=str) + "\n")
