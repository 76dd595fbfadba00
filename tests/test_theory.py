"""Theory against closed forms, known critical points and wide random layers; theory figures.

Tolerance for predictions vs measurements (``RTOL_LOG``): a variance measured over the N units of
a random layer fluctuates by ~sqrt(2/N) relative for tanh's near-Gaussian pre-activations and up to
sqrt(5/N) for ReLU's squared outputs (3.7 % and 5.8 % at N = 1500), and for ReLU the fluctuations
compound layer after layer (~13 % by layer 5). Predictions must match every layer within a factor
exp(0.2) = 1.22 (the worst case measured here is exp(0.09)); the negative controls show that wrong
theories miss by far more.
"""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from initsuite.setup import activations, initializers

from initsuite.analysis import theory

RTOL_LOG = 0.2


def _normal_expectation(fn, mean, var):
    """Brute-force oracle: E[fn(u)], u ~ N(mean, var), by the trapezoid rule on a fine grid."""
    sd = math.sqrt(var)
    u = np.linspace(mean - 12 * sd, mean + 12 * sd, 400001)
    p = np.exp(-0.5 * ((u - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return float(np.trapezoid(fn(u) * p, u))


# --------------------------------------------------------------------------- closed forms


def test_known_critical_points():
    assert theory.critical_sigma_w2("tanh") == pytest.approx(1.0, abs=1e-3)  # sigma_b = 0
    assert theory.critical_sigma_w2("relu") == pytest.approx(2.0, abs=1e-6)
    assert theory.critical_sigma_w2("linear") == pytest.approx(1.0, abs=1e-6)
    # leaky ReLU (slope a below 0): chi_1 = sigma_w^2 (1 + a^2) / 2
    assert theory.critical_sigma_w2("leaky_relu") == pytest.approx(2 / (1 + 0.2 ** 2), rel=1e-5)
    # a random bias moves tanh's edge of chaos to larger sigma_w^2, where chi_1 is again 1
    s = theory.critical_sigma_w2("tanh", sigma_b2=0.05)
    assert 1.2 < s < 2.5
    assert theory.chi1("tanh", s, 0.05) == pytest.approx(1.0, abs=1e-6)


def test_phases_either_side_of_the_edge():
    assert theory.mean_field("tanh", 0.5).phase == "ordered"
    assert theory.mean_field("tanh", 1.0).phase == "critical"
    assert theory.mean_field("tanh", 2.0).phase == "chaotic"
    assert theory.mean_field("relu", 1.0).chi1 == pytest.approx(0.5, rel=1e-6)  # chi_1 = sigma_w^2 / 2
    assert theory.mean_field("relu", 3.0).chi1 == pytest.approx(1.5, rel=1e-6)


def test_qmap_matches_closed_forms_and_brute_force():
    q = np.array([0.01, 0.5, 2.0, 30.0])
    assert np.allclose(theory.qmap("relu", 2.0, 0.0, q), q)  # E[relu(sqrt(q) z)^2] = q / 2
    assert np.allclose(theory.qmap("linear", 1.5, 0.1, q, bias=0.3), 1.5 * (q + 0.09) + 0.1)
    # ReLU with a constant bias b: E[relu(b + s z)^2] = (b^2 + s^2) Phi(b/s) + b s phi(b/s)
    b, s = 0.1, math.sqrt(0.7)
    Phi = 0.5 * (1 + math.erf(b / s / math.sqrt(2)))
    phi = math.exp(-0.5 * (b / s) ** 2) / math.sqrt(2 * math.pi)
    assert theory.qmap("relu", 1.0, 0.0, 0.7, bias=b) == pytest.approx((b * b + s * s) * Phi + b * s * phi, rel=1e-5)
    # wide Gaussians, where plain Gauss-Hermite misses tanh'^2 entirely (TF1's stddev 1.0 on 1000 units)
    tanh = activations.get("tanh")
    for var in (0.3, 5.0, 750.0):
        assert theory.qmap("tanh", 1.0, 0.0, var, bias=0.1) == pytest.approx(
            _normal_expectation(lambda u: np.tanh(u) ** 2, 0.1, var), rel=1e-4)
        assert theory.chi1("tanh", 1.0, q=var) == pytest.approx(
            _normal_expectation(lambda u: tanh.derivative(u) ** 2, 0.0, var), rel=1e-4)


def test_fixed_points():
    assert theory.fixed_point("tanh", 0.8) == 0.0  # ordered, no bias: the signal dies out
    q = theory.fixed_point("tanh", 2.0)
    assert q > 0.1 and theory.qmap("tanh", 2.0, 0.0, q) == pytest.approx(q, rel=1e-6)
    q = theory.fixed_point("tanh", 1.5, 0.05, bias=0.1)
    assert theory.qmap("tanh", 1.5, 0.05, q, bias=0.1) == pytest.approx(q, rel=1e-6)
    assert theory.fixed_point("relu", 1.5) == 0.0
    assert theory.fixed_point("relu", 2.5) == math.inf
    assert theory.fixed_point("relu", 2.0, q0=3.0) == pytest.approx(3.0)  # every q is fixed


@pytest.mark.parametrize("activation", ["tanh", "relu", "softsign", "elu"])
def test_fixed_point_and_chi1_over_a_grid_equal_their_pointwise_values(activation):
    # the phase diagram's grid in one call: each cell as the scalar call gives it (0, inf and the
    # bisected crossings alike), and each bisected q* a fixed point of the q-map
    sw, sb = np.meshgrid(np.geomspace(0.1, 6.0, 17), [0.0, 0.01, 0.3])
    for bias in (0.0, 0.1):
        q = theory.fixed_point(activation, sw, sb, bias=bias)
        chi = theory.chi1(activation, sw, sb, bias=bias)
        assert q.shape == chi.shape == sw.shape
        for i, j in np.ndindex(sw.shape):
            assert q[i, j] == theory.fixed_point(activation, float(sw[i, j]), float(sb[i, j]), bias=bias)
            assert chi[i, j] == theory.chi1(activation, float(sw[i, j]), float(sb[i, j]), bias=bias)
        inner = np.isfinite(q) & (q > 0)
        assert inner.any()
        got = theory.qmap(activation, sw[inner], sb[inner], q[inner], bias=bias)
        assert np.allclose(got, q[inner], rtol=1e-6)


def test_depth_scale_and_trainable_depth():
    mf = theory.mean_field("tanh", 0.5)
    assert mf.xi_c == pytest.approx(-1 / math.log(mf.chi1), rel=1e-6)  # ordered: xi_c = -1/log chi_1
    assert theory.trainable_depth("tanh", 0.5) == pytest.approx(6 * mf.xi_c)
    assert theory.depth_scale("tanh", 1.0) > 1e4  # diverges at the edge of chaos
    # deeper into either phase, shorter depth scale
    assert theory.depth_scale("tanh", 0.9) > theory.depth_scale("tanh", 0.5)
    assert theory.depth_scale("tanh", 1.5) > theory.depth_scale("tanh", 4.0)
    chaotic = theory.mean_field("tanh", 4.0)
    assert chaotic.c_star == pytest.approx(0.0, abs=1e-6)  # odd phi, no bias: c* = 0
    assert chaotic.chi_c < 1 < chaotic.chi1


# --------------------------------------------------------------------------- Glorot & Bengio


def test_glorot_linear_is_the_papers_products():
    n, L = 1000, 5
    std = theory.glorot_linear([n] * L, [n] * L, 1 / (3 * n))  # standard init: n Var[W] = 1/3
    assert np.allclose(std.activation, (1 / 3) ** np.arange(1, L + 1))
    assert np.allclose(std.backprop_grad, (1 / 3) ** np.arange(L - 1, -1, -1))
    assert np.allclose(std.weight_grad, std.weight_grad.iloc[0])  # equal widths: the same in every layer
    glorot = theory.glorot_linear([784, 1000, 1000], [1000, 1000, 10], 2 / np.array([1784, 2000, 1010]))
    assert glorot.forward_gain.iloc[1] == pytest.approx(1.0) and glorot.backward_gain.iloc[1] == pytest.approx(1.0)


def test_glorot_linear_matches_a_wide_linear_network():
    rng = np.random.default_rng(0)
    n, L, batch = 1000, 5, 64
    var_w = 1 / (3 * n)
    x = rng.standard_normal((batch, n))
    ws = [rng.uniform(-1 / math.sqrt(n), 1 / math.sqrt(n), (n, n)) for _ in range(L)]
    h, acts = x, []
    for w in ws:
        h = h @ w
        acts.append(h.var())
    g, grads = rng.standard_normal((batch, n)), []
    for w in reversed(ws):
        grads.append(g.var())
        g = g @ w.T
    pred = theory.glorot_linear([n] * L, [n] * L, var_w, var_x=x.var(), var_out_grad=grads[0])
    assert np.abs(np.log(np.array(acts) / pred.activation)).max() < RTOL_LOG
    assert np.abs(np.log(np.array(grads[::-1]) / pred.backprop_grad)).max() < RTOL_LOG


# --------------------------------------------------------------------------- wide random layers

INITS = {
    "glorot_uniform": {},
    "he_normal": {},
    "standard": {},
    "truncated_normal_tutorial": dict(name="truncated_normal", stddev=0.1, bias=0.1),
}


def _simulate(act: str, init: dict, width=1500, depth=5, batch=64, n_in=784, seed=0):
    """A wide random net drawn with the registry's real Keras initializers; returns the config,
    the input's second moment, and measured per-layer Var[s] and Var[dC/ds] (random top gradient)."""
    from initsuite.config import InitConfig

    rng = np.random.default_rng(seed)
    cfg = InitConfig(**init)
    spec = initializers.get(cfg.name)
    x = rng.uniform(0, 1, (batch, n_in)).astype(np.float32)  # image-like: non-negative, not centred
    f = activations.get(act)
    h, pre, ws = x, [], []
    for l in range(depth):
        w = np.asarray(spec.make(cfg, 100 * seed + l)((h.shape[1], width)), dtype=np.float32)
        ws.append(w)
        s = (h @ w + cfg.bias).astype(np.float64)
        pre.append(s)
        h = f.numpy(s).astype(np.float32)
    g = rng.standard_normal((batch, width)) * f.derivative(pre[-1])
    grads = [g.var()]
    for l in range(depth - 2, -1, -1):
        g = (g.astype(np.float32) @ ws[l + 1].T) * f.derivative(pre[l])
        grads.append(g.var())
    config = {"init": {**vars(cfg)}, "activation": {"name": act}}
    fans = [(n_in, width)] + [(width, width)] * (depth - 1) + [(width, 10)]
    return config, fans, float((x.astype(np.float64) ** 2).mean()), np.array([s.var() for s in pre]), \
        np.array(grads[::-1])


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("init", list(INITS))
def test_mean_field_matches_wide_random_layers(act, init):
    spec = dict(name=init, **INITS[init]) if "name" not in INITS[init] else dict(INITS[init])
    config, fans, m2, q_meas, g_meas = _simulate(act, spec)
    pred = theory.predict_run(config, m2, fans=fans, top_grad=g_meas[-1])
    assert np.abs(np.log(q_meas / pred.preactivation)).max() < RTOL_LOG, (q_meas, pred.preactivation.to_numpy())
    assert np.abs(np.log(g_meas / pred.backprop_grad)).max() < RTOL_LOG, (g_meas, pred.backprop_grad.to_numpy())


def test_wrong_theories_miss_by_more_than_the_tolerance():
    """Negative controls: the same measurements refute a linear-regime prediction for a chaotic tanh
    net, and a prediction that forgets the truncated normal's 0.7737 variance factor."""
    config, fans, m2, q_meas, g_meas = _simulate("tanh", INITS["truncated_normal_tutorial"])
    pred = theory.predict_run(config, m2, fans=fans, top_grad=g_meas[-1])
    assert np.abs(np.log(q_meas / pred.linear_preactivation)).max() > 3 * RTOL_LOG
    assert np.abs(np.log(g_meas / pred.linear_backprop_grad)).max() > 3 * RTOL_LOG
    no_shrink = 784 * 0.1 ** 2 * m2  # sigma_w^2 of layer 1 taken as fan_in * stddev^2
    assert abs(math.log(q_meas[0] / no_shrink)) > RTOL_LOG
    assert abs(math.log(q_meas[0] / pred.preactivation.iloc[0])) < 0.05


def test_run_sigmas_from_the_registry():
    config = {"init": {"name": "truncated_normal", "stddev": 0.1, "bias": 0.1},
              "activation": {"name": "tanh"},
              "dataset": {"name": "mnist"}, "model": {"name": "mlp", "depth": 2, "width": 1000}}
    sig = theory.run_sigmas(config)
    assert sig.sigma_w2 == pytest.approx([784 * 0.00773735, 1000 * 0.00773735, 1000 * 0.00773735], rel=1e-4)
    assert sig.sigma_w2[0] == pytest.approx(6.07, abs=0.01)  # REFERENCE: the TF tutorial on MNIST
    assert (sig.sigma_b2, sig.bias) == (0.0, 0.1)
    glorot = theory.run_sigmas({**config, "init": {"name": "glorot_uniform"}})
    assert glorot.sigma_w2[1] == pytest.approx(1.0)
    critical = theory.run_sigmas({**config, "init": {"name": "critical", "gain": 1.0}, "activation": {"name": "relu"}})
    assert critical.sigma_w2 == pytest.approx([2.0] * 3, rel=1e-6)
    with pytest.raises(ValueError, match="init_info"):
        theory.run_sigmas({**config, "init": {"name": "lsuv"}})
    info = {"layers": [{"layer": "dense_00", "sigma_w2": 3.0}, {"layer": "logits", "sigma_w2": 1.5}]}
    assert list(theory.run_sigmas({**config, "init": {"name": "lsuv"}}, init_info=info).sigma_w2) == [3.0, 1.5]
    cnn = theory.layer_fans({"dataset": {"name": "cifar10"},
                             "model": {"name": "cnn", "depth": 3, "width": 16, "pool_every": 2, "head_width": 0}})
    assert cnn == [(27, 144), (144, 144), (144, 144), (16 * 16 * 16, 10)]


# --------------------------------------------------------------------------- a real run, and the figures


@pytest.fixture(scope="module")
def step0_tables(tmp_path_factory):
    """Two real runs (max_steps=0) on wide layers, collected as a sweep's tables."""
    from initsuite.setup import data
    from initsuite import tables
    from initsuite.configure import compose
    from initsuite.run.train import as_container, run

    root = tmp_path_factory.mktemp("theory")
    base = ["dataset=synthetic", "dataset.image_shape=[28,28,1]", "dataset.n_train=64", "dataset.n_valid=16",
            "dataset.n_test=128", "probes.batch_size=128", "model.depth=4", "model.width=1000",
            "train.max_steps=0", "train.batch_size=32", "train.progress=false", f"paths.results={root}"]
    rows, stats, m2 = [], [], {}
    for init, act in (("truncated_normal_tutorial", "tanh"), ("he_normal", "relu")):
        cfg = compose(base + [f"init={init}", f"activation={act}"])
        r = run(cfg)
        cc = as_container(cfg)
        bundle = data.load(cfg.dataset, seed=int(cfg.seed))
        m2[init] = float((bundle.x_test[: cfg.probes.batch_size].astype(np.float64) ** 2).mean())
        rows.append({"run_id": r.run_id, **tables.identity_columns(cc), "status": r.status, "path": str(r.path),
                     "_config": cc})
        stats.append(r.layer_stats)
    return {"runs": pd.DataFrame(rows), "layer_stats": pd.concat(stats, ignore_index=True),
            "metrics": pd.DataFrame(columns=["run_id", "step", "epoch", "split", "metric", "value"])}, m2


def test_predictions_match_a_real_run_at_initialization(step0_tables):
    tables, m2 = step0_tables
    for row in tables["runs"].to_dict("records"):
        ls = tables["layer_stats"].query("run_id == @row['run_id'] and step == 0")
        meas = ls[(ls.tensor == "preactivation") & (ls.stat == "var") & (ls.layer != "logits")] \
            .sort_values("layer_index").value.to_numpy()
        grads = ls[(ls.tensor == "backprop_grad") & (ls.stat == "var") & (ls.layer != "logits")] \
            .sort_values("layer_index").value.to_numpy()
        # from the input alone (registry variances, the probe batch's second moment)
        pred = theory.predict_run(row["_config"], m2[row["init"]], top_grad=grads[-1])
        assert np.abs(np.log(meas / pred.preactivation)).max() < RTOL_LOG, (row["init"], meas, pred.preactivation)
        assert np.abs(np.log(grads / pred.backprop_grad)).max() < RTOL_LOG, (row["init"], grads, pred.backprop_grad)
        # from the tables alone (anchored at layer 1), with the bias read from the run's config.yaml
        assert theory.run_bias(row) == (0.1 if row["init"] == "truncated_normal_tutorial" else 0.0)
        fs = theory.predict_from_stats(ls, "mlp", 1000, row["activation"], bias=theory.run_bias(row))
        assert np.abs(np.log(fs.measured_preactivation / fs.preactivation)).max() < RTOL_LOG
        assert np.abs(np.log(fs.measured_backprop_grad / fs.backprop_grad)).max() < RTOL_LOG


def test_run_mean_field_reads_realised_sigmas(step0_tables):
    tables, _ = step0_tables
    mf = theory.run_mean_field(tables).set_index("init")
    # truncated normal 0.1 on 1000 units: 1000 * 0.7737 * 0.01 = 7.74, deep in tanh's chaotic phase
    assert mf.loc["truncated_normal_tutorial", "sigma_w2"] == pytest.approx(7.737, rel=0.03)
    assert mf.loc["truncated_normal_tutorial", "phase"] == "chaotic"
    assert mf.loc["he_normal", "sigma_w2"] == pytest.approx(2.0, rel=0.03)
    assert mf.loc["he_normal", "phase"] == "critical"
    td = theory.trainable_depths(tables).set_index("init")
    assert td.loc["he_normal", "trainable_depth"] > 100
    assert 10 < td.loc["truncated_normal_tutorial", "trainable_depth"] < 60


def test_theory_figures(step0_tables):
    from matplotlib.figure import Figure

    from initsuite.analysis import theory_plots

    tables, _ = step0_tables
    fig = theory_plots.variance_by_layer(tables)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]  # first activation (relu), pre-activation panel
    styles = sorted(line.get_linestyle() for line in ax.get_lines())
    assert styles == ["-", ":", "None"]  # measured markers, mean field, linear regime
    measured = [l for l in ax.get_lines() if l.get_linestyle() == "None"][0]
    assert list(measured.get_xdata()) == [1, 2, 3, 4]

    phase = theory_plots.phase_diagram(tables)
    placed = {l.get_label().split(":")[0]: l.get_xydata()[0] for a in phase.axes for l in a.get_lines()
              if l.get_label() and not l.get_label().startswith("_")}
    assert placed["he_normal"][0] == pytest.approx(2.0, rel=0.03)
    assert placed["truncated_normal_tutorial"] == pytest.approx([7.737, 0.01], rel=0.03)  # b = 0.1 -> b^2

    runs = tables["runs"].assign(final_test_error=[0.2, 0.3])
    heat = theory_plots.depth_heatmap({**tables, "runs": runs})
    texts = [t.get_text() for a in heat.axes for t in a.texts]
    assert any(t.startswith("6ξ=") for t in texts)
    assert "20.0" in texts and "30.0" in texts


def test_theory_modules_import_neither_tensorflow_nor_hydra():
    code = ("import sys, initsuite.analysis.theory, initsuite.analysis.theory_plots, initsuite.analysis.verdicts; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'hydra')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("model, extra", [("cnn", ["model.depth=2", "model.width=32"]),
                                          ("mlp", ["model.depth=1", "model.width=16"])])
def test_run_sigmas_follow_the_realised_kernel_shapes(make_cfg, model, extra):
    """Keras' orthogonal orthogonalises a (prod(shape[:-1]), shape[-1]) matrix: a first conv kernel
    (3, 3, 1, 32) has entries of variance 1/32 (not 1/max(fans) = 1/288), a (64, 16) dense one 1/64."""
    from initsuite.measure.probes import main_kernel
    from initsuite.run.train import as_container, build_model

    cfg = make_cfg("dataset=synthetic", "dataset.image_shape=[8,8,1]", f"model={model}", "init=orthogonal", *extra)
    built = build_model(cfg, (8, 8, 1), 10)
    kernels = [np.asarray(main_kernel(p.kernel_layer).numpy(), dtype=np.float64) for p in built.points]
    config = as_container(cfg)
    assert [k.shape for k in kernels] == theory.layer_shapes(config)
    sig = theory.run_sigmas(config).sigma_w2
    for k, s in zip(kernels, sig):
        fan_in = initializers.compute_fans(k.shape)[0]
        assert s / fan_in == pytest.approx(k.var(), rel=0.02), k.shape
    first = 1 / 32 if model == "cnn" else 1 / 64
    assert sig[0] / initializers.compute_fans(kernels[0].shape)[0] == pytest.approx(first, rel=1e-9)
