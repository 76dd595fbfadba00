"""Each initializer's empirical variance against its closed-form formula."""

import math

import numpy as np
import pytest

from initsuite.setup import initializers, lsuv  # noqa: F401  (lsuv registers lsuv and critical)
from initsuite.configure import CONF_DIR, compose
from initsuite.registry import UnknownNameError

SHAPES = [(400, 300), (3, 3, 64, 48), (3, 3, 16, 32)]  # the last: fan_out > fan_in


def _cfg(name, **kw):
    from initsuite.config import InitConfig

    return InitConfig(name=name, **kw)


@pytest.mark.parametrize("name", initializers.names())
@pytest.mark.parametrize("shape", SHAPES, ids=["dense", "conv", "conv_widening"])
def test_empirical_variance_matches_formula(name, shape):
    spec = initializers.get(name)
    cfg = _cfg(name, value=0.5) if name == "constant" else _cfg(name)
    w = np.asarray(spec.make(cfg, 1234)(shape, dtype="float32"), dtype=np.float64)
    expected_var = spec.variance_for_shape(shape, cfg)
    assert w.shape == shape
    if not spec.random:
        assert np.all(w == spec.mean(cfg))
        assert expected_var == 0.0
        return
    n = w.size
    # sampling error of a variance estimate is ~ sqrt(2/n) relative; allow 6 sigma
    assert w.var() == pytest.approx(expected_var, rel=6 * math.sqrt(2.0 / n) + 0.01)
    assert abs(w.mean() - spec.mean(cfg)) < 6 * math.sqrt(expected_var / n)


def test_closed_forms_are_the_papers():
    # Glorot & Bengio 2010: standard gives n Var = 1/3, normalized 2/(n_in+n_out).
    assert initializers.get("standard").variance(784, 1000, None) * 784 == pytest.approx(1 / 3)
    assert initializers.get("glorot_uniform").variance(784, 1000, None) == pytest.approx(2 / 1784)
    assert initializers.get("he_normal").variance(784, 1000, None) == pytest.approx(2 / 784)
    # Keras' truncated normal keeps only 0.7737 of the nominal variance (no correction).
    tn = initializers.get("truncated_normal").variance(784, 1000, _cfg("truncated_normal", stddev=0.1))
    assert tn == pytest.approx(0.01 * 0.77374, rel=1e-4)
    assert 784 * tn == pytest.approx(6.07, abs=0.01)  # REFERENCE: sigma_w^2 ~ 6.07 for the TF tutorial


def test_truncated_normal_really_truncates():
    w = np.asarray(initializers.get("truncated_normal").make(_cfg("truncated_normal", stddev=1.0), 7)((500, 400)))
    assert np.abs(w).max() <= 2.0 + 1e-6
    assert w.std() == pytest.approx(0.8796, rel=0.01)


def test_gain_scales_the_variance():
    spec = initializers.get("he_normal")
    assert spec.variance(100, 100, _cfg("he_normal", gain=2.0)) == pytest.approx(4 * 2 / 100)


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        initializers.get("xavier")
    msg = str(e.value)
    assert "xavier" in msg and "glorot_uniform" in msg and "he_normal" in msg


def test_layer_seeds_differ_and_repeat():
    seeds = {initializers.layer_seed(0, f"dense_{i:02d}") for i in range(50)}
    assert len(seeds) == 50
    assert initializers.layer_seed(3, "dense_00") == initializers.layer_seed(3, "dense_00")
    assert initializers.layer_seed(3, "dense_00") != initializers.layer_seed(4, "dense_00")


def test_same_shaped_layers_do_not_share_weights():
    from initsuite.setup import models

    cfg = compose(["dataset=synthetic", "model.depth=3", "model.width=16", "init=glorot_uniform"])
    built = models.build(cfg, (4, 4, 1), 10)
    k1, k2 = (np.asarray(built.model.get_layer(n).kernel) for n in ("dense_01", "dense_02"))
    assert k1.shape == k2.shape and not np.allclose(k1, k2)
    again = models.build(cfg, (4, 4, 1), 10)
    assert np.array_equal(k1, np.asarray(again.model.get_layer("dense_01").kernel))  # reproducible


PRESETS = sorted(p.stem for p in (CONF_DIR / "init").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_init_preset_composes_and_names_a_registered_initializer(preset):
    cfg = compose([f"init={preset}"])
    assert cfg.init.name in initializers.names()
    assert initializers.label(cfg.init) == preset  # one name everywhere: file = table value = legend


def test_tutorial_preset_has_bias_01():
    from initsuite.setup import models

    cfg = compose(["init=truncated_normal_tutorial", "model.depth=2", "model.width=8"])
    built = models.build(cfg, (4, 4, 1), 10)
    assert np.allclose(np.asarray(built.model.get_layer("dense_00").bias), 0.1)
    assert cfg.init.stddev == 0.1


def test_every_registered_initializer_has_a_preset():
    assert set(initializers.names()) <= {compose([f"init={p}"]).init.name for p in PRESETS}


# --------------------------------------------------------------------------- the Caffe -> TensorFlow thread


@pytest.mark.parametrize("name", ["caffe_xavier", "caffe_msra"])
@pytest.mark.parametrize("norm", ["fan_in", "fan_out", "average"])
@pytest.mark.parametrize("shape", SHAPES, ids=["dense", "conv", "conv_widening"])
def test_caffe_variance_norm_matches_formula(name, norm, shape):
    spec = initializers.get(name)
    cfg = _cfg(name, variance_norm=norm)
    w = np.asarray(spec.make(cfg, 99)(shape, dtype="float32"), dtype=np.float64)
    fan_in, fan_out = initializers.compute_fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "average": (fan_in + fan_out) / 2}[norm]
    expected = (1.0 if name == "caffe_xavier" else 2.0) / n
    assert spec.variance_for_shape(shape, cfg) == pytest.approx(expected)
    assert w.var() == pytest.approx(expected, rel=6 * math.sqrt(2.0 / w.size) + 0.01)
    if name == "caffe_xavier":  # U[-sqrt(3/n), +sqrt(3/n)]
        assert np.abs(w).max() <= math.sqrt(3.0 / n) * (1 + 1e-6)
        assert np.abs(w).max() > 0.99 * math.sqrt(3.0 / n)


def test_caffe_xavier_is_lecun_uniform_not_glorot_uniform():
    xavier, glorot = initializers.get("caffe_xavier"), initializers.get("glorot_uniform")
    # a 784 -> 256 layer: Caffe's default draws Var 1/784, Glorot 2/1040
    assert xavier.variance(784, 256, _cfg("caffe_xavier")) == pytest.approx(1 / 784)
    assert xavier.variance(784, 256, _cfg("caffe_xavier")) / glorot.variance(784, 256, None) == pytest.approx(
        1040 / (2 * 784))
    assert xavier.variance(784, 256, _cfg("caffe_xavier")) == initializers.get("lecun_uniform").variance(784, 256, None)
    assert xavier.variance(784, 256, _cfg("caffe_xavier", variance_norm="average")) == pytest.approx(
        glorot.variance(784, 256, None))
    # on a square layer they agree
    assert xavier.variance(256, 256, _cfg("caffe_xavier")) == pytest.approx(glorot.variance(256, 256, None))


def test_unknown_variance_norm_lists_valid_ones():
    with pytest.raises(ValueError, match="fan_in, fan_out, average"):
        initializers.get("caffe_xavier").make(_cfg("caffe_xavier", variance_norm="avg"), 0)


@pytest.mark.parametrize("keras_shape", [(5, 5, 1, 20), (5, 5, 20, 50), (3, 3, 64, 48), (800, 500), (500, 10)])
def test_caffe_fans_equal_keras_fans(keras_shape):
    # Caffe's blobs are (C_out, C_in, k_h, k_w) and (n_out, n_in); XavierFiller takes fan_in = count / shape[0].
    blob = initializers.caffe_shape(keras_shape)
    assert math.prod(blob) == math.prod(keras_shape)
    assert blob[0] == keras_shape[-1] and blob[1] == keras_shape[-2]
    fan_in, fan_out = initializers.caffe_fans(blob)
    assert (fan_in, fan_out) == initializers.compute_fans(keras_shape)
    if len(keras_shape) == 4:
        kh, kw, c_in, c_out = keras_shape
        assert fan_in == c_in * kh * kw and fan_out == c_out * kh * kw


@pytest.mark.parametrize("name,c", [("tf_contrib_xavier_normal", 2.6), ("prettytensor_xavier_normal", 3.0)])
def test_tf1_xavier_normals_are_uncorrected_truncated_normals(name, c):
    shape = (400, 300)
    stddev = math.sqrt(c / sum(shape))
    w = np.asarray(initializers.get(name).make(_cfg(name), 5)(shape), dtype=np.float64)
    assert np.abs(w).max() <= 2 * stddev * (1 + 1e-6)  # cut at 2 sd of the nominal stddev
    assert w.std() == pytest.approx(0.8796 * stddev, rel=0.01)  # and not rescaled afterwards
    assert initializers.get(name).variance(400, 300, None) == pytest.approx(
        initializers.TRUNCATED_VARIANCE_FACTOR * c / 700)


def test_thread_inits_closed_forms():
    assert initializers.get("tf_contrib_xavier").variance(784, 256, None) == pytest.approx(2 / 1040)
    assert initializers.get("caffe_msra").variance(784, 256, _cfg("caffe_msra")) == pytest.approx(2 / 784)
    assert initializers.get("caffe_gaussian").variance(784, 256, _cfg("caffe_gaussian")) == 1.0
    cfg = compose(["init=xavier_sigmoid4"]).init
    assert initializers.get(cfg.name).variance(784, 256, cfg) == pytest.approx(16 * 2 / 1040)


def test_theory_reads_the_realised_variance_of_the_thread_inits():
    from initsuite.analysis import theory

    fans = [(784, 256), (256, 256), (256, 10)]
    sw = lambda init: theory.run_sigmas({"init": init}, fans).sigma_w2  # noqa: E731
    assert sw({"name": "caffe_xavier", "variance_norm": "fan_in"}) == pytest.approx([1.0, 1.0, 1.0])
    assert sw({"name": "caffe_xavier", "variance_norm": "average"}) == pytest.approx(
        [784 * 2 / 1040, 1.0, 256 * 2 / 266])
    assert sw({"name": "caffe_msra"}) == pytest.approx([2.0, 2.0, 2.0])
    assert sw({"name": "caffe_gaussian", "stddev": 1.0}) == pytest.approx([784, 256, 256])
    assert sw({"name": "tf_contrib_xavier_normal"}) == pytest.approx(
        [initializers.TRUNCATED_VARIANCE_FACTOR * 2.6 * fi / (fi + fo) for fi, fo in fans])
