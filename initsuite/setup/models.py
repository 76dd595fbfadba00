"""MLP and CNN builders, and the description of where each is measured.

Kernel layers and their activations are separate layers (``dense_00`` then
``act_00``), so the probes can read both the pre-activation s = zW + b and the
activation z = f(s), and take the back-propagated gradient dC/ds at the kernel
layer's output, as Glorot & Bengio (2010) do. Layer names sort in depth order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence

from initsuite.registry import Registry
from initsuite.setup import activations, initializers
from initsuite.tables import HIDDEN, OUTPUT


@dataclass
class ProbePoint:
    """One measured layer.

    ``kernel_layer`` owns the weights; ``pre_layer``'s output is the pre-activation s
    (and where the back-propagated gradient dC/ds is read); ``act_layer``'s output is
    the activation z. For a layer with a fused activation (custom models) there is no
    ``pre_layer``: its output is the activation and the gradient is read there.
    ``role``: :data:`initsuite.tables.HIDDEN`, or :data:`~initsuite.tables.OUTPUT` for the
    last kernel layer (the logits): no ``act_layer``, so no ``activation`` rows, its own
    histogram axis, and never a hidden layer in figures, verdicts or theory.
    """

    name: str
    kernel_layer: Any
    pre_layer: Any = None
    act_layer: Any = None
    role: str = HIDDEN
    # z = f(s) with f finite for every finite s (ActivationSpec.finite_preserving): the forensics
    # check s alone, since a non-finite z then always follows a non-finite s, which comes first
    act_keeps_finite: bool = False

    @property
    def grad_layer(self):
        return self.pre_layer if self.pre_layer is not None else self.act_layer


@dataclass
class BuiltModel:
    model: Any  # keras.Model
    points: List[ProbePoint]
    activation_fn: Optional[Callable] = None  # the elementwise f used between layers (saturation rule)
    saturation_threshold: Optional[float] = None
    saturated_intervals: Optional[list] = None  # the same rule as intervals of s (the in-step statistics)
    reinitialized: List[str] = field(default_factory=list)  # kernel layers the suite initialized


MODELS: Registry[Callable[..., BuiltModel]] = Registry("model")


def _layer_kwargs(cfg, index_key: str):
    return dict(
        kernel_initializer=initializers.kernel_initializer(cfg.init, cfg.seed, index_key),
        bias_initializer=initializers.bias_initializer(cfg.init),
    )


def _activation_layer(cfg, name: str):
    import keras

    spec, alpha = activations.from_config(cfg.activation)
    return keras.layers.Activation(spec.tensor_fn(alpha), name=name)


@MODELS.register("mlp")
def build_mlp(cfg, input_shape: Sequence[int], num_classes: int) -> BuiltModel:
    """Input -> flatten -> depth x [Dense(width) -> f] -> Dense(num_classes) logits.

    The paper's nets: 1 to 5 hidden layers of 1000 units, softmax output.
    """
    import keras

    depth, width = int(cfg.model.depth), int(cfg.model.width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    h = keras.layers.Flatten(name="flatten")(inputs)
    points = []
    for i in range(depth):
        dense = keras.layers.Dense(width, name=f"dense_{i:02d}", **_layer_kwargs(cfg, f"dense_{i:02d}"))
        act = _activation_layer(cfg, f"act_{i:02d}")
        h = act(dense(h))
        points.append(ProbePoint(dense.name, dense, dense, act))
    logits = keras.layers.Dense(num_classes, name="logits", **_layer_kwargs(cfg, "logits"))
    out = logits(h)
    points.append(ProbePoint("logits", logits, logits, None, role=OUTPUT))
    model = keras.Model(inputs, out, name=f"mlp_{depth}x{width}")
    return _finish(cfg, model, points)


@MODELS.register("cnn")
def build_cnn(cfg, input_shape: Sequence[int], num_classes: int) -> BuiltModel:
    """depth x [Conv2D(width, 3x3, same) -> f], a 2x2 max-pool after every ``pool_every``-th
    conv while the feature map is larger than 1 px, then flatten -> [Dense(head_width) -> f]
    -> Dense(num_classes) logits. Width is kept constant so depth is the only axis that moves.
    """
    import keras

    depth, width = int(cfg.model.depth), int(cfg.model.width)
    pool_every = max(int(cfg.model.pool_every), 0)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    h = inputs
    size = min(int(input_shape[0]), int(input_shape[1]))
    points = []
    for i in range(depth):
        conv = keras.layers.Conv2D(
            width, 3, padding="same", name=f"conv_{i:02d}", **_layer_kwargs(cfg, f"conv_{i:02d}")
        )
        act = _activation_layer(cfg, f"act_{i:02d}")
        h = act(conv(h))
        points.append(ProbePoint(conv.name, conv, conv, act))
        if pool_every and (i + 1) % pool_every == 0 and size >= 2:
            h = keras.layers.MaxPooling2D(2, name=f"pool_{i:02d}")(h)
            size //= 2
    h = keras.layers.Flatten(name="flatten")(h)
    if int(cfg.model.head_width) > 0:
        dense = keras.layers.Dense(int(cfg.model.head_width), name="dense_00", **_layer_kwargs(cfg, "dense_00"))
        act = _activation_layer(cfg, "act_head")
        h = act(dense(h))
        points.append(ProbePoint(dense.name, dense, dense, act))
    logits = keras.layers.Dense(num_classes, name="logits", **_layer_kwargs(cfg, "logits"))
    out = logits(h)
    points.append(ProbePoint("logits", logits, logits, None, role=OUTPUT))
    model = keras.Model(inputs, out, name=f"cnn_{depth}x{width}")
    return _finish(cfg, model, points)


# --------------------------------------------------------------------------- the nets of the Caffe -> TF thread
# Fixed architectures: model.depth and model.width are not used (their presets give the real ones: 3 hidden
# kernel layers, the fc layer's units).


def _fixed_conv(cfg, i: int, filters: int, padding: str, act: bool):
    """Conv2D(filters, 5x5, stride 1) ``conv_{i}`` -> ``act_{i}``: the run's activation, or the identity
    where the original net has none (Caffe's LeNet), so every hidden layer has activation rows."""
    import keras

    conv = keras.layers.Conv2D(filters, 5, padding=padding, name=f"conv_{i:02d}", **_layer_kwargs(cfg, f"conv_{i:02d}"))
    layer = (_activation_layer(cfg, f"act_{i:02d}") if act
             else keras.layers.Activation("linear", name=f"act_{i:02d}"))
    return conv, layer


def _check_input(name: str, input_shape: Sequence[int], minimum: int) -> None:
    h, w = int(input_shape[0]), int(input_shape[1])
    if min(h, w) < minimum:
        raise ValueError(f"model {name} needs images of at least {minimum}x{minimum} (it was made for MNIST's "
                         f"28x28x1), got {h}x{w}; for synthetic data set dataset.image_shape=[28,28,1]")


@MODELS.register("tf_deep_mnist")
def build_tf_deep_mnist(cfg, input_shape: Sequence[int], num_classes: int) -> BuiltModel:
    """The classic TensorFlow "Deep MNIST for Experts" CNN (TF 1.x tutorial, mnist_deep.py):
    conv 5x5x32 SAME -> f -> max-pool 2x2 -> conv 5x5x64 SAME -> f -> max-pool 2x2 -> flatten ->
    fc 1024 -> f -> dropout(model.dropout; the tutorial's keep_prob 0.5 is dropout 0.5) -> fc 10 logits.
    f is the run's activation (the tutorial's is ReLU). On 28x28x1: 3,274,634 parameters. The tutorial's
    own init is truncated_normal(stddev=0.1) with biases 0.1: ``init=truncated_normal_tutorial``."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    h, points = inputs, []
    for i, filters in enumerate((32, 64)):
        conv, act = _fixed_conv(cfg, i, filters, "same", act=True)
        h = keras.layers.MaxPooling2D(2, padding="same", name=f"pool_{i:02d}")(act(conv(h)))
        points.append(ProbePoint(conv.name, conv, conv, act))
    h = keras.layers.Flatten(name="flatten")(h)
    fc = keras.layers.Dense(1024, name="dense_00", **_layer_kwargs(cfg, "dense_00"))
    act = _activation_layer(cfg, "act_02")
    h = act(fc(h))
    points.append(ProbePoint(fc.name, fc, fc, act))
    if float(cfg.model.dropout) > 0:
        h = keras.layers.Dropout(float(cfg.model.dropout), seed=initializers.layer_seed(cfg.seed, "dropout"),
                                 name="dropout")(h)
    logits = keras.layers.Dense(num_classes, name="logits", **_layer_kwargs(cfg, "logits"))
    points.append(ProbePoint("logits", logits, logits, None))
    return _finish(cfg, keras.Model(inputs, logits(h), name="tf_deep_mnist"), points)


@MODELS.register("caffe_lenet")
def build_caffe_lenet(cfg, input_shape: Sequence[int], num_classes: int) -> BuiltModel:
    """Caffe's LeNet of its MNIST example (examples/mnist/lenet_train_test.prototxt): conv1 5x5x20 VALID
    -> max-pool 2x2 -> conv2 5x5x50 VALID -> max-pool 2x2 -> ip1 500 -> ReLU -> ip2 10 logits. The convs
    have no nonlinearity (identity ``act_00``/``act_01`` layers keep them measurable); f after ip1 is the
    run's activation (Caffe's: ReLU). On 28x28x1: 431,080 parameters. Caffe's own init is
    ``weight_filler { type: "xavier" }`` (``init=caffe_xavier``), biases 0."""
    import keras

    _check_input("caffe_lenet", input_shape, 16)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    h, points = inputs, []
    for i, filters in enumerate((20, 50)):
        conv, act = _fixed_conv(cfg, i, filters, "valid", act=False)
        h = keras.layers.MaxPooling2D(2, name=f"pool_{i:02d}")(act(conv(h)))
        points.append(ProbePoint(conv.name, conv, conv, act))
    h = keras.layers.Flatten(name="flatten")(h)
    ip1 = keras.layers.Dense(500, name="dense_00", **_layer_kwargs(cfg, "dense_00"))
    act = _activation_layer(cfg, "act_02")
    h = act(ip1(h))
    points.append(ProbePoint(ip1.name, ip1, ip1, act))
    logits = keras.layers.Dense(num_classes, name="logits", **_layer_kwargs(cfg, "logits"))
    points.append(ProbePoint("logits", logits, logits, None))
    return _finish(cfg, keras.Model(inputs, logits(h), name="caffe_lenet"), points)


def _finish(cfg, model, points) -> BuiltModel:
    spec, alpha = activations.from_config(cfg.activation)
    for p in points:  # every activation layer of a suite model applies the configured f to s
        p.act_keeps_finite = p.act_layer is not None and p.pre_layer is not None and spec.finite_preserving(alpha)
    return BuiltModel(
        model=model,
        points=points,
        activation_fn=spec.tensor_fn(alpha),
        saturation_threshold=spec.saturation_threshold(alpha),
        saturated_intervals=spec.saturated_intervals(alpha),
        reinitialized=[p.name for p in points],
    )


def build(cfg, input_shape: Sequence[int], num_classes: int) -> BuiltModel:
    """Build ``cfg.model.name`` for the data's input shape; unknown names list the valid ones."""
    return MODELS.get(cfg.model.name)(cfg, input_shape, num_classes)
