"""initsuite inside the user's own model.fit (initsuite.keras.watch): the user script is written
here, in the test, as a user would write it; the package is attached with one line."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")
import tensorflow as tf  # noqa: E402

import initsuite.keras  # noqa: E402
from initsuite.run import rows as row_mod  # noqa: E402
from initsuite.setup import custom  # noqa: E402
from initsuite.tables import LAYER_STATS_COLUMNS, PROBE, TABLE_COLUMNS, TRAIN  # noqa: E402

N, SHAPE, CLASSES = 96, (8, 8, 1), 10


def data(seed=0, n=N, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)).astype("float32"), rng.integers(0, CLASSES, n).astype("int64")


def small_cnn():
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.Activation("tanh", name="conv_act")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, name="hidden")(h)
    h = keras.layers.Activation("tanh", name="hidden_act")(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(h), name="cnn")


def user_script(out, build=small_cnn, epochs=1, batch_size=16, jit=False, tfdata=False, seed=0, watch=True,
                **options):
    """What a user writes: build, (one line) watch, compile with their own optimizer and loss, fit."""
    keras.utils.set_random_seed(seed)
    x, y = data(seed)
    model = build()
    if watch:
        model = initsuite.keras.watch(model, probe=(x[:32], y[:32]), out=out, seed=seed, **options)  # the line
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=jit)
    if tfdata:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
        model.fit(ds, epochs=epochs, verbose=0)
    else:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, (x, y)


def tables(folder):
    return {name: pd.read_parquet(Path(folder) / f"{name}.parquet") for name in TABLE_COLUMNS}


def status(folder):
    return json.loads((Path(folder) / "status.json").read_text())


# --------------------------------------------------------------------------- the tables


def test_watched_fit_writes_the_suites_tables_and_step0_equals_a_numpy_recomputation(tmp_path):
    out = tmp_path / "cmp" / "runs" / "cnn"
    keras.utils.set_random_seed(0)
    x, y = data(0)
    model = small_cnn()
    # The oracle, before any update: the layers' outputs and the gradients in NumPy / a plain tape.
    probe_x, probe_y = x[:32], y[:32]
    names = {"conv": "preactivation", "conv_act": "activation", "hidden": "preactivation",
             "hidden_act": "activation", "logits": "preactivation"}
    inner = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    outputs = dict(zip(names, (np.asarray(o, np.float64) for o in inner(probe_x))))
    kernels = {n: np.asarray(model.get_layer(n).kernel, np.float64) for n in ("conv", "hidden", "logits")}
    loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_obj(probe_y, model(probe_x))
    kgrads = dict(zip(kernels, tape.gradient(loss, [model.get_layer(n).kernel for n in kernels])))

    model = initsuite.keras.watch(model, probe=(probe_x, probe_y), out=out, train_every=2)  # the one line
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss_obj, metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    t = tables(out)
    for name, columns in TABLE_COLUMNS.items():
        assert list(t[name].columns) == columns, name
    ls = t["layer_stats"]
    assert set(ls.batch) == {TRAIN, PROBE}
    assert sorted(ls[ls.batch == TRAIN].step.unique()) == [0, 2, 4, 6, 8, 10]
    probe_steps = sorted(ls[ls.batch == PROBE].step.unique())
    assert probe_steps == [0, 6, 10, 12]  # 0, log-spaced 10, epoch ends 6 and 12 (the last)
    p0 = ls[(ls.batch == PROBE) & (ls.step == 0)]

    def value(layer, tensor, stat):
        v = p0[(p0.layer == layer) & (p0.tensor == tensor) & (p0.stat == stat)].value
        assert len(v) == 1, (layer, tensor, stat)
        return float(v.iloc[0])

    layer_of = {"conv": "conv", "conv_act": "conv", "hidden": "hidden", "hidden_act": "hidden", "logits": "logits"}
    for n, tensor in names.items():
        o = outputs[n].ravel()
        for stat, want in (("mean", o.mean()), ("var", o.var()), ("std", o.std()),
                           ("p50", np.percentile(o, 50)), ("p98", np.percentile(o, 98))):
            assert value(layer_of[n], tensor, stat) == pytest.approx(want, rel=1e-4, abs=1e-6), (n, stat)
    for n, k in kernels.items():
        assert value(n, "weight", "var") == pytest.approx(k.var(), rel=1e-5)
        g = np.asarray(kgrads[n], np.float64)
        assert value(n, "weight_grad", "var") == pytest.approx(g.var(), rel=1e-4)
    tr0 = ls[(ls.batch == TRAIN) & (ls.step == 0) & (ls.layer == "hidden") & (ls.tensor == "activation")]
    assert set(tr0.stat) >= {"mean", "var", "std", "norm", "nonfinite_count"}

    st = status(out)
    assert st["status"] == "done" and st["steps"] == 12 and st["first_nonfinite_step"] is None
    assert st["run_id"] == "cnn" and set(t["layer_stats"].run_id) == {"cnn"}
    m = t["metrics"]
    assert {"loss", "accuracy", "error"} <= set(m.metric) and set(m.split) == {"train"}
    assert st["final_train_error"] == pytest.approx(1 - st["final_train_accuracy"])
    h = t["histograms"]
    assert sorted(h.step.unique()) == [0, 12] and set(h.batch) == {PROBE}
    cfg = __import__("yaml").safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["name"] == "watched" and cfg["init"]["name"] == "glorot_uniform"
    assert cfg["activation"]["name"] == "tanh" and cfg["optimizer"]["name"] == "sgd"
    assert cfg["optimizer"]["lr"] == pytest.approx(0.05) and cfg["train"]["batch_size"] == 16
    assert cfg["paths"]["runs"] == str(out.parent)


def small_cnn_builder(input_shape, num_classes):
    """small_cnn as a suite builder (model=custom model.builder=test_watch:small_cnn_builder)."""
    assert tuple(input_shape) == SHAPE and num_classes == CLASSES
    return small_cnn()


def test_step0_statistics_equal_the_suites_own_run_of_the_same_model_and_seed(make_cfg, tmp_path):
    """The suite trains small_cnn itself (model=custom); the watch measures a model.fit of the same
    model, built and seeded as the suite builds it, on the same probe: the step-0 rows agree."""
    from initsuite.run.train import run
    from initsuite.setup import data as data_mod
    from initsuite.tables import batch_rows

    cfg = make_cfg("dataset=synthetic", f"dataset.image_shape=[{','.join(map(str, SHAPE))}]",
                   f"dataset.num_classes={CLASSES}", "dataset.n_train=64", "dataset.n_valid=16", "dataset.n_test=32",
                   "model=custom", "model.builder=test_watch:small_cnn_builder", "activation=keep",
                   "init=glorot_uniform", "seed=3", "optimizer.lr=0.05", "train.batch_size=16",
                   "train.max_steps=4", "probes.batch_size=32", "train.eval_examples=16", "train.progress=false")
    suite = batch_rows(run(cfg).layer_stats)
    suite0 = suite[suite.step == 0].set_index(["layer", "tensor", "stat"]).value

    d = data_mod.load(cfg.dataset, seed=int(cfg.seed))
    built = custom.build(cfg, d.input_shape, d.num_classes)  # the suite's weights: its initializer, its seed
    out = tmp_path / "cmp" / "runs" / "same"
    model = initsuite.keras.watch(built.model, probe=(d.x_test[:32], d.y_test[:32].astype("int64")), out=out)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(d.x_train, d.y_train.astype("int64"), batch_size=16, epochs=1, verbose=0)
    watched = batch_rows(tables(out)["layer_stats"])
    watched0 = watched[watched.step == 0].set_index(["layer", "tensor", "stat"]).value
    common = suite0.index.intersection(watched0.index)
    assert len(common) >= 0.9 * len(suite0)  # the same layers, tensors and statistics
    for key in common:
        a, b = suite0[key], watched0[key]
        if np.isnan(a):
            assert np.isnan(b), key
        else:
            assert b == pytest.approx(a, rel=1e-4, abs=1e-7), key


def test_row_builders_give_the_documented_columns():
    """initsuite.run.rows (used by the suite's loop and the watch alike) writes every table's columns in order."""
    from initsuite.tables import EVENTS_COLUMNS, HISTOGRAM_COLUMNS

    stats = {("d0", "activation"): {"mean": 0.5, "var": 2.0}, ("d1", "weight"): {"std": 0.1}}
    hists = {("d0", "activation"): (np.linspace(-1, 1, 4), np.array([1, 2, 3]))}
    layout = [("d0", "activation", "mean"), ("d1", "weight", "std")]
    taken = (np.array([0, 5]), np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[[-1.0, 1.0]], [[0.0, 2.0]]]),
             np.array([[[1, 2, 3]], [[4, 5, 6]]]))
    fake = SimpleNamespace(layout=layout, hist_keys=[("d0", "activation")])
    li = {"d0": 0, "d1": 1}
    probe = row_mod.probe_rows("r", 3, 0.3, stats, li)
    train, train_hist = row_mod.step_stats_rows("r", fake, taken, lambda s: s / 10, li)
    assert [list(r) for r in probe + train] == [LAYER_STATS_COLUMNS] * 7
    assert [(r["step"], r["batch"], r["layer"], r["value"]) for r in train] == [
        (0, TRAIN, "d0", 1.0), (0, TRAIN, "d1", 2.0), (5, TRAIN, "d0", 3.0), (5, TRAIN, "d1", 4.0)]
    h = row_mod.probe_hist_rows("r", 3, 0.3, hists, li) + train_hist
    assert [list(r) for r in h] == [HISTOGRAM_COLUMNS] * 9
    assert [r["count"] for r in train_hist] == [1, 2, 3, 4, 5, 6] and train_hist[3]["left"] == 0.0
    first = dict(step=2, phase="forward", layer="d1", layer_index=1, tensor="activation")
    assert list(row_mod.nonfinite_event("r", first, 0.2, 4)) == EVENTS_COLUMNS


# --------------------------------------------------------------------------- NaN forensics


def deep_relu():
    """Keras' terminate_on_nan_test recipe: Constant(1e5) kernels in a deep ReLU stack."""
    return keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten()]
                            + [keras.layers.Dense(64, activation="relu", name=f"relu_{i}",
                                                  kernel_initializer=keras.initializers.Constant(1e5))
                               for i in range(6)] + [keras.layers.Dense(CLASSES, name="out")])


def first_overflow(x):
    """NumPy oracle: the first layer whose float64 forward output exceeds float32's range."""
    h = x.reshape(len(x), -1).astype(np.float64)
    for i in range(6):
        h = np.maximum(h @ np.full((h.shape[1], 64), 1e5), 0.0)
        if np.abs(h).max() > np.finfo(np.float32).max:
            return f"relu_{i}"
    return None


def nan_fit(out, **options):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 28, 28)).astype("float32"), rng.integers(0, CLASSES, 64)
    model = initsuite.keras.watch(deep_relu(), probe=(x[:16], y[:16]), out=out, **options)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return model, history, x


def test_a_forced_nan_is_located_by_step_layer_and_phase_and_the_fit_stops(tmp_path):
    out = tmp_path / "nan" / "runs" / "deep"
    model, history, x = nan_fit(out)
    want = first_overflow(x[:8])
    assert want is not None
    st = status(out)
    assert st["status"] == "diverged"
    assert (st["first_nonfinite_step"], st["first_nonfinite_phase"], st["first_nonfinite_layer"]) == \
        (0, "forward", want)
    assert st["steps"] <= 2 < 16  # stopped right after the check that follows the first update
    assert model.stop_training
    ev = tables(out)["events"]
    assert list(ev.kind) == ["first_nonfinite"]
    assert (ev.step.iloc[0], ev.phase.iloc[0], ev.layer.iloc[0]) == (0, "forward", want)


def test_continuing_past_a_nan_when_asked(tmp_path):
    out = tmp_path / "nan" / "runs" / "deep"
    model, history, x = nan_fit(out, on_nonfinite="continue")
    st = status(out)
    assert st["status"] == "diverged" and st["steps"] == 16  # both epochs ran
    assert (st["first_nonfinite_step"], st["first_nonfinite_layer"]) == (0, first_overflow(x[:8]))
    assert len(history.history["loss"]) == 2


# --------------------------------------------------------------------------- kinds of models and data


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.flat = keras.layers.Flatten()
        self.d1 = keras.layers.Dense(12, name="d1")
        self.a1 = keras.layers.Activation("tanh", name="a1")
        self.out = keras.layers.Dense(CLASSES, name="out")

    def call(self, x, training=False):
        return self.out(self.a1(self.d1(self.flat(x))))


def sequential():
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(12, activation="relu"),
                             keras.layers.Dense(CLASSES)], name="seq")


def nested():
    block = keras.Sequential([keras.layers.Dense(12, name="inner_dense"), keras.layers.Activation("relu")],
                             name="block")
    inputs = keras.Input(SHAPE)
    h = block(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="head")(h), name="nested")


@pytest.mark.parametrize("build, tfdata, jit, layers", [
    (sequential, False, False, ["dense", "dense_1"]),
    (small_cnn, True, True, ["conv", "hidden", "logits"]),
    (Subclassed, False, True, ["d1", "out"]),
    (nested, True, False, ["block/inner_dense", "head"]),
], ids=["sequential-numpy-nojit", "functional-tfdata-jit", "subclassed-numpy-jit", "nested-tfdata-nojit"])
def test_every_kind_of_model_on_arrays_and_tf_data_with_and_without_xla(tmp_path, build, tfdata, jit, layers):
    from tensorflow.python.framework import config as tf_config

    out = tmp_path / "kinds" / "runs" / build.__name__
    # Keras turns XLA off while op determinism is on, and the suite's own runs (earlier tests in
    # this process) switch it on; a user's script has it off
    deterministic = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    try:
        model, _ = user_script(out, build=build, tfdata=tfdata, jit=jit, train_every=1)
    finally:
        if deterministic:
            tf_config.enable_op_determinism()
    assert bool(model.jit_compile) is jit
    st = status(out)
    assert st["status"] == "done" and st["steps"] == N // 16
    ls = tables(out)["layer_stats"]
    assert sorted(ls.layer.unique(), key=layers.index) == layers
    assert sorted(ls[ls.batch == TRAIN].step.unique()) == list(range(N // 16))
    assert np.isfinite(ls.value).all()
    cfg = __import__("yaml").safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["jit_compile"] is jit


def test_every_statistic_in_the_step_trains_without_xla_and_says_so(tmp_path):
    """Exact selection cannot be compiled by XLA: a watch asked for the training batch's
    percentiles turns the fit's jit_compile off with a warning, and config.yaml records it."""
    from tensorflow.python.framework import config as tf_config

    out = tmp_path / "q" / "runs" / "jit"
    deterministic = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()  # else Keras itself turns XLA off (see the test above)
    try:
        with pytest.warns(UserWarning, match="without XLA"):
            model, _ = user_script(out, build=sequential, jit=True, train_every=1, train_quantiles=True)
    finally:
        if deterministic:
            tf_config.enable_op_determinism()
    assert model.jit_compile is False
    assert __import__("yaml").safe_load((out / "config.yaml").read_text())["train"]["jit_compile"] is False
    ls = tables(out)["layer_stats"]
    train = ls[(ls.batch == TRAIN) & (ls.stat == "p50")]
    assert sorted(train.step.unique()) == list(range(N // 16)) and np.isfinite(train.value).all()


@pytest.mark.slow
def test_mixed_precision_statistics_are_finite_and_close_to_float32(tmp_path):
    """bfloat16 compute, and float16 with its loss scale: the training-batch gradients are the unscaled ones."""
    got = {}
    for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
        before = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            out = tmp_path / "mp" / "runs" / policy
            model, _ = user_script(out, epochs=1)
        finally:
            keras.mixed_precision.set_global_policy(before)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert float(model.optimizer.scale_loss(1.0)) > 1  # the loss really was scaled
        st = status(out)
        assert st["status"] == "done", (policy, st)
        ls = tables(out)["layer_stats"]
        assert np.isfinite(ls[ls.stat != "nonfinite_count"].value).all()
        got[policy] = ls.set_index(["batch", "step", "layer", "tensor", "stat"]).value
    ref = got["float32"]
    for policy in ("mixed_bfloat16", "mixed_float16"):
        for batch, tensor in ((TRAIN, "weight_grad"), (TRAIN, "backprop_grad"), (PROBE, "activation"),
                              (PROBE, "weight_grad")):
            for stat in ("std",):
                a = ref.xs((batch, 0), level=["batch", "step"])
                b = got[policy].xs((batch, 0), level=["batch", "step"])
                sel = [k for k in a.index if k[1] == tensor and k[2] == stat]
                assert sel, (batch, tensor)
                for k in sel:
                    assert b[k] == pytest.approx(a[k], rel=0.05), (policy, batch, k)


# --------------------------------------------------------------------------- figures and bad input


@pytest.mark.slow
def test_initsuite_figures_draws_a_folder_of_watched_fits(tmp_path):
    cmp = tmp_path / "cmp"
    for label, seed in (("glorot", 0), ("glorot", 1)):
        user_script(cmp / "runs" / f"{label}{seed}", seed=seed, label=label, epochs=2)

    def he_cnn():
        m = small_cnn()
        for layer in m.layers:
            if hasattr(layer, "kernel"):
                layer.kernel.assign(keras.initializers.HeNormal(seed=1)(layer.kernel.shape))
        return m

    user_script(cmp / "runs" / "he0", build=he_cnn, label="he", epochs=2)
    proc = subprocess.run([sys.executable, "-m", "initsuite", "figures", str(cmp)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = list((cmp / "figures").rglob("*.png")) if (cmp / "figures").exists() else list(cmp.rglob("*.png"))
    assert pngs, proc.stdout[-2000:]
    runs = pd.read_parquet(cmp / "runs.parquet")
    assert sorted(runs.init) == ["glorot", "glorot", "he"] and set(runs.status) == {"done"}


def test_bad_input_gives_clear_errors(tmp_path):
    model = sequential()
    x, y = data()
    with pytest.raises(ValueError, match="runs/<name>"):
        initsuite.keras.watch(model, probe=(x, y), out=tmp_path / "flat")
    with pytest.raises(ValueError, match="probe must be"):
        initsuite.keras.watch(model, probe=x, out=tmp_path / "runs" / "a")
    with pytest.raises(ValueError, match="x has 96 examples, y has 3"):
        initsuite.keras.watch(model, probe=(x, y[:3]), out=tmp_path / "runs" / "a")
    with pytest.raises(ValueError, match="on_nonfinite"):
        initsuite.keras.watch(model, probe=(x, y), out=tmp_path / "runs" / "a", on_nonfinite="ignore")
    with pytest.raises(ValueError, match="every must be"):
        initsuite.keras.watch(model, probe=(x, y), out=tmp_path / "runs" / "a", every=0)
    with pytest.raises(TypeError, match="keras.Model"):
        initsuite.keras.watch("not a model", probe=(x, y), out=tmp_path / "runs" / "a")
    initsuite.keras.watch(model, probe=(x, y), out=tmp_path / "runs" / "a")
    with pytest.raises(ValueError, match="already watched"):
        initsuite.keras.watch(model, probe=(x, y), out=tmp_path / "runs" / "b")
    wrong = initsuite.keras.watch(sequential(), probe=(x[:, :4], y), out=tmp_path / "runs" / "c")
    wrong.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="probe batch does not fit"):
        wrong.fit(x, y, verbose=0)


def test_the_callback_alone_works_too(tmp_path):
    out = tmp_path / "cb" / "runs" / "plain"
    keras.utils.set_random_seed(0)
    x, y = data()
    model = sequential()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[initsuite.keras.Watch((x[:16], y[:16]), out=out)])
    st = status(out)
    assert st["status"] == "done" and st["steps"] == 3
    cfg = __import__("yaml").safe_load((out / "config.yaml").read_text())
    assert cfg["optimizer"]["name"] == "adam"


def test_the_facade_does_not_shadow_keras():
    import initsuite.keras as facade
    from initsuite.run import watch as implementation

    assert facade.watch is implementation.watch and facade.Watch is implementation.Watch
    assert keras.__name__ == "keras" and hasattr(keras, "layers")
    from initsuite.measure import instrument

    assert instrument.keras is keras


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "elu"])
def test_a_suite_built_model_keeps_its_saturation_rule_when_watched(make_cfg, activation):
    """The suite's models hold the registry's own activation functions (not Keras' by name): the
    watch still knows them, so a watched fit gets the same saturation rule (and saturated_frac)."""
    from initsuite.setup import models

    cfg = make_cfg("dataset=synthetic", "model.depth=2", "model.width=7", f"activation={activation}")
    built = models.build(cfg, (3, 2, 1), 4)
    seen = custom.describe(built.model, sample=np.zeros((2, 3, 2, 1), np.float32))
    assert seen.saturation_threshold == pytest.approx(built.saturation_threshold)
    assert seen.saturated_intervals == built.saturated_intervals and built.saturated_intervals
    s = tf.constant(np.linspace(-8, 8, 101, dtype=np.float32))
    assert np.allclose(seen.activation_fn(s), built.activation_fn(s))
