"""Step-0 statistics of a tanh 5-layer MLP show Glorot & Bengio's (2010) pattern:
standard init shrinks activations and back-propagated gradients layer by layer,
normalized (Glorot) init keeps them level, and weight gradients stay level under both."""

from pathlib import Path

import numpy as np
import pytest

from initsuite.run.train import run

FASHION = Path("/usr/share/datasets/fashion-mnist")
SOURCES = {
    "synthetic": ["dataset=synthetic", "dataset.image_shape=[28,28,1]", "dataset.n_train=300", "dataset.n_test=300",
                  "dataset.n_valid=50"],
    "fashion_mnist": ["dataset=fashion_mnist", "dataset.source=files", f"dataset.path={FASHION}",
                      "train.eval_examples=500"],
}


def _step0(make_cfg, data, init, width):
    if data == "fashion_mnist" and not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    r = run(make_cfg(*SOURCES[data], "model.depth=5", f"model.width={width}", "activation=tanh", f"init={init}",
                     "train.max_steps=0"))
    ls = r.layer_stats.query("step == 0 and layer != 'logits'").sort_values("layer_index")

    def series(tensor, stat):
        return ls[(ls.tensor == tensor) & (ls.stat == stat)].value.to_numpy()

    return series("activation", "std"), series("backprop_grad", "var"), series("weight_grad", "var")


@pytest.mark.parametrize("data", list(SOURCES))
def test_standard_shrinks_glorot_keeps_level(make_cfg, data):
    width = 1000 if data == "fashion_mnist" else 784  # square layers, as in the paper
    act_s, grad_s, wgrad_s = _step0(make_cfg, data, "standard", width)
    act_g, grad_g, wgrad_g = _step0(make_cfg, data, "glorot_uniform", width)
    assert len(act_s) == 5
    # standard: activation std falls layer after layer (roughly halves: n Var[W] = 1/3)
    assert np.all(np.diff(act_s) < 0)
    assert act_s[-1] / act_s[0] < 0.2
    # standard: dC/ds shrinks toward the input (about 3x per layer)
    assert np.all(np.diff(grad_s) > 0)
    assert grad_s[0] / grad_s[-1] < 0.1
    # Glorot: both stay within a small factor across layers
    assert act_g.max() / act_g.min() < 2.0
    assert grad_g.max() / grad_g.min() < 4.0
    # ... and far more level than under standard init
    assert grad_s[-1] / grad_s[0] > 5 * grad_g[-1] / grad_g[0]
    # weight gradients do not shrink with depth under either init (the paper's Fig. 8)
    for w in (wgrad_s, wgrad_g):
        assert w.max() / w.min() < 2.0


def test_tf_tutorial_truncated_normal_saturates_and_explodes_backward(make_cfg):
    """stddev 0.1 on wide layers is sigma_w^2 ~ 6 (chaotic for tanh): upper layers saturate and
    back-propagated gradients grow toward the input."""
    act, grad, _ = _step0(make_cfg, "synthetic", "truncated_normal_tutorial", 784)
    assert act[-1] > 0.7
    assert grad[0] > 5 * grad[-1]
