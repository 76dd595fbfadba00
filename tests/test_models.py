"""The nets of the Caffe -> TensorFlow thread: layer shapes and parameter counts against the
published architectures, and one instrumented run of each."""

import numpy as np
import pytest

from initsuite import tables

from initsuite.configure import compose
from initsuite.setup import models

MNIST = (28, 28, 1)


def _built(*overrides):
    return models.build(compose(["dataset=synthetic", *overrides]), MNIST, 10)


def _shapes(model):
    return {l.name: tuple(l.output.shape[1:]) for l in model.layers}


def test_tf_deep_mnist_is_the_tutorial_net():
    b = _built("model=tf_deep_mnist", "activation=relu")
    m = b.model
    assert m.count_params() == 3_274_634  # 832 + 51,264 + 3,212,288 + 10,250
    s = _shapes(m)
    assert s["conv_00"] == (28, 28, 32) and s["pool_00"] == (14, 14, 32)
    assert s["conv_01"] == (14, 14, 64) and s["pool_01"] == (7, 7, 64)
    assert s["flatten"] == (3136,) and s["dense_00"] == (1024,) and s["logits"] == (10,)
    assert tuple(m.get_layer("conv_00").kernel.shape) == (5, 5, 1, 32)
    assert tuple(m.get_layer("conv_01").kernel.shape) == (5, 5, 32, 64)
    assert [p.name for p in b.points] == ["conv_00", "conv_01", "dense_00", "logits"]
    assert "dropout" not in s
    assert _built("model=tf_deep_mnist", "model.dropout=0.5").model.get_layer("dropout").rate == 0.5


def test_tutorial_init_on_the_tutorial_net():
    m = _built("model=tf_deep_mnist", "init=truncated_normal_tutorial").model
    assert np.allclose(np.asarray(m.get_layer("conv_01").bias), 0.1)
    k = np.asarray(m.get_layer("dense_00").kernel)
    assert np.abs(k).max() <= 0.2 + 1e-6 and k.std() == pytest.approx(0.1 * 0.8796, rel=0.01)


def test_caffe_lenet_is_caffes_mnist_example():
    b = _built("model=caffe_lenet", "activation=relu")
    m = b.model
    assert m.count_params() == 431_080  # 520 + 25,050 + 400,500 + 5,010
    s = _shapes(m)
    assert s["conv_00"] == (24, 24, 20) and s["pool_00"] == (12, 12, 20)
    assert s["conv_01"] == (8, 8, 50) and s["pool_01"] == (4, 4, 50)
    assert s["flatten"] == (800,) and s["dense_00"] == (500,) and s["logits"] == (10,)
    # no nonlinearity after the convs: their "activation" is the pre-activation itself
    x = np.random.default_rng(0).normal(size=(2, *MNIST)).astype("float32")
    import keras

    probe = keras.Model(m.inputs, [m.get_layer("conv_00").output, m.get_layer("act_00").output,
                                   m.get_layer("dense_00").output, m.get_layer("act_02").output])
    c, a, d, r = (np.asarray(t) for t in probe([x]))
    assert np.array_equal(c, a) and (c < 0).any()
    assert np.array_equal(r, np.maximum(d, 0))


def test_caffe_lenet_says_what_input_it_needs():
    with pytest.raises(ValueError, match="28x28"):
        models.build(compose(["dataset=synthetic", "model=caffe_lenet"]), (8, 8, 1), 10)


@pytest.mark.parametrize("name", ["tf_deep_mnist", "caffe_lenet"])
def test_thread_net_runs_instrumented(name, make_cfg):
    from initsuite.run.train import run

    r = run(make_cfg("dataset=synthetic", "dataset.image_shape=[28,28,1]", "dataset.n_train=64", "dataset.n_valid=32",
                     "dataset.n_test=32", f"model={name}", "activation=relu", "init=caffe_xavier",
                     "train.batch_size=16", "train.max_steps=3", "train.eval_examples=32", "probes.every=2",
                     "probes.batch_size=16"))
    assert r.status == "done"
    ls = tables.batch_rows(r.layer_stats)  # the fixed probe's rows
    assert list(ls.sort_values("layer_index").layer.unique()) == ["conv_00", "conv_01", "dense_00", "logits"]
    act = ls[(ls.tensor == "activation") & (ls.stat == "var") & (ls.step == 0)]
    assert set(act.layer) == {"conv_00", "conv_01", "dense_00"}  # every hidden layer, the output has none
    w = ls[(ls.tensor == "weight") & (ls.stat == "var") & (ls.step == 0)].set_index("layer").value
    assert w["conv_01"] == pytest.approx(1 / (5 * 5 * (32 if name == "tf_deep_mnist" else 20)), rel=0.1)
