"""Tests for initsuite.analysis.selection (tuned-axis selection) and initsuite.analysis.stats (Welch's t)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from initsuite.analysis import selection as sel, stats

COLS = ["dataset", "activation", "init", "lr", "seed"]


def _runs(errors):
    """errors: {(activation, init, lr): [valid error per seed]} -> a runs table."""
    rows = []
    for (act, init, lr), errs in errors.items():
        for seed, e in enumerate(errs):
            rows.append(dict(run_id=f"{act}-{init}-{lr}-{seed}", dataset="d", activation=act, init=init, lr=lr,
                             seed=seed, status="done" if e is not None else "diverged",
                             final_valid_error=e, final_test_error=e))
    return pd.DataFrame(rows)


def test_each_group_gets_the_axis_value_with_the_best_mean_over_seeds():
    runs = _runs({("tanh", "standard", 0.01): [0.30, 0.32, 0.31], ("tanh", "standard", 0.1): [0.20, 0.45, 0.40],
                  ("tanh", "glorot", 0.01): [0.25, 0.26, 0.27], ("tanh", "glorot", 0.1): [0.21, 0.22, 0.20]})
    s = sel.select(runs, COLS, "optimizer.lr", sel.scores(runs))  # optimizer.lr -> the lr column
    c = s.choices.set_index("init")
    assert c.at["standard", "lr"] == 0.01  # mean 0.31 beats 0.35, though 0.1 has the single best seed
    assert c.at["glorot", "lr"] == 0.1
    assert c.at["standard", "score"] == pytest.approx(0.31) and c.at["standard", "seeds"] == 3
    assert set(s.runs.run_id) == {f"tanh-standard-0.01-{i}" for i in range(3)} | {f"tanh-glorot-0.1-{i}" for i in range(3)}
    assert "0.01: 0.31" in c.at["standard", "scores"] and c.at["standard", "candidates"] == 2


def test_a_value_with_a_diverged_seed_loses_and_ties_go_to_the_smaller_value():
    runs = _runs({("tanh", "a", 0.1): [0.10, None], ("tanh", "a", 0.01): [0.40, 0.40],
                  ("tanh", "b", 0.1): [0.3, 0.3], ("tanh", "b", 0.01): [0.3, 0.3]})
    c = sel.select(runs, COLS, "lr", sel.scores(runs)).choices.set_index("init")
    assert c.at["a", "lr"] == 0.01 and c.at["b", "lr"] == 0.01


def test_valid_error_score_is_the_lowest_over_evaluations():
    runs = _runs({("tanh", "a", 0.1): [0.5]})
    metrics = pd.DataFrame(dict(run_id=["tanh-a-0.1-0"] * 3, step=[0, 10, 20], split="valid", metric="error",
                                value=[0.9, 0.2, 0.5]))
    assert sel.scores(runs, metrics).iloc[0] == pytest.approx(0.2)
    assert sel.scores(runs, None).iloc[0] == pytest.approx(0.5)
    with pytest.raises(sel.SelectionError, match="valid_error"):
        sel.scores(runs, metrics, "valid_eror")
    with pytest.raises(sel.SelectionError, match="columns: .*lr"):
        sel.select(runs, COLS, "optimizer.momentum", sel.scores(runs))


def test_apply_keeps_the_picked_runs_in_every_table_and_collapses_the_axis():
    runs = _runs({("tanh", "a", 0.1): [0.2, 0.2], ("tanh", "a", 0.01): [0.4, 0.4]})
    runs["tune_axis"], runs["tune_metric"] = "optimizer.lr", "valid_error"
    metrics = pd.DataFrame(dict(run_id=runs.run_id, step=0, split="test", metric="error", value=0.5, lr=runs.lr))
    out, choices = sel.apply({"runs": runs, "metrics": metrics}, COLS)
    assert len(choices) == 1 and choices.lr.iloc[0] == 0.1
    assert set(out["runs"].picked_lr) == {0.1} and set(out["runs"].lr) == {"tuned: 0.01|0.1"}
    assert set(out["metrics"].run_id) == set(out["runs"].run_id) and set(out["metrics"].lr) == {"tuned: 0.01|0.1"}
    untouched, none = sel.apply({"runs": runs.drop(columns=["tune_axis"])}, COLS)
    assert none is None and untouched["runs"] is not None and len(untouched["runs"]) == 4


def test_incomplete_beta_against_closed_forms():
    # I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(1/2, 1/2) = (2/pi) asin(sqrt x); binomial sum for integers
    for x in (0.01, 0.3, 0.77, 0.999):
        assert stats.betainc(2.5, 1, x) == pytest.approx(x ** 2.5, rel=1e-12)
        assert stats.betainc(1, 3.5, x) == pytest.approx(1 - (1 - x) ** 3.5, rel=1e-12)
        assert stats.betainc(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), rel=1e-12)
        binom = sum(math.comb(4, j) * x ** j * (1 - x) ** (4 - j) for j in range(2, 5))  # I_x(2, 3)
        assert stats.betainc(2, 3, x) == pytest.approx(binom, rel=1e-12)
    with pytest.raises(ValueError):
        stats.betainc(1, 1, 1.5)


def test_student_t_p_values_against_known_values():
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5)  # Cauchy: 1 - 2 atan(1) / pi
    for t in (0.3, 2.0, 7.0):  # df = 2: p = 1 - |t| / sqrt(2 + t^2)
        assert stats.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    # tabulated critical values
    assert stats.t_two_sided_p(2.228138852, 10) == pytest.approx(0.05, rel=1e-6)
    assert stats.t_two_sided_p(5.597568, 4) == pytest.approx(0.005, rel=1e-5)
    assert stats.t_two_sided_p(63.65674, 1) == pytest.approx(0.01, rel=1e-5)
    assert stats.t_two_sided_p(2.575829, 1e7) == pytest.approx(0.01, rel=1e-4)  # -> the normal


def test_welch_against_a_numpy_recomputation():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    w = stats.welch(a, b)
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 5
    assert w.t == pytest.approx((2.5 - 6.0) / math.sqrt(va + vb))
    assert w.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 4))
    assert w.p == pytest.approx(stats.t_two_sided_p(w.t, w.df)) and 0.05 < w.p < 0.1
    assert math.isnan(stats.welch([1.0], [2.0, 3.0]).p)
    assert stats.welch([1.0, 1.0], [2.0, 2.0]).p == 0.0 and stats.welch([1.0, 1.0], [1.0, 1.0]).p == 1.0
