import numpy as np
import pytest

from initsuite.configure import CONF_DIR, compose
from initsuite.registry import UnknownNameError
from initsuite.setup import activations

GRID = np.linspace(-6, 6, 241)


@pytest.mark.parametrize("name", activations.names())
def test_tensor_and_numpy_forms_agree(name):
    spec = activations.get(name)
    z_tf = np.asarray(spec.tensor_fn()(GRID.astype(np.float32)), dtype=np.float64)
    assert np.allclose(z_tf, spec.numpy(GRID), atol=1e-5)


@pytest.mark.parametrize("name,slope0", [("tanh", 1.0), ("sigmoid", 0.25), ("softsign", 1.0),
                                         ("linear", 1.0), ("gelu", 0.5), ("swish", 0.5)])
def test_slope_at_zero(name, slope0):
    assert activations.get(name).slope_at_zero() == pytest.approx(slope0, abs=1e-4)  # central difference


def test_saturation_thresholds():
    # tanh: slope 1 - z^2 < 0.05 <=> |z| > sqrt(0.95)
    spec = activations.get("tanh")
    assert spec.saturation_threshold() == pytest.approx(0.05, rel=1e-4)
    s = np.arctanh(np.sqrt(0.95))
    assert spec.derivative(np.array([s * 1.01]))[0] < spec.saturation_threshold() < spec.derivative(np.array([s * 0.99]))[0]
    # sigmoid peaks at 1/4
    assert activations.get("sigmoid").saturation_threshold() == pytest.approx(0.0125, rel=1e-3)
    # leaky ReLU's 0.2 slope never counts as saturated; ReLU's 0 does
    leaky = activations.get("leaky_relu")
    assert leaky.derivative(np.array([-3.0]))[0] > leaky.saturation_threshold()
    relu = activations.get("relu")
    assert relu.derivative(np.array([-3.0]))[0] < relu.saturation_threshold()


def test_unknown_activation_lists_valid_names():
    with pytest.raises(UnknownNameError, match="tanh"):
        activations.get("tanhh")


# `keep` is not an activation: model=custom keeps its own (initsuite.setup.custom)
PRESETS = sorted(p.stem for p in (CONF_DIR / "activation").glob("*.yaml") if p.stem != "keep")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_activation_preset_is_registered(preset):
    assert compose([f"activation={preset}"]).activation.name == preset
    assert preset in activations.names()


def test_every_registered_activation_has_a_preset():
    assert set(activations.names()) == set(PRESETS)
