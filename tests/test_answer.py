"""The plain-words answer is built from the tables: change the tables and the answer changes."""

import math

import numpy as np
import pandas as pd
import pytest

from initsuite.analysis import answer, report
from initsuite.setup.initializers import TRUNCATED_VARIANCE_FACTOR as TVF

NAMES = {"truncated_normal_tf1": "truncated_normal", "truncated_normal_tutorial": "truncated_normal"}


def _run(rid, init, model="caffe_lenet", depth=3, width=500, activation="relu", seed=0, status="done",
         error=0.02, nan=None):
    step, layer, phase, tensor = nan or (None, None, None, None)
    return dict(run_id=rid, experiment="caffe_to_tensorflow", dataset="mnist", model=model, depth=depth, width=width,
                init=init, init_name=NAMES.get(init, init), activation=activation, optimizer="sgd", lr=0.05,
                batch_size=32, epochs=1, seed=seed, status=status, final_test_error=error if status == "done" else np.nan,
                first_nonfinite_step=step, first_nonfinite_layer=layer, first_nonfinite_phase=phase,
                first_nonfinite_tensor=tensor)


def _stats(rid, layers, weight, act, grad):
    rows = []
    for i, (l, w, a, g) in enumerate(zip(layers, weight, act, grad)):
        for tensor, v in (("weight", w), ("activation", a), ("backprop_grad", g), ("preactivation", a)):
            if v is not None:
                rows.append(dict(run_id=rid, step=0, epoch=0, layer=l, layer_index=i, tensor=tensor, stat="var",
                                 value=float(v)))
    return rows


LENET = ["conv_00", "conv_01", "dense_00", "logits"]
# Caffe's xavier: 1/fan_in; Glorot: 2/(fan_in+fan_out) on LeNet's (25,500), (500,1250), (800,500), (500,10)
FANS = [(25, 500), (500, 1250), (800, 500), (500, 10)]
XAVIER_W = [1 / fi for fi, fo in FANS]
GLOROT_W = [2 / (fi + fo) for fi, fo in FANS]


def _tables(errors, xavier_act=(1.0, 0.9, 0.8, None), glorot_act=(0.2, 0.1, 0.12, None), tf1_nan=(1, "dense_00",
            "forward", "preactivation"), events=None):
    runs, ls = [], []
    for k, (init, err) in enumerate(errors.items()):
        for seed in (0, 1):
            rid = f"{init}-{seed}"
            diverged = init == "truncated_normal_tf1"
            runs.append(_run(rid, init, seed=seed, status="diverged" if diverged else "done",
                             error=err + 0.001 * seed, nan=tf1_nan if diverged else None))
            w = {"caffe_xavier": XAVIER_W, "glorot_uniform": GLOROT_W}.get(init, [TVF * 1.0] * 4 if diverged else XAVIER_W)
            act = {"caffe_xavier": xavier_act, "glorot_uniform": glorot_act}.get(init, xavier_act)
            ls += _stats(rid, LENET, w, act, [1e-4, 1e-4, 1e-4, 1e-3])
    return {"runs": pd.DataFrame(runs), "layer_stats": pd.DataFrame(ls),
            "metrics": pd.DataFrame(columns=["run_id", "step", "split", "metric", "value"]),
            "events": events if events is not None else pd.DataFrame(
                columns=["run_id", "step", "epoch", "phase", "layer", "layer_index", "tensor", "kind", "detail"])}


BASE = {"caffe_xavier": 0.020, "he_normal": 0.022, "glorot_uniform": 0.080, "truncated_normal_tf1": 0.9}


def _one(a, key):
    cs = a.by_key(key)
    assert len(cs) == 1, [c.text for c in a.claims]
    return cs[0]


def test_which_init_trains_like_caffe_xavier_follows_the_errors():
    c = _one(answer.answer(_tables(BASE)), "trains_like")
    assert c.evidence["reference_error"] == pytest.approx(0.0205)
    assert c.evidence["like"] == ["he_normal"]
    assert set(c.evidence["unlike"]) == {"glorot_uniform", "truncated_normal_tf1"}
    assert c.evidence["closest_tf"] == "he_normal"
    assert "he_normal 2.2%" in c.text and "truncated_normal_tf1 (diverged in 2/2)" in c.text
    swapped = {**BASE, "he_normal": 0.080, "glorot_uniform": 0.022}
    c2 = _one(answer.answer(_tables(swapped)), "trains_like")
    assert c2.evidence["like"] == ["glorot_uniform"] and c2.evidence["closest_tf"] == "glorot_uniform"
    assert "he_normal" in c2.evidence["unlike"]
    better = _one(answer.answer(_tables({**BASE, "glorot_uniform": 0.005})), "trains_like")  # better counts too
    assert better.evidence["like"] == ["glorot_uniform", "he_normal"] and better.evidence["closest_tf"] == "he_normal"


def test_xavier_vs_glorot_ratios_are_the_tables():
    c = _one(answer.answer(_tables(BASE)), "xavier_vs_glorot")
    for layer, (gx, xx) in zip(LENET, zip(GLOROT_W, XAVIER_W)):
        assert c.evidence["weight_var_ratio"][layer] == pytest.approx(gx / xx)
    assert c.evidence["weight_var_ratio"]["conv_00"] == pytest.approx(2 * 25 / 525)  # 0.095: ten times smaller
    assert c.evidence["activation_var_ratio"]["conv_01"] == pytest.approx(0.1 / 0.9)
    assert c.evidence["differs"] and "lecun_uniform" in c.text and "conv_00 0.0952x" in c.text
    # if glorot drew what caffe_xavier draws (square layers), the claim says they agree
    t = _tables(BASE)
    t["layer_stats"].loc[t["layer_stats"].run_id.str.startswith("glorot"), "value"] = \
        t["layer_stats"].loc[t["layer_stats"].run_id.str.startswith("caffe_xavier"), "value"].to_numpy()
    same = _one(answer.answer(t), "xavier_vs_glorot")
    assert not same.evidence["differs"] and "agree" in same.text


def _mlp_tables(stddev, activation):
    runs, ls = [], []
    layers = [f"dense_{i:02d}" for i in range(10)] + ["logits"]
    for init, sd in (("truncated_normal_tutorial", stddev), ("caffe_xavier", None)):
        rid = f"{init}-{activation}"
        runs.append(_run(rid, init, model="mlp", depth=10, width=256, activation=activation, error=0.1))
        w = [TVF * sd ** 2] * 11 if sd else [1 / 256] * 11
        ls += _stats(rid, layers, w, [1.0 * 1.5 ** i for i in range(10)] + [None], [1e-3] * 11)
    return {"runs": pd.DataFrame(runs), "layer_stats": pd.DataFrame(ls)}


@pytest.mark.parametrize("stddev,activation,phase", [(1.0, "relu", "chaotic"), (0.05, "relu", "ordered"),
                                                     (1.0, "tanh", "chaotic"), (0.03, "tanh", "ordered")])
def test_truncated_normal_sigma_w2_and_phase(stddev, activation, phase):
    c = _one(answer.answer(_mlp_tables(stddev, activation)), "truncated_normal")
    assert c.evidence["stddev"] == pytest.approx(stddev)
    assert c.evidence["sigma_w2"] == pytest.approx(TVF * 256 * stddev ** 2)
    assert c.evidence["phase"] == phase
    crit = {"relu": 2.0, "tanh": 1.0}[activation]
    assert c.evidence["critical_fan_in"] == pytest.approx(crit / (TVF * stddev ** 2))
    assert c.evidence["act_var_top_over_first"] == pytest.approx(1.5 ** 9)
    assert phase in c.text


def test_first_nan_location_comes_from_runs_then_events():
    c = _one(answer.answer(_tables(BASE)), "first_nan")
    assert c.evidence["diverged"]["truncated_normal_tf1"]["step"] == 1
    assert "step 1 (forward phase, layer dense_00, preactivation)" in c.text
    assert set(c.evidence["never"]) == {"caffe_xavier", "he_normal", "glorot_uniform"}
    moved = _one(answer.answer(_tables(BASE, tf1_nan=(7, "conv_01", "backward", "backprop_grad"))), "first_nan")
    assert "step 7 (backward phase, layer conv_01, backprop_grad)" in moved.text
    # no location in the runs table: the events table's first_nonfinite row
    ev = pd.DataFrame([dict(run_id="truncated_normal_tf1-0", step=3, epoch=0, phase="update", layer="conv_00",
                            layer_index=0, tensor="weight", kind="first_nonfinite", detail="")])
    from_events = _one(answer.answer(_tables(BASE, tf1_nan=(None, None, None, None), events=ev)), "first_nan")
    assert "step 3 (update phase, layer conv_00, weight)" in from_events.text
    calm = _one(answer.answer(_tables({k: v for k, v in BASE.items() if k != "truncated_normal_tf1"})), "first_nan")
    assert "no run produced a NaN" in calm.text


def test_report_opens_with_the_answer_only_for_thread_sweeps(tmp_path):
    t = _tables(BASE)
    assert answer.applies(t["runs"])
    html = answer.write(t, tmp_path)
    assert (tmp_path / "answer.md").read_text().startswith("## The answer")
    out = report.write_report(tmp_path, t, [], opening=html).read_text()
    assert out.index("id='answer'") < out.index("id='contents'")
    assert _one(answer.answer(t), "trains_like").text in out.replace("&#x27;", "'")
    plain = t["runs"][t["runs"].init.isin(["glorot_uniform", "he_normal"])]
    assert not answer.applies(plain)
    assert answer.write({**t, "runs": plain}, tmp_path / "other") is None
