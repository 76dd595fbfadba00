"""Verdicts: each check fires on the pattern it names, not on its neighbours, and carries its
evidence and threshold; annotate/ranking on the tables of real tiny runs."""

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from initsuite.analysis import verdicts
from initsuite.analysis.verdicts import diagnose


def _stats(grad_var=None, act_std=None, sat=None, zero=None, steps=(0,), logits=True):
    """layer_stats of a run with len(...) hidden layers (plus a logits layer), the same at every step."""
    n = len(next(v for v in (grad_var, act_std, sat, zero) if v is not None))
    grad_var = grad_var if grad_var is not None else [1.0] * n
    act_std = act_std if act_std is not None else [0.5] * n
    sat = sat if sat is not None else [0.0] * n
    zero = zero if zero is not None else [0.0] * n
    rows = []
    for step in steps:
        for i in range(n):
            layer = f"dense_{i:02d}"
            for tensor, stat, value in (("backprop_grad", "var", grad_var[i]), ("activation", "std", act_std[i]),
                                        ("activation", "saturated_frac", sat[i]), ("activation", "zero_frac", zero[i]),
                                        ("preactivation", "var", 1.0)):
                rows.append(dict(run_id="r", step=step, epoch=0.0, layer=layer, layer_index=i, tensor=tensor,
                                 stat=stat, value=float(value)))
        if logits:
            rows.append(dict(run_id="r", step=step, epoch=0.0, layer="logits", layer_index=n, tensor="backprop_grad",
                             stat="var", value=1e-3))
    return pd.DataFrame(rows)


def _metrics(losses=(2.3, 2.0), steps=(0, 10)):
    return pd.DataFrame([dict(run_id="r", step=s, epoch=0.0, split="train", metric="loss", value=v)
                         for s, v in zip(steps, losses)])


RUN = {"run_id": "r", "status": "done", "activation": "tanh"}


def names(vs):
    return [v.name for v in vs]


def test_healthy_when_nothing_is_wrong():
    vs = diagnose(RUN, _stats(grad_var=[1.2, 1.1, 1.0, 1.0, 0.9], act_std=[0.6, 0.55, 0.5, 0.5, 0.5]), _metrics())
    assert names(vs) == ["healthy"] and vs[0].severity == "ok"
    assert vs[0].evidence["gradient_ratio"] == pytest.approx(1.2 / 0.9)


def test_vanishing_gradients_glorot_standard_pattern():
    """Glorot & Bengio's standard init: dC/ds shrinks ~3x per layer toward the input."""
    grad = [3.0 ** -(4 - i) for i in range(5)]  # first / top = 1/81
    vs = diagnose(RUN, _stats(grad_var=grad), _metrics())
    v = vs[0]
    assert names(vs) == ["vanishing_gradients"] and v.severity == "warning"
    assert v.evidence["ratio"] == pytest.approx(1 / 81)
    assert v.evidence["first_layer"] == "dense_00" and v.evidence["top_layer"] == "dense_04"  # not the logits
    assert "1/10" in v.threshold and "0.0123" in v.message and "at initialization" in v.message


def test_gradient_ratio_threshold_is_the_boundary():
    just_inside = diagnose(RUN, _stats(grad_var=[0.11, 1.0]), _metrics())
    just_outside = diagnose(RUN, _stats(grad_var=[0.09, 1.0]), _metrics())
    assert names(just_inside) == ["healthy"] and names(just_outside) == ["vanishing_gradients"]
    assert names(diagnose(RUN, _stats(grad_var=[11.0, 1.0]), _metrics())) == ["exploding_gradients"]


def test_activations_collapsing_and_exploding():
    halving = [0.8 / 2 ** i for i in range(5)]  # top / first = 1/16
    vs = diagnose(RUN, _stats(act_std=halving), _metrics())
    assert names(vs) == ["activations_collapsing"] and vs[0].evidence["ratio"] == pytest.approx(1 / 16)
    relu = {**RUN, "activation": "relu"}
    assert "activations_exploding" in names(diagnose(relu, _stats(act_std=[1, 3, 9, 27, 81]), _metrics()))


def test_saturation_for_tanh_dead_units_for_relu():
    sat = [0.1, 0.2, 0.3, 0.6, 0.9]
    vs = diagnose(RUN, _stats(sat=sat), _metrics())
    assert names(vs) == ["saturated"]
    assert vs[0].evidence["layers"] == ["dense_03", "dense_04"] and vs[0].evidence["worst_layer"] == "dense_04"
    relu = {**RUN, "activation": "relu"}
    # ReLU's flat half is its zero region: saturated_frac ~ 0.5 is normal, dead units judge it
    assert names(diagnose(relu, _stats(sat=[0.5] * 5, zero=[0.5] * 5), _metrics())) == ["healthy"]
    vs = diagnose(relu, _stats(sat=[0.5] * 5, zero=[0.5, 0.5, 0.6, 0.95, 0.99]), _metrics())
    assert names(vs) == ["dead_relus"] and vs[0].evidence["layers"] == ["dense_03", "dense_04"]
    assert "90%" in vs[0].threshold


def test_late_problems_are_reported_with_their_step():
    stats = pd.concat([_stats(sat=[0.0] * 3, steps=(0,)), _stats(sat=[0.0, 0.1, 0.8], steps=(100,))])
    vs = diagnose(RUN, stats, _metrics())
    assert names(vs) == ["saturated"] and vs[0].evidence["step"] == 100 and "at step 100" in vs[0].message


def test_divergence_names_step_layer_and_phase():
    row = {**RUN, "status": "diverged", "first_nonfinite_step": 7, "first_nonfinite_layer": "dense_03",
           "first_nonfinite_phase": "forward", "first_nonfinite_tensor": "preactivation"}
    vs = diagnose(row, _stats(grad_var=[1.0] * 3), _metrics())
    v = vs[0]
    assert v.name == "diverged" and v.severity == "error"
    assert v.evidence == dict(step=7, layer="dense_03", phase="forward", tensor="preactivation")
    assert "step 7" in v.message and "forward" in v.message and "dense_03" in v.message


def test_rising_loss_flags_the_learning_rate():
    vs = diagnose(RUN, _stats(grad_var=[1.0] * 3), _metrics((2.3, 3.0, 1.0), (0, 10, 20)))
    assert names(vs) == ["learning_rate_too_large"]
    assert vs[0].evidence["loss_step0"] == pytest.approx(2.3) and vs[0].evidence["step"] == 10
    assert names(diagnose(RUN, _stats(grad_var=[1.0] * 3), _metrics((2.3, 2.4)))) == ["healthy"]  # +4 %: noise


def test_unfinished_runs_are_not_called_healthy():
    failed = diagnose({**RUN, "status": "failed", "error": "ValueError: boom"}, _stats(grad_var=[1.0] * 3), None)
    assert names(failed) == ["failed"] and "boom" in failed[0].message and failed[0].severity == "error"
    assert names(diagnose({**RUN, "status": "running"}, None, None)) == ["running"]
    assert names(diagnose(RUN, None, None)) == ["unmeasured"]


def test_verdict_text_has_evidence_and_threshold():
    v = diagnose(RUN, _stats(grad_var=[0.01, 1.0]), _metrics())[0]
    assert v.text().startswith("vanishing_gradients: ") and "(threshold: first/top < 1/10)" in v.text()


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Two tiny runs as a sweep's tables: a healthy one and Glorot & Bengio's standard init on a
    deeper tanh net."""
    from initsuite import tables
    from initsuite.configure import compose
    from initsuite.run.train import as_container, run

    root = tmp_path_factory.mktemp("verdicts")
    base = [*TINY, "train.progress=false", f"paths.results={root}", "train.max_steps=8"]
    rows, ls, ms = [], [], []
    for extra in (["init=glorot_uniform"], ["init=standard", "model.depth=6", "model.width=128"]):
        cfg = compose(base + ["activation=tanh"] + extra)
        r = run(cfg)
        rows.append({"run_id": r.run_id, **tables.identity_columns(as_container(cfg)), "status": r.status,
                     **{k: r.info.get(k) for k in ("first_nonfinite_step", "first_nonfinite_layer",
                                                   "first_nonfinite_phase", "first_nonfinite_tensor",
                                                   "final_test_error", "final_test_loss")}})
        ls.append(r.layer_stats)
        ms.append(r.metrics)
    return {"runs": pd.DataFrame(rows), "layer_stats": pd.concat(ls, ignore_index=True),
            "metrics": pd.concat(ms, ignore_index=True)}


def _with_more_runs(tables):
    """Two more initializers of the shallow architecture: one perfect, one that diverged."""
    runs = tables["runs"]
    base = runs.iloc[0].to_dict()
    extra = [{**base, "run_id": "x1", "init": "he_normal", "status": "done", "final_test_error": 0.0},
             {**base, "run_id": "x2", "init": "constant", "status": "diverged", "final_test_error": np.nan,
              "first_nonfinite_step": 0, "first_nonfinite_layer": "dense_01", "first_nonfinite_phase": "forward",
              "first_nonfinite_tensor": "preactivation"}]
    return {**tables, "runs": pd.DataFrame(runs.to_dict("records") + extra)}


def test_annotate_adds_verdicts_to_the_runs_table(tables):
    t = _with_more_runs(tables)
    out = verdicts.annotate(t)
    assert len(out) == 4 and list(out.columns[: len(t["runs"].columns)]) == list(t["runs"].columns)
    by_init = out.set_index("init")
    assert "vanishing_gradients" in by_init.loc["standard", "verdicts"]
    assert "threshold: first/top < 1/10" in by_init.loc["standard", "verdict_text"]
    assert "vanishing" not in by_init.loc["glorot_uniform", "verdicts"]
    assert by_init.loc["constant", "verdicts"] == "diverged"  # no tables of its own: the runs row speaks
    assert "step 0, forward phase, layer dense_01" in by_init.loc["constant", "verdict_text"]


def test_ranking_orders_initializers_by_final_error_within_each_architecture(tables):
    rank = verdicts.ranking(_with_more_runs(tables))
    assert set(rank.columns) >= {"architecture", "rank", "init", "error", "runs", "diverged", "verdicts"}
    shallow = rank[rank.depth == 3].sort_values("rank")
    assert list(shallow["rank"]) == [1, 2, 3]
    assert list(shallow.init) == ["he_normal", "glorot_uniform", "constant"]  # the diverged one last
    assert shallow.architecture.iloc[0] == "mlp 3x32 tanh on synthetic"
    assert list(shallow.diverged) == [0, 0, 1] and shallow.verdicts.iloc[-1] == "diverged"
    deep = rank[rank.depth == 6]
    assert list(deep["rank"]) == [1] and "vanishing_gradients" in deep.verdicts.iloc[0]
