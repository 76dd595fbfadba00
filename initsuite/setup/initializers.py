"""The initializer registry: name -> Keras initializer, each with its variance formula.

Every entry knows two things:

* ``make(cfg, seed)`` builds a Keras initializer for one layer. Each layer gets
  its own integer seed (see :func:`layer_seed`): a Keras initializer with a
  fixed seed returns the *same* values on every call, so one shared object would
  give same-shaped layers identical weights.
* ``variance(fan_in, fan_out, cfg)`` is the closed-form variance of the weights
  it draws. Tests check it against the empirical variance; the theory module
  uses it as the *realised* sigma_w^2 = fan_in * Var[W].

Fans follow Keras: a dense kernel (n_in, n_out) has fan_in = n_in and
fan_out = n_out; a conv kernel with receptive field rf = prod(shape[:-2]) has
fan_in = shape[-2] * rf and fan_out = shape[-1] * rf.

``cfg.gain`` multiplies the standard deviation of every random initializer
(variance x gain^2); it is 1 unless a config says otherwise.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from initsuite.registry import Registry

# Var of N(0, 1) truncated to [-2, 2]: 1 - 4 phi(2) / (Phi(2) - Phi(-2)) ~= 0.7737.
# Keras' TruncatedNormal redraws beyond 2 stddev and does NOT correct for it.
_PHI2 = math.exp(-2.0) / math.sqrt(2.0 * math.pi)
TRUNCATED_VARIANCE_FACTOR = 1.0 - 4.0 * _PHI2 / math.erf(2.0 / math.sqrt(2.0))


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape, exactly as Keras computes them."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = math.prod(shape[:-2])
    return shape[-2] * rf, shape[-1] * rf


def layer_seed(seed: int, layer_key: str | int) -> int:
    """A distinct, reproducible 31-bit seed per (run seed, layer)."""
    digest = hashlib.sha256(f"{seed}/{layer_key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class InitSpec:
    name: str
    make: Callable[[Any, int], Any]  # (InitConfig, seed) -> keras Initializer
    variance: Callable[[int, int, Any], float]  # (fan_in, fan_out, InitConfig) -> Var[W]
    mean: Callable[[Any], float]
    doc: str
    random: bool = True  # False for constant initializers (failure tests)
    # Data-driven inits (e.g. LSUV): called once after the model is built, before step 0,
    # as post_build(built_model, x_batch, cfg) -> dict of facts to record in status.json.
    post_build: Optional[Callable[..., dict]] = None
    # Where the variance depends on more of the shape than its fans (orthogonal: the matrix Keras
    # orthogonalises is (prod(shape[:-1]), shape[-1])), shape_variance(shape, cfg) gives it.
    shape_variance: Optional[Callable[[Sequence[int], Any], float]] = None

    def variance_for_shape(self, shape: Sequence[int], cfg: Any) -> float:
        """Var[W] of a kernel of this shape."""
        if self.shape_variance is not None:
            return self.shape_variance(shape, cfg)
        fan_in, fan_out = compute_fans(shape)
        return self.variance(fan_in, fan_out, cfg)


INITIALIZERS: Registry[InitSpec] = Registry("initializer")


def _gain(cfg: Any) -> float:
    return float(getattr(cfg, "gain", 1.0) if cfg is not None else 1.0)


def _param(cfg: Any, key: str, default: float) -> float:
    value = getattr(cfg, key, None) if cfg is not None else None
    return float(default if value is None else value)


def _variance_scaling(name: str, scale: float, mode: str, distribution: str, doc: str) -> InitSpec:
    """Keras VarianceScaling: Var[W] = scale / n with n = fan_in, fan_out or (fan_in+fan_out)/2.

    Keras divides the truncated normal's stddev by 0.8796, so every distribution has
    exactly that variance.
    """
    def make(cfg, seed):
        import keras

        return keras.initializers.VarianceScaling(
            scale=scale * _gain(cfg) ** 2, mode=mode, distribution=distribution, seed=seed
        )

    def variance(fan_in, fan_out, cfg):
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        return scale * _gain(cfg) ** 2 / n

    return InitSpec(name, make, variance, lambda cfg: 0.0, doc)


def _add(spec: InitSpec) -> None:
    INITIALIZERS.add(spec.name, spec)


_add(_variance_scaling(
    "glorot_uniform", 1.0, "fan_avg", "uniform",
    "Glorot & Bengio 2010 'normalized' init: W ~ U[-sqrt(6/(n_in+n_out)), +sqrt(6/(n_in+n_out))], "
    "Var[W] = 2/(n_in+n_out). Keras' Dense default.",
))
_add(_variance_scaling(
    "glorot_normal", 1.0, "fan_avg", "truncated_normal",
    "Glorot & Bengio 2010, normal form: truncated normal (2 sd) rescaled so Var[W] = 2/(n_in+n_out).",
))
_add(_variance_scaling(
    "he_normal", 2.0, "fan_in", "truncated_normal",
    "He et al. 2015 (arXiv 1502.01852): Var[W] = 2/n_in so that ReLU keeps the forward variance; "
    "truncated normal rescaled to that variance (Keras).",
))
_add(_variance_scaling(
    "he_uniform", 2.0, "fan_in", "uniform",
    "He et al. 2015: W ~ U[-sqrt(6/n_in), +sqrt(6/n_in)], Var[W] = 2/n_in.",
))
_add(_variance_scaling(
    "lecun_normal", 1.0, "fan_in", "truncated_normal",
    "LeCun et al. 1998 'Efficient BackProp': Var[W] = 1/n_in (truncated normal rescaled, Keras). "
    "The init SELU's self-normalisation assumes.",
))
_add(_variance_scaling(
    "lecun_uniform", 1.0, "fan_in", "uniform",
    "LeCun et al. 1998: W ~ U[-sqrt(3/n_in), +sqrt(3/n_in)], Var[W] = 1/n_in.",
))
_add(_variance_scaling(
    "standard", 1.0 / 3.0, "fan_in", "uniform",
    "Glorot & Bengio 2010 'standard' init (their eq. 1): W ~ U[-1/sqrt(n), 1/sqrt(n)] with n = n_in, "
    "so n Var[W] = 1/3: activations and back-propagated gradients shrink layer by layer.",
))
_add(_variance_scaling(
    "glorot_uniform_sigmoid4", 16.0, "fan_avg", "uniform",
    "4 x glorot_uniform for sigmoid: W ~ U[-4 sqrt(6/(n_in+n_out)), +4 sqrt(6/(n_in+n_out))], "
    "Var[W] = 32/(n_in+n_out). From the Theano deep-learning tutorial (code by Glorot, 2010), "
    "since sigmoid'(0) = 1/4 where tanh'(0) = 1. Not in the paper. The hand-written "
    "`xavier_init(fan_in, fan_out, constant=4)` of the Caffe -> TensorFlow thread is this init "
    "(preset conf/init/xavier_sigmoid4.yaml).",
))


def _orthogonal_make(cfg, seed):
    import keras

    return keras.initializers.Orthogonal(gain=_gain(cfg), seed=seed)


def _orthogonal_variance(fan_in, fan_out, cfg):
    """Exact for dense kernels (rows = fan_in, cols = fan_out); convs need the shape."""
    return _gain(cfg) ** 2 / max(fan_in, fan_out)


def _orthogonal_shape_variance(shape, cfg):
    # Keras orthogonalises the (prod(shape[:-1]), shape[-1]) matrix, i.e. (fan_in, fan_out / rf) for
    # a conv; its unit-norm rows or columns give each entry variance gain^2 / max(rows, cols).
    shape = [int(d) for d in shape]
    rows, cols = (math.prod(shape[:-1]), shape[-1]) if len(shape) >= 2 else (shape[0], shape[0])
    return _gain(cfg) ** 2 / max(rows, cols)


_add(InitSpec(
    "orthogonal", _orthogonal_make, _orthogonal_variance, lambda cfg: 0.0,
    "Saxe et al. 2013 (arXiv 1312.6120): a (semi-)orthogonal matrix from the QR decomposition of a "
    "Gaussian one, times gain; every singular value is gain, Var[W] = gain^2 / max(rows, cols).",
    shape_variance=_orthogonal_shape_variance,
))


def _random_normal_make(cfg, seed):
    import keras

    return keras.initializers.RandomNormal(
        mean=_param(cfg, "mean", 0.0), stddev=_param(cfg, "stddev", 0.05) * _gain(cfg), seed=seed
    )


_add(InitSpec(
    "random_normal", _random_normal_make,
    lambda fi, fo, cfg: (_param(cfg, "stddev", 0.05) * _gain(cfg)) ** 2,
    lambda cfg: _param(cfg, "mean", 0.0),
    "W ~ N(mean, stddev^2), the same for every layer whatever its fan; Keras default stddev 0.05.",
))


def _truncated_normal_make(cfg, seed):
    import keras

    return keras.initializers.TruncatedNormal(
        mean=_param(cfg, "mean", 0.0), stddev=_param(cfg, "stddev", 0.05) * _gain(cfg), seed=seed
    )


_add(InitSpec(
    "truncated_normal", _truncated_normal_make,
    lambda fi, fo, cfg: (_param(cfg, "stddev", 0.05) * _gain(cfg)) ** 2 * TRUNCATED_VARIANCE_FACTOR,
    lambda cfg: _param(cfg, "mean", 0.0),
    "W ~ N(mean, stddev^2) with draws beyond 2 stddev redrawn, no variance correction: "
    "Var[W] = 0.7737 stddev^2 whatever the fan (Keras TruncatedNormal). Keras' default stddev is "
    "0.05, the classic TF 'Deep MNIST' tutorial used 0.1 (biases 0.1), TF1's "
    "tf.truncated_normal_initializer() 1.0.",
))


def _random_uniform_make(cfg, seed):
    import keras

    g = _gain(cfg)
    return keras.initializers.RandomUniform(
        minval=_param(cfg, "minval", -0.05) * g, maxval=_param(cfg, "maxval", 0.05) * g, seed=seed
    )


_add(InitSpec(
    "random_uniform", _random_uniform_make,
    lambda fi, fo, cfg: ((_param(cfg, "maxval", 0.05) - _param(cfg, "minval", -0.05)) * _gain(cfg)) ** 2 / 12.0,
    lambda cfg: (_param(cfg, "maxval", 0.05) + _param(cfg, "minval", -0.05)) * _gain(cfg) / 2.0,
    "W ~ U[minval, maxval], Var[W] = (maxval - minval)^2 / 12; Keras default [-0.05, 0.05].",
))


def _constant_make(cfg, seed):
    import keras

    return keras.initializers.Constant(_param(cfg, "value", 0.0))


_add(InitSpec(
    "constant", _constant_make, lambda fi, fo, cfg: 0.0, lambda cfg: _param(cfg, "value", 0.0),
    "Every weight equals `value` (Var[W] = 0). For failure tests: Constant(1e5) in a deep ReLU net "
    "overflows in the first forward pass (as in Keras' terminate_on_nan test).",
    random=False,
))
_add(InitSpec(
    "zeros", lambda cfg, seed: __import__("keras").initializers.Zeros(),
    lambda fi, fo, cfg: 0.0, lambda cfg: 0.0,
    "Every weight 0: hidden units stay symmetric and no gradient reaches the lower layers.",
    random=False,
))


# --------------------------------------------------------------------------- the Caffe -> TensorFlow thread
# The initializers someone migrating a Caffe net to TensorFlow chooses between ("Caffe has Xavier,
# TensorFlow does not; truncated_normal trains worse"). Caffe's fillers (include/caffe/filler.hpp)
# read their fans from the blob: fan_in = count / num_outputs, fan_out = count / num_inputs.

# Keras' VarianceScaling divides a truncated normal's stddev by this (the sd of N(0,1) cut at 2 sd),
# so scale * _KERAS_TN_SD**2 gives back the *uncorrected* stddev sqrt(scale / n) that TF1 drew.
_KERAS_TN_SD = 0.87962566103423978
CAFFE_VARIANCE_NORMS = ("fan_in", "fan_out", "average")  # FillerParameter.VarianceNorm, lower-cased
# The registry entries of this section (initsuite.analysis.answer opens a report with its answer when a sweep has one).
CAFFE_TO_TF_THREAD = ("caffe_xavier", "caffe_msra", "caffe_gaussian", "tf_contrib_xavier", "tf_contrib_xavier_normal",
                      "prettytensor_xavier_normal")


def caffe_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """A Keras kernel shape in Caffe's blob layout: dense (n_in, n_out) -> (n_out, n_in),
    conv (k_h, k_w, C_in, C_out) -> (C_out, C_in, k_h, k_w)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return shape
    return (shape[-1], shape[-2], *shape[:-2])


def caffe_fans(blob_shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) as Caffe's XavierFiller / MSRAFiller compute them from a blob:
    fan_in = count / shape[0], fan_out = count / shape[1] (so C_in k_h k_w and C_out k_h k_w)."""
    blob_shape = tuple(int(s) for s in blob_shape)
    count = math.prod(blob_shape)
    return count // blob_shape[0], count // (blob_shape[1] if len(blob_shape) > 1 else 1)


def _caffe_norm(cfg: Any) -> str:
    """``init.variance_norm`` (default fan_in, Caffe's FAN_IN); an unknown one lists the valid ones."""
    norm = str((getattr(cfg, "variance_norm", None) if cfg is not None else None) or "fan_in").lower()
    if norm not in CAFFE_VARIANCE_NORMS:
        raise ValueError(f"Unknown init.variance_norm {norm!r}. Valid: {', '.join(CAFFE_VARIANCE_NORMS)} "
                         f"(Caffe's FillerParameter FAN_IN, FAN_OUT, AVERAGE).")
    return norm


def _caffe_n(fan_in: float, fan_out: float, cfg: Any) -> float:
    return {"fan_in": fan_in, "fan_out": fan_out, "average": (fan_in + fan_out) / 2.0}[_caffe_norm(cfg)]


def _caffe_filler(name: str, scale: float, distribution: str, doc: str) -> InitSpec:
    """Var[W] = scale / n, n = fan_in, fan_out or their average per ``init.variance_norm``
    (Caffe's default FAN_IN), with Caffe's fans (:func:`caffe_fans`)."""
    keras_mode = {"fan_in": "fan_in", "fan_out": "fan_out", "average": "fan_avg"}

    def make(cfg, seed):
        import keras

        return keras.initializers.VarianceScaling(
            scale=scale * _gain(cfg) ** 2, mode=keras_mode[_caffe_norm(cfg)], distribution=distribution, seed=seed)

    def variance(fan_in, fan_out, cfg):
        return scale * _gain(cfg) ** 2 / _caffe_n(fan_in, fan_out, cfg)

    def shape_variance(shape, cfg):
        return variance(*caffe_fans(caffe_shape(shape)), cfg)

    return InitSpec(name, make, variance, lambda cfg: 0.0, doc, shape_variance=shape_variance)


_add(_caffe_filler(
    "caffe_xavier", 1.0, "uniform",
    "Caffe's XavierFiller (filler.hpp; `weight_filler { type: \"xavier\" }`): W ~ U[-sqrt(3/n), +sqrt(3/n)], "
    "Var[W] = 1/n, n = fan_in by default (FillerParameter.variance_norm = FAN_IN), fan_out or "
    "(fan_in + fan_out)/2 with init.variance_norm = fan_out | average. The default is LeCun-uniform, "
    "not Glorot's fan_avg: glorot_uniform equals caffe_xavier only with variance_norm=average.",
))
_add(_caffe_filler(
    "caffe_msra", 2.0, "untruncated_normal",
    "Caffe's MSRAFiller (He et al. 2015, arXiv 1502.01852): W ~ N(0, 2/n), untruncated, n = fan_in by "
    "default (init.variance_norm as for caffe_xavier).",
))


def _caffe_gaussian_make(cfg, seed):
    import keras

    return keras.initializers.RandomNormal(mean=_param(cfg, "mean", 0.0),
                                           stddev=_param(cfg, "stddev", 1.0) * _gain(cfg), seed=seed)


_add(InitSpec(
    "caffe_gaussian", _caffe_gaussian_make,
    lambda fi, fo, cfg: (_param(cfg, "stddev", 1.0) * _gain(cfg)) ** 2,
    lambda cfg: _param(cfg, "mean", 0.0),
    "Caffe's GaussianFiller (`type: \"gaussian\"`): W ~ N(mean, std^2), untruncated, the same for every "
    "layer whatever its fan; FillerParameter's default std is 1 (Caffe's MNIST LeNet example sets "
    "xavier instead), the trap TF1's truncated_normal_initializer() default of 1.0 repeats.",
))
_add(_variance_scaling(
    "tf_contrib_xavier", 1.0, "fan_avg", "uniform",
    "TF1's tf.contrib.layers.xavier_initializer() (uniform=True, the default) = "
    "variance_scaling_initializer(factor=1, mode='FAN_AVG', uniform=True): "
    "W ~ U[-sqrt(6/(n_in+n_out)), +sqrt(6/(n_in+n_out))], Var[W] = 2/(n_in+n_out), as glorot_uniform.",
))


def _uncorrected_truncated(name: str, c: float, doc: str) -> InitSpec:
    """A truncated normal (redrawn beyond 2 sd) with stddev sqrt(c / (n_in + n_out)), no variance
    correction, as TF1 drew it: Var[W] = 0.7737 c / (n_in + n_out)."""
    def make(cfg, seed):
        import keras

        # VarianceScaling(fan_avg) draws stddev sqrt(scale / ((n_in+n_out)/2)) / 0.8796: undo both.
        return keras.initializers.VarianceScaling(scale=c / 2.0 * _KERAS_TN_SD ** 2 * _gain(cfg) ** 2,
                                                  mode="fan_avg", distribution="truncated_normal", seed=seed)

    def variance(fan_in, fan_out, cfg):
        return c * _gain(cfg) ** 2 / (fan_in + fan_out) * TRUNCATED_VARIANCE_FACTOR

    return InitSpec(name, make, variance, lambda cfg: 0.0, doc)


_add(_uncorrected_truncated(
    "tf_contrib_xavier_normal", 2.6,
    "TF1's tf.contrib.layers.xavier_initializer(uniform=False) = variance_scaling_initializer(factor=1, "
    "mode='FAN_AVG', uniform=False): truncated normal (2 sd) with stddev sqrt(1.3 * 2/(n_in+n_out)), "
    "no truncation correction, so Var[W] = 0.7737 * 2.6/(n_in+n_out) ~ 2.01/(n_in+n_out).",
))
_add(_uncorrected_truncated(
    "prettytensor_xavier_normal", 3.0,
    "prettytensor's layers.xavier_init(n_inputs, n_outputs, uniform=False): "
    "tf.truncated_normal_initializer(stddev=sqrt(3/(n_in+n_out))), no truncation correction, so "
    "Var[W] = 0.7737 * 3/(n_in+n_out) ~ 2.32/(n_in+n_out). (uniform=True is glorot_uniform.)",
))


def get(name: str) -> InitSpec:
    """The registry entry for ``name``; an unknown name raises an error listing the valid ones."""
    return INITIALIZERS.get(name)


def names() -> list[str]:
    return INITIALIZERS.names()


def kernel_initializer(cfg: Any, seed: int, layer_key: str | int):
    """The Keras initializer for one layer's kernel (its own seed)."""
    return get(cfg.name).make(cfg, layer_seed(seed, layer_key))


def bias_initializer(cfg: Any):
    """Biases start at ``cfg.bias`` (0 unless a preset says otherwise, e.g. the TF tutorial's 0.1)."""
    import keras

    value = _param(cfg, "bias", 0.0)
    return keras.initializers.Zeros() if value == 0.0 else keras.initializers.Constant(value)


def label(cfg: Any) -> str:
    """The initializer's name in tables and legends: the preset label, else the registry key."""
    return getattr(cfg, "label", None) or cfg.name


# --------------------------------------------------------------------------- finished after the build
# The data-driven entries (lsuv, critical) register themselves in initsuite/setup/lsuv.py, which needs this
# module and the mean-field maps; the modules that look names up (train, custom, theory) import it.
