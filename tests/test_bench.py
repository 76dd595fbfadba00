"""The benchmark's bookkeeping (no timings here: those belong in `make bench`), and the
cheap statistics and clock it relies on, against NumPy and the sorting reference."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import TINY
from initsuite import bench


# --------------------------------------------------------------------------- bookkeeping


def test_windows_interleave_and_mirror_so_linear_drift_cancels():
    variants = ["a", "b", "c"]
    order = bench.interleaved_order(variants, 4)
    assert len(order) == 12
    for r in range(4):
        assert sorted(v for rep, v in order if rep == r) == variants  # every variant once per repetition
    assert [v for _, v in order[:6]] == ["a", "b", "c", "c", "b", "a"]
    # with a clock that drifts linearly, every variant's mean position is the same
    mean_pos = {v: np.mean([i for i, (_, w) in enumerate(order) if w == v]) for v in variants}
    assert len(set(mean_pos.values())) == 1


def test_summary_takes_medians_and_paired_ratios():
    rows = bench.summarize_case({"keras_fit": [100.0, 50.0, 100.0], "initsuite_default": [90.0, 50.0, 80.0]})
    assert rows["keras_fit"]["examples_per_s"] == 100.0 and rows["keras_fit"]["ratio"] == 1.0
    # paired per repetition: 0.9, 1.0, 0.8 -> median 0.9 (the ratio of medians would say 0.8)
    assert rows["initsuite_default"]["ratio_samples"] == [0.9, 1.0, 0.8]
    assert rows["initsuite_default"]["ratio"] == pytest.approx(0.9)
    assert rows["initsuite_default"]["examples_per_s"] == 80.0
    assert bench.examples_per_second(100, 128, 2.0) == 6400.0
    assert bench.matmul_flops(1000, 0.5) == 4e9
    assert 10 < bench.peak_rss_mb() < 1e6  # this process: MB, not kB or bytes


def test_flops_of_the_paper_mlp_and_the_cnn(make_cfg):
    from initsuite.setup import models

    mlp = models.build(make_cfg("model=mlp", "model.depth=5", "model.width=1000"), (28, 28, 1), 10).model
    assert bench.model_flops(mlp) == 2 * (784 * 1000 + 4 * 1000 * 1000 + 1000 * 10)  # 9,588,000
    assert bench.train_flops(mlp) == 3 * 9_588_000
    cnn = models.build(make_cfg("model=cnn", "model.depth=4", "model.width=32", "model.head_width=128",
                                "model.pool_every=2"), (28, 28, 1), 10).model
    conv = lambda hw, cin: 2 * hw * hw * 9 * cin * 32
    want = conv(28, 1) + conv(28, 32) + conv(14, 32) + conv(14, 32) + 2 * 7 * 7 * 32 * 128 + 2 * 128 * 10
    assert bench.model_flops(cnn) == want


def _report(ratios, mem=None, device="CPU", peak_frac=0.6):
    variants = {v: {"examples_per_s": 100 * r, "ratio": r, "flops": 1.0, "peak_frac": peak_frac}
                for v, r in ratios.items()}
    for v, m in (mem or {}).items():
        variants[v]["peak_mb"] = m
    return {"device": device, "cases": [{"case": "mlp_b128", "variants": variants}],
            "sweep": {"n_jobs": 2, "runs": 2, "sequential_s": 10.0, "parallel_s": 8.0, "speedup": 1.25},
            "precision": {"xla": {"max_error": 2e-3, "tolerance": 1e-3, "ok": False,
                                  "errors": {"location": 2e-3, "relative": 1e-4, "fraction": 0.0, "count": 0.0}}}}


def test_targets_say_whether_met_and_by_how_much():
    report = _report({"keras_fit": 1.0, "initsuite_default": 0.90, "initsuite_forensics": 0.99,
                      "initsuite_all": 0.86},
                     mem={"keras_fit": 1000.0, "initsuite_default": 1300.0, "initsuite_forensics": 1000.0})
    got = {(t["target"], t["case"]): t for t in bench.check_targets(report)}
    t = got[("throughput initsuite_default", "mlp_b128")]
    assert t["ok"] is False and t["missed_by"] == pytest.approx(0.05)
    assert got[("throughput initsuite_forensics", "mlp_b128")]["ok"] is True
    assert got[("throughput initsuite_all", "mlp_b128")]["missed_by"] is None
    m = got[("peak memory initsuite_default", "mlp_b128")]
    assert m["value"] == pytest.approx(1.3) and m["ok"] is False and m["missed_by"] == pytest.approx(0.1)
    assert got[("peak memory initsuite_forensics", "mlp_b128")]["ok"] is True
    assert got[("FLOP/s initsuite_default vs matmul peak", "mlp_b128")]["ok"] is True
    assert got[("sweep speed-up, 2 jobs", "-")]["ok"] is True
    x = got[("statistics under xla", "-")]
    assert x["ok"] is False and x["missed_by"] == pytest.approx(1e-3)  # 2e-3 against 1e-3
    # the FLOP/s target is a CPU target
    on_gpu = bench.check_targets(_report({"keras_fit": 1.0, "initsuite_default": 1.0}, device="GPU"))
    assert not any(t["target"].startswith("FLOP/s") for t in on_gpu)


def test_report_files_hold_every_number(tmp_path):
    report = _report({"keras_fit": 1.0, "initsuite_default": 0.5})
    report.update(created="now", machine=dict(cpu="Test CPU", cores=2, gpus=[], tensorflow="x", keras="y"),
                  load_before=[1.0], load_after=[1.0], settings=dict(reps=3, quick=False),
                  matmul_peak={"n": 2048, "seconds": 0.1, "flops": 1.7e11})
    report["targets"] = bench.check_targets(report)
    js, md = bench.write_report(report, tmp_path / "bench")
    assert json.loads(js.read_text()) == json.loads(json.dumps(report))
    text = md.read_text()
    assert "Test CPU" in text and "170.0 GFLOP/s" in text
    assert "| mlp_b128 | initsuite_default | 50 | 0.500 |" in text
    assert "| throughput initsuite_default | mlp_b128 | 0.5 | - | >= 0.95 x | **no** | 0.45 |" in text
    assert "speed-up **1.25x**" in text
    assert "- xla: location 2.00e-03" in text and "EXCEEDED" in text


def test_cases_parse_and_bad_ones_are_refused():
    assert [c.name for c in bench.parse_cases("mlp_b10, cnn_b128")] == ["mlp_b10", "cnn_b128"]
    assert [c.name for c in bench.default_cases()] == ["mlp_b10", "mlp_b128", "cnn_b10", "cnn_b128"]
    with pytest.raises(ValueError, match="rnn_b10"):
        bench.parse_cases("rnn_b10")
    # windows of at least WINDOW_EXAMPLES examples by default: 400 steps at batch 10, 100 at 128
    assert bench.Case("mlp", 10).window("keras_fit") == -(-bench.WINDOW_EXAMPLES // 10) > 100
    assert bench.Case("cnn", 128).window("initsuite_moments") == 100
    assert bench.parse_cases("mlp_b10", steps=30)[0].window("keras_fit") == 30
    case = bench.Case("mlp", 10, steps=100, all_steps=7)
    over = bench.variant_overrides(case, "initsuite_all")
    total = bench.WARMUP + 7
    # every statistic of the training batch at every step; the fixed probe only outside the window
    assert f"train.max_steps={total}" in over and f"probes.every={total}" in over
    assert "probes.train_every=1" in over and "probes.train_quantiles=true" in over
    assert "probes.train_every=1" in bench.variant_overrides(case, "initsuite_moments")
    assert "probes.enabled=false" in bench.variant_overrides(case, "initsuite_forensics")


def test_default_cadence_is_amortized_over_one_epoch_of_log_spaced_probes():
    # 60000 / 128 = 468 steps: probes at 0, 10, 30, 100, 300 and 468 (6, two with histograms)
    got = bench.default_cadence_ratio(1.0, examples_per_s=1280.0, batch_size=128, probe_s=0.5, probe_hist_s=1.0)
    assert got["epoch_steps"] == 468 and got["probes"] == 6
    train_s = 468 * 128 / 1280.0
    assert got["ratio"] == pytest.approx(train_s / (train_s + 4 * 0.5 + 2 * 1.0))
    assert bench.default_cadence_ratio(0.9, 1280.0, 128, 0.0, 0.0)["ratio"] == pytest.approx(0.9)
    # 10 epochs, 4680 steps: 0, 10, 30, 100, 300, 1000, 3000 and the ten epoch ends (468, 936, ...)
    ten = bench.default_cadence_ratio(1.0, 1280.0, 128, probe_s=0.5, probe_hist_s=1.0, epochs=10)
    assert ten["probes"] == 17
    assert ten["ratio"] == pytest.approx(10 * train_s / (10 * train_s + 15 * 0.5 + 2 * 1.0))


def test_compare_stats_scales_each_family():
    rows = []
    for stat, value in (("mean", 0.0), ("std", 2.0), ("var", 4.0), ("p50", 1.0), ("zero_frac", 0.1),
                        ("nonfinite_count", 0.0)):
        rows.append(dict(step=0, layer="dense_00", tensor="activation", stat=stat, value=value))
    ref = pd.DataFrame(rows)
    assert bench.compare_stats(ref, ref)["location"] == 0.0
    other = ref.copy()
    other.loc[other.stat == "p50", "value"] = 1.2  # 0.1 std
    other.loc[other.stat == "var", "value"] = 4.4  # 10 %
    other.loc[other.stat == "zero_frac", "value"] = 0.13
    e = bench.compare_stats(ref, other)
    assert e["location"] == pytest.approx(0.1) and e["relative"] == pytest.approx(0.1)
    assert e["fraction"] == pytest.approx(0.03) and e["count"] == 0.0 and e["compared"] == 6


# --------------------------------------------------------------------------- what it measures


@pytest.mark.parametrize("name", ["normal", "relu", "ties", "constant", "one", "two", "huge", "nonfinite",
                                  "all_nonfinite", "empty", "wide_relu", "wide_ties", "wide_split",
                                  "zeros_in_a_wanted_bin", "few_zeros_in_a_wanted_bin"])
@pytest.mark.parametrize("fused", [False, True], ids=["kernels", "xla_fused"])
def test_selection_statistics_equal_numpy_and_the_sorting_reference(name, fused):
    from initsuite.measure.instrument import stat_names, stats_function
    from initsuite.measure.probes import tensor_stats

    rng = np.random.default_rng(0)
    x = {
        "normal": rng.standard_normal(50_000),
        "relu": np.maximum(rng.standard_normal(20_000), 0),  # half the values tie at 0
        "ties": rng.integers(0, 3, 3000).astype(float),
        "constant": np.full(999, 0.25),
        "one": np.array([3.0]),
        "two": np.array([1.0, -1.0]),
        "huge": np.array([-3e38, 3e38, 0.0, 1.0, 2.0]),  # the span overflows float32
        "nonfinite": np.concatenate([rng.standard_normal(1000), [np.nan, np.inf, -np.inf]]),
        "all_nonfinite": np.array([np.nan, np.inf]),
        "empty": np.zeros(0),
        # wider than the chunked passes' slice (summaries.CHUNK), zeros and negatives in several slices
        "wide_relu": np.maximum(rng.standard_normal(600_001), 0) * 1e-3,
        "wide_ties": np.round(rng.standard_normal(700_000) + 0.5, 1),
        # the median's two ranks in different bins (the lower is its bin's last value): every bin collected
        "wide_split": np.repeat([1.0, 2.0], 300_000),
        # the bulk within the bin of 0.0 (outliers set the range): many zeros there, then a few
        "zeros_in_a_wanted_bin": np.concatenate([np.zeros(10_000), rng.standard_normal(10_000) * 1e-4, [-1, 1]]),
        "few_zeros_in_a_wanted_bin": np.concatenate([np.zeros(5), rng.standard_normal(20_000) * 1e-4, [-1, 1]]),
    }[name].astype(np.float32)
    qs = (0.1, 2.0, 50.0, 98.0, 100.0)
    got = dict(zip(stat_names(qs), stats_function(qs, fused=fused)(tf.constant(x)).numpy().tolist()))
    ref = {k: float(v) for k, v in tensor_stats(tf.constant(x), qs).items()}
    if fused:  # without the variance's pass: the same percentiles, no variance
        lean = dict(zip(stat_names(qs), stats_function(qs, fused=True, variance=False)(tf.constant(x)).numpy().tolist()))
        assert all(lean[k] == got[k] or (np.isnan(lean[k]) and np.isnan(got[k]))
                   for k in stat_names(qs) if k not in ("var", "std"))
        assert np.isnan(lean["var"]) and np.isnan(lean["std"])
    finite = x[np.isfinite(x)].astype(np.float64)
    assert got["nonfinite_count"] == len(x) - len(finite)
    if len(finite) == 0:
        assert all(np.isnan(got[k]) for k in stat_names(qs) if k != "nonfinite_count")
        return
    for q in qs:  # the same float32 interpolation as sorting: bit for bit
        key = [k for k in stat_names(qs) if k.startswith("p")][qs.index(q)]
        assert got[key] == ref[key], key
        assert got[key] == pytest.approx(np.percentile(finite, q), rel=1e-6, abs=1e-6)
    for k in ("mean", "var", "std", "zero_frac"):
        assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
    if name != "huge":  # float32 variance of +-3e38 overflows, in both implementations
        assert got["var"] == pytest.approx(finite.var(), rel=1e-4)


def test_trainer_clock_marks_the_window_steps(make_cfg, tmp_path):
    from initsuite.run.results import RunDir
    from initsuite.run.train import Trainer

    cfg = make_cfg(*TINY, "train.max_steps=6")
    rdir = RunDir(tmp_path / "run")
    rdir.path.mkdir(parents=True)
    t = Trainer(cfg, "clock", rdir)
    clock = bench.StepClock({2, 6})
    t.step_callbacks.append(clock)
    info = t.fit()
    assert info["steps"] == 6 and sorted(clock.times) == [2, 6] and clock.times[6] > clock.times[2]


@pytest.mark.slow
def test_xla_and_mixed_precision_keep_statistics_within_tolerance(tmp_path):
    from initsuite.measure.instrument import precision_policy

    res = bench.precision_check(tmp_path, log=lambda *_: None)
    for mode in ("xla", "mixed_bfloat16"):
        r = res[mode]
        assert r["status"] == "done" and r["steps"] == [0, 4, 8]
        assert r["errors"]["compared"] > 100
        assert r["ok"], (mode, r["errors"])
    # bfloat16 really ran: its statistics moved, within tolerance
    assert res["mixed_bfloat16"]["errors"]["location"] > 1e-6
    import keras
    assert keras.mixed_precision.global_policy().name == "float32"  # the mixed run did not leak its policy
    from omegaconf import OmegaConf
    assert precision_policy(OmegaConf.create({"train": {"mixed_precision": True}})) == "mixed_bfloat16"
    assert precision_policy(OmegaConf.create({"train": {}})) == "float32"


@pytest.mark.parametrize("finite", [True, False])
def test_chunked_histogram_equals_the_one_pass_histogram(finite):
    """The probe's histogram over slices (summaries.fold) counts exactly what one
    histogram_fixed_width over the whole tensor counts, values outside [lo, hi] in the edge bins."""
    from initsuite.measure.summaries import CHUNK, histogram_function

    x = np.random.default_rng(1).standard_normal(2 * CHUNK + 17).astype(np.float32)
    if not finite:
        x[[5, CHUNK + 3]] = [np.nan, np.inf]
    lo, hi = -1.5, 2.0
    got = histogram_function(40)(tf.constant(x), tf.constant(lo), tf.constant(hi), tf.constant(finite)).numpy()
    fin = x[np.isfinite(x)]
    want = tf.histogram_fixed_width(tf.constant(fin), [lo, hi], nbins=40).numpy()
    assert got.tolist() == want.tolist() and got.sum() == len(fin)
    assert got[0] == np.sum(fin < lo + 3.5 / 40) and got[-1] == np.sum(fin >= hi - 3.5 / 40)
