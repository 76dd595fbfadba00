"""Every figure function on small synthetic tables: files written, non-empty, axes labelled,
one colour per initializer everywhere; and plotting never imports TensorFlow or Hydra."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from initsuite.analysis import plots
from initsuite.tables import CONFIG_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def synthetic_tables(inits=("standard", "glorot_uniform", "truncated_normal"), activations=("tanh", "softsign"),
                     depths=(3,), seeds=(0, 1), steps=(0, 10, 20, 30), datasets=("synthetic",),
                     experiment="unit", diverge=("truncated_normal", "softsign"), bins=12):
    """Collected tables in the suite's schema with the paper's pattern built in: under
    'standard' Var[z] falls by 3x per layer and Var[dC/ds] grows 3x per layer toward the
    output; every other init keeps both level. One (init, activation) pair diverges."""
    rng = np.random.default_rng(0)
    runs, ls, met, hist, ev = [], [], [], [], []
    k = 0
    for dataset in datasets:
        for act in activations:
            for init in inits:
                for depth in depths:
                    for seed in seeds:
                        k += 1
                        rid = f"r{k:04d}"
                        cfg = dict(experiment=experiment, dataset=dataset, data_source="files", model="mlp",
                                   depth=depth, width=32,
                                   init=init, init_name="truncated_normal" if "truncated" in init else init,
                                   activation=act, optimizer="sgd", lr=0.05, batch_size=10, epochs=1, seed=seed,
                                   tune_axis=None, tune_metric=None)
                        cfg["init.bias"] = 0.0
                        diverged = (init, act) == tuple(diverge) and seed == 0
                        last = steps[1] if diverged else steps[-1]
                        err = {"standard": 0.3, "glorot_uniform": 0.2}.get(init, 0.25) + 0.01 * seed
                        runs.append(dict(run_id=rid, **cfg, status="diverged" if diverged else "done",
                                         first_nonfinite_step=last if diverged else None,
                                         first_nonfinite_layer="dense_01" if diverged else None,
                                         first_nonfinite_phase="forward" if diverged else None,
                                         final_train_loss=np.nan if diverged else 1.0, final_valid_loss=1.0,
                                         final_test_loss=1.0, final_train_error=err, final_valid_error=err,
                                         final_test_error=np.nan if diverged else err, wall_s=1.0))
                        for step in [s for s in steps if s <= last]:
                            for split in ("train", "valid", "test"):
                                for metric, v in (("loss", 2.3 * np.exp(-step / 20) + err),
                                                  ("error", 0.9 * np.exp(-step / 20) + err)):
                                    met.append(dict(run_id=rid, step=step, epoch=step / 30, split=split,
                                                    metric=metric, value=v + 0.01 * rng.random(), **cfg))
                            layers = [f"dense_{i:02d}" for i in range(depth)] + ["logits"]
                            for li, layer in enumerate(layers):
                                hidden = layer != "logits"
                                f = 3.0 if init == "standard" else 1.0
                                avar = 0.3 * f ** -li * (1 + step / 100)
                                gvar = 1e-6 * f ** (li - depth)
                                vals = {"backprop_grad": gvar, "weight_grad": 1e-5, "weight": 0.01,
                                        "preactivation": avar * 2}
                                if hidden:
                                    vals["activation"] = avar
                                for tensor, var in vals.items():
                                    sd = np.sqrt(var)
                                    stats = dict(mean=0.5 if act == "sigmoid" else 0.0, var=var, std=sd,
                                                 p02=-2 * sd, p50=0.0, p98=2 * sd, zero_frac=0.0,
                                                 nonfinite_count=0.0)
                                    if tensor == "activation":
                                        stats["saturated_frac"] = min(1.0, 0.05 * li * step / 30)
                                    for stat, value in stats.items():
                                        ls.append(dict(run_id=rid, step=step, epoch=step / 30, layer=layer,
                                                       layer_index=li, tensor=tensor, stat=stat, value=value, **cfg))
                                    if step in (steps[0], last) and tensor != "weight":
                                        edges = np.linspace(-4 * sd, 4 * sd, bins + 1)
                                        centers = (edges[:-1] + edges[1:]) / 2
                                        counts = np.round(1000 * np.exp(-centers ** 2 / (2 * var))).astype(int)
                                        for b in range(bins):
                                            hist.append(dict(run_id=rid, step=step, epoch=step / 30, layer=layer,
                                                             layer_index=li, tensor=tensor, bin=b, left=edges[b],
                                                             right=edges[b + 1], count=int(counts[b]), **cfg))
                        if diverged:
                            ev.append(dict(run_id=rid, step=last, epoch=last / 30, phase="forward", layer="dense_01",
                                           layer_index=1, tensor="activation", kind="first_nonfinite",
                                           detail="first NaN/Inf", **cfg))
    return {"runs": pd.DataFrame(runs), "layer_stats": pd.DataFrame(ls), "metrics": pd.DataFrame(met),
            "histograms": pd.DataFrame(hist), "events": pd.DataFrame(ev)}


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


def _data_axes(fig):
    """Axes that draw data (not colorbars)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and (ax.lines or ax.images or ax.collections)]


def _check_labelled(fig):
    axes = _data_axes(fig)
    assert axes, "the figure draws nothing"
    rows = {}
    for ax in axes:
        assert ax.get_title()
        rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax.get_ylabel())
    for row, labels in rows.items():  # shared y axes: the row's first panel carries the label
        assert any(labels), f"row {row}: y axis unlabelled"
    # x labels: at least the bottom row of each column
    assert any(ax.get_xlabel() for ax in axes)
    assert fig.get_suptitle()


def _legend_labels(fig):
    return {t.get_text() for leg in fig.legends for t in leg.get_texts()} | {
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}


def test_schema_of_synthetic_tables_matches_the_contract(tables):
    for name, df in tables.items():
        assert set(CONFIG_COLUMNS) <= set(df.columns), name


def test_layer_profile_log_scale_one_line_per_init(tables, tmp_path):
    fig = plots.layer_profile(tables["layer_stats"])
    _check_labelled(fig)
    axes = _data_axes(fig)
    assert len(axes) == 2 * 2  # tensors x activations
    assert all(ax.get_yscale() == "log" for ax in axes)
    assert _legend_labels(fig) == {"standard", "glorot_uniform", "truncated_normal"}
    # the line of 'standard' in the activation panel falls 3x per layer: what was drawn is the data
    ax = axes[0]
    line = next(ln for ln in ax.lines if ln.get_label() == "standard")
    y = np.asarray(line.get_ydata())
    assert np.allclose(y[1:] / y[:-1], 1 / 3)
    assert ax.get_xlabel() == "" or "layer" in ax.get_xlabel()
    assert "layer" in axes[-1].get_xlabel()
    paths = plots.save(fig, tmp_path, "profile")
    assert set(paths) == {"png", "pdf"}
    assert all(p.stat().st_size > 1000 for p in paths.values())
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"


def test_colours_are_the_same_for_an_init_in_every_figure(tables):
    colour = {}
    for fig in (plots.layer_profile(tables["layer_stats"]), plots.training_curves(tables["metrics"]),
                plots.saturation_over_training(tables["layer_stats"]),
                plots.variance_over_training(tables["layer_stats"], "backprop_grad")):
        for ax in fig.axes:
            for ln in ax.lines:
                if ln.get_label() in ("standard", "glorot_uniform", "truncated_normal"):
                    colour.setdefault(ln.get_label(), set()).add(ln.get_color())
    assert set(colour) == {"standard", "glorot_uniform", "truncated_normal"}
    for name, seen in colour.items():
        assert seen == {plots.INIT_COLORS[name]}, name


def test_init_colors_distinct_for_unknown_names():
    c = plots.init_colors(["my_init_a", "my_init_b", "glorot_uniform", "standard"])
    assert len(set(c.values())) == 4
    assert c["glorot_uniform"] == plots.INIT_COLORS["glorot_uniform"]
    assert plots.init_colors(["my_init_a"])["my_init_a"] == plots.init_color("my_init_a")


def test_variance_over_training_has_a_row_per_selected_step(tables):
    fig = plots.variance_over_training(tables["layer_stats"], "activation", n_steps=3)
    axes = _data_axes(fig)
    assert len(axes) == 3 * 2
    titles = {ax.get_title() for ax in axes}
    assert any("step 0" in t for t in titles) and any("step 30" in t for t in titles)
    _check_labelled(fig)


def test_training_curves_draw_seed_bands_and_percent_errors(tables):
    fig = plots.training_curves(tables["metrics"])
    _check_labelled(fig)
    axes = _data_axes(fig)
    assert any("error (%)" in ax.get_ylabel() for ax in axes)
    assert any(ax.collections for ax in axes)  # 2 seeds -> min-max bands
    err_ax = next(ax for ax in axes if "test error" in ax.get_ylabel())
    assert max(max(ln.get_ydata()) for ln in err_ax.lines) > 50  # percent, not a fraction
    assert "step" in err_ax.get_xlabel()


def test_heatmaps_show_error_and_divergence_with_first_nan_step():
    t = synthetic_tables(depths=(2, 3), seeds=(0,), steps=(0, 10, 20))
    fig = plots.outcome_heatmaps(t["runs"])
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2 * 2
    texts = [x.get_text() for ax in heat for x in ax.texts]
    assert "1/1\n@10" in texts  # the diverged cell: 1 of 1 run, first NaN at step 10
    assert "div" in texts
    assert "20.0" in texts  # glorot_uniform's 20 % error
    for ax in heat:
        assert ax.get_xlabel() == "depth (hidden layers)"
        assert [t.get_text() for t in ax.get_yticklabels()] == ["glorot_uniform", "standard", "truncated_normal"]


def test_saturation_has_a_panel_per_activation_and_layer(tables):
    fig = plots.saturation_over_training(tables["layer_stats"])
    _check_labelled(fig)
    assert len(_data_axes(fig)) == 2 * 3
    assert any(ax.get_ylabel() == "saturated units (%)" for ax in fig.axes)


def test_layer_traces_and_histograms(tables, tmp_path):
    fig = plots.layer_traces(tables["layer_stats"], [("tanh", dict(activation="tanh", init="standard"))],
                             lines=(("p98", "o"), ("std", "-o")), ylabel="activation value", title="t")
    _check_labelled(fig)
    assert len(fig.axes[0].lines) == 2 * 3  # 2 stats x 3 layers
    fig = plots.layer_histograms(tables["histograms"], [("a", dict(activation="tanh", init="standard")),
                                                         ("b", dict(activation="tanh", init="glorot_uniform"))],
                                 "activation", 0, title="h")
    _check_labelled(fig)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    h = plots.normalized_histograms(tables["histograms"])
    sums = h.groupby(["run_id", "step", "layer", "tensor"]).fraction.sum()
    assert np.allclose(sums, 1.0)
    # a selection with no data draws a labelled "no data" panel rather than failing
    fig = plots.layer_histograms(tables["histograms"], [("none", dict(activation="relu"))], "activation")
    assert fig.axes[0].texts


def test_comparison_figures_writes_every_figure_per_slice(tmp_path):
    t = synthetic_tables(datasets=("synthetic", "mnist"), seeds=(0,), steps=(0, 10))
    written = plots.comparison_figures(t, tmp_path, formats=("png",))  # PDF: test_layer_profile_...
    names = {f.name for f in written}
    for base in ("variance_at_init", "variance_activation_training", "variance_backprop_grad_training",
                 "training_curves", "outcome_heatmaps", "saturation"):
        for ds in ("synthetic", "mnist"):
            assert f"{base}__dataset-{ds}" in names
    for f in written:
        assert (tmp_path / f"{f.name}.png").stat().st_size > 1000 and f.paths == {"png": tmp_path / f"{f.name}.png"}


def test_selected_steps():
    assert plots.selected_steps(range(0, 101, 10), 3) == [0, 50, 100]
    assert plots.selected_steps([0, 5], 4) == [0, 5]


def test_plotting_imports_neither_tensorflow_nor_hydra():
    code = ("import sys; import initsuite.analysis.plots, initsuite.analysis.report, initsuite.analysis.paper; "
            "bad = [m for m in ('tensorflow', 'keras', 'hydra', 'omegaconf') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_varying_parameter_is_a_line_of_its_own_everywhere(tmp_path):
    """Two stddevs of one initializer: never averaged, named in every legend, row and ranking."""
    from initsuite.analysis import paper, theory_plots, verdicts
    from initsuite.sweep import summary_table

    base = synthetic_tables(inits=("truncated_normal",), activations=("tanh",), depths=(3, 5), diverge=("-", "-"))
    t = {name: pd.concat([df.assign(**{"init.stddev": 0.05}),
                          df.assign(**{"init.stddev": 0.5}, run_id=df.run_id + "b",
                                    **({"value": df.value * 10} if "value" in df else {}))], ignore_index=True)
         if "run_id" in df else df for name, df in base.items()}
    names = {"truncated_normal (stddev=0.05)", "truncated_normal (stddev=0.5)"}
    s = summary_table(t["runs"])
    assert len(s) == 4 and set(s["init.stddev"]) == {0.05, 0.5} and (s.runs == 2).all()
    fig = plots.layer_profile(t["layer_stats"])
    assert {x.get_text() for leg in fig.legends for x in leg.get_texts()} == names
    lines = [l for ax in fig.axes for l in ax.get_lines() if l.get_label() in names]
    tops = {l.get_label(): l.get_ydata()[0] for l in lines}
    assert tops["truncated_normal (stddev=0.5)"] == pytest.approx(10 * tops["truncated_normal (stddev=0.05)"])
    fig = plots.outcome_heatmaps(t["runs"])
    assert {x.get_text() for x in fig.axes[0].get_yticklabels()} == names
    r = verdicts.ranking(t)
    assert len(r) == 4 and set(r["init.stddev"]) == {0.05, 0.5} and "init.stddev" in r.columns
    t1 = paper.table1(t["runs"], t["metrics"])
    assert {"Tanh (truncated_normal (stddev=0.05))", "Tanh (truncated_normal (stddev=0.5))"} <= set(t1.type)
    fig = theory_plots.depth_heatmap(t)
    assert {x.get_text() for x in fig.axes[0].get_yticklabels()} == names
    with pytest.raises(ValueError, match="init.stddev"):
        plots.seed_band(t["metrics"], "step", ["init", "split", "metric"])


def test_train_batch_std_marks_where_a_run_went_non_finite_instead_of_drawing_it(tables):
    """A diverging run's row at its first NaN step describes only the finite entries (here std 0):
    the curve stops before it, the panel stays on a log axis and names the step."""
    from initsuite.tables import TRAIN

    ls = tables["layer_stats"].copy()
    ls["batch"] = TRAIN
    run = tables["runs"].query("status == 'diverged'").iloc[0]
    step = int(run.first_nonfinite_step)
    at = (ls.run_id == run.run_id) & (ls.step == step) & (ls.layer_index == 1) & (ls.tensor == "activation")
    ls.loc[at & (ls.stat == "nonfinite_count"), "value"] = 5.0
    ls.loc[at & (ls.stat == "std"), "value"] = 0.0
    fig = plots.train_batch_std(ls)
    panel = [ax for ax in fig.axes if ax.get_title().startswith(f"{run.init}\n{run.activation}: activ")]
    assert len(panel) == 1
    ax = panel[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == [f"non-finite from step {step}\n(1/2 runs)"]
    ys = np.concatenate([line.get_ydata() for line in ax.lines if len(line.get_xdata()) > 2])
    assert np.all(ys > 0)  # the all-finite-entries std of 0 is not drawn
    # the other panels carry no mark
    assert all(not a.texts for a in fig.axes if a is not ax and a.get_title())
