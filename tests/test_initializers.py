"""Each initializer's empirical variance against its closed-form formula."""

import math

import numpy as np
import pytest

from initsuite import initializers, lsuv  # noqa: F401  (lsuv registers lsuv and critical)
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
    from initsuite import models

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
    from initsuite import models

    cfg = compose(["init=truncated_normal_tutorial", "model.depth=2", "model.width=8"])
    built = models.build(cfg, (4, 4, 1), 10)
    assert np.allclose(np.asarray(built.model.get_layer("dense_00").bias), 0.1)
    assert cfg.init.stddev == 0.1


def test_every_registered_initializer_has_a_preset():
    assert set(initializers.names()) <= {compose([f"init={p}"]).init.name for p in PRESETS}
