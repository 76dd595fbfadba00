"""The tables' owner: config columns from varying keys, grouping by all of them, labels naming them."""

import numpy as np
import pandas as pd
import pytest

from initsuite import tables


def _cfg(seed=0, stddev=0.05, lr=0.01, momentum=None, init="truncated_normal", out="/tmp/a"):
    return {"experiment": "x", "seed": seed, "force": False,
            "dataset": {"name": "synthetic", "image_shape": [8, 8, 1]},
            "model": {"name": "mlp", "depth": 3, "width": 16, "kwargs": {}},
            "init": {"name": init, "label": None, "stddev": stddev, "bias": 0.0},
            "activation": {"name": "tanh"},
            "optimizer": {"name": "sgd", "lr": lr, "momentum": momentum},
            "train": {"batch_size": 32, "epochs": 1, "progress": True, "threads": 2},
            "probes": {"every": 4}, "paths": {"results": out, "runs": out + "/runs"}}


def test_config_frame_adds_exactly_the_keys_that_vary_under_their_dotted_names():
    configs = [_cfg(seed=s, stddev=sd, out=f"/tmp/{s}{sd}") for s in (0, 1) for sd in (0.05, 0.5)]
    configs[0]["train"]["progress"] = False  # how loudly a run reports is not a config column
    df = tables.config_frame(configs)
    assert list(df.columns) == tables.CONFIG_COLUMNS + ["init.stddev"]
    assert df["init.stddev"].tolist() == [0.05, 0.5, 0.05, 0.5]
    assert df.init.tolist() == ["truncated_normal"] * 4 and df["init.bias"].tolist() == [0.0] * 4
    assert tables.group_columns(df) == ["init.stddev"]  # seed varies too, but is the one thing averaged


def test_flatten_leaves_out_output_paths_force_and_hydra():
    flat = tables.flatten({**_cfg(), "hydra": {"run": {"dir": "x"}}})
    assert "init.stddev" in flat and "dataset.image_shape" in flat and flat["dataset.image_shape"] == "[8, 8, 1]"
    assert not [k for k in flat if k.startswith(("paths", "hydra", "force", "experiment", "train.progress"))]


def test_group_columns_treat_missing_as_a_value():
    df = tables.config_frame([_cfg(init="glorot_uniform", stddev=None), _cfg()])
    assert tables.group_columns(df) == ["init", "init.stddev"]  # init_name says nothing init does not
    shared = df.assign(init="same label")
    assert tables.group_columns(shared) == ["init_name", "init.stddev"]


def test_series_names_the_parameters_that_vary_within_an_initializer():
    configs = [_cfg(stddev=0.05), _cfg(stddev=0.5), _cfg(init="glorot_uniform", stddev=None),
               _cfg(stddev=0.5, seed=1)]
    df = tables.config_frame(configs)
    assert tables.series(df).tolist() == ["truncated_normal (stddev=0.05)", "truncated_normal (stddev=0.5)",
                                          "glorot_uniform", "truncated_normal (stddev=0.5)"]
    # a non-init key keeps its group when its last part is an identity column's name
    m = tables.config_frame([_cfg(momentum=0.9), _cfg(momentum=0.5)])
    assert tables.series(m).tolist() == ["truncated_normal (momentum=0.9)", "truncated_normal (momentum=0.5)"]
    p = pd.DataFrame({"init": ["a", "a"], "probes.batch_size": [10, 20], "train.batch_size": [1, 2]})
    assert tables.series(p).tolist() == ["a (probes.batch_size=10, train.batch_size=1)",
                                         "a (probes.batch_size=20, train.batch_size=2)"]


def test_check_seeds_only_refuses_to_average_configurations():
    df = tables.config_frame([_cfg(seed=s, stddev=sd) for s in (0, 1) for sd in (0.05, 0.5)])
    df["value"] = np.arange(4.0)
    with pytest.raises(ValueError, match="init.stddev"):
        tables.check_seeds_only(df, ["init"])
    tables.check_seeds_only(df, ["init", "init.stddev"])  # only seeds left in each group
    tables.check_seeds_only(tables.with_series(df), ["series"])


def test_no_table_column_looks_like_a_config_column():
    for cols in tables.TABLE_COLUMNS.values():
        assert not [c for c in cols if tables.is_config_column(c) and c not in ("run_id",)]
    assert not [c for c in tables.RUN_FIELDS if tables.is_config_column(c)]


# --------------------------------------------------------------------------- the sweep of issue 11


@pytest.fixture(scope="module")
def stddev_sweep(tmp_path_factory):
    """`make sweep EXP=smoke ARGS='init=truncated_normal init.stddev=0.05,0.5 activation=tanh
    model.depth=3 optimizer.lr=0.01,0.1'`: four configurations, one seed each."""
    from initsuite import sweep

    out = tmp_path_factory.mktemp("stddev")
    points = sweep.grid("smoke", ["init=truncated_normal", "init.stddev=0.05,0.5", "activation=tanh",
                                  "model.depth=3", "optimizer.lr=0.01,0.1", f"paths.results={out}"])
    assert len(points) == 4
    return sweep.run_grid(points, verbose=False)


def test_the_stddev_sweep_is_never_averaged_across_stddevs(stddev_sweep):
    from initsuite.analysis import plots, report, verdicts
    from initsuite.sweep import summary_table

    runs = stddev_sweep["runs"]
    assert set(runs.status) == {"done"}
    for name in tables.TABLES:  # the swept key is a column of every table
        assert "init.stddev" in stddev_sweep[name].columns, name
    s = summary_table(runs)
    assert len(s) == 4 and (s.runs == 1).all()
    assert sorted(zip(s.lr, s["init.stddev"])) == [(0.01, 0.05), (0.01, 0.5), (0.1, 0.05), (0.1, 0.5)]
    assert s.test_error_std.isna().all()  # one seed each: no spread to report
    r = verdicts.ranking(stddev_sweep)
    assert len(r) == 4 and sorted(r.groupby("lr")["rank"].apply(list).sum()) == [1, 1, 2, 2]
    assert set(report.summary(dict(stddev_sweep))["init.stddev"]) == {0.05, 0.5}
    ls = plots.select(stddev_sweep["layer_stats"], lr=0.1)
    with pytest.raises(ValueError, match="init.stddev"):
        plots.seed_band(ls, "step", ["init", "layer", "tensor", "stat"])
    fig = plots.layer_profile(ls)
    labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert {"truncated_normal (stddev=0.05)", "truncated_normal (stddev=0.5)"} <= labels
    # a figure of both learning rates names them too, rather than averaging them
    fig = plots.training_curves(stddev_sweep["metrics"])
    labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert "truncated_normal (lr=0.1, stddev=0.5)" in labels and len(labels) == 4
    # and the figures of a whole sweep come one set per learning rate
    assert [w for _, w in plots.slices(runs)] == [{"lr": 0.01}, {"lr": 0.1}]


def test_a_run_process_writes_tables_with_the_system_allocator_unless_the_user_chose_one(monkeypatch, tmp_path):
    import pyarrow as pa

    from initsuite.atomic import atomic_write_table, small_tables_allocator

    original = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.mimalloc_memory_pool() if hasattr(pa, "mimalloc_memory_pool") else original)
        chosen = pa.default_memory_pool().backend_name
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", chosen)
        small_tables_allocator()
        assert pa.default_memory_pool().backend_name == chosen  # the user's choice stands
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
        small_tables_allocator()
        assert pa.default_memory_pool().backend_name == "system"
        atomic_write_table(tmp_path / "t.parquet", pd.DataFrame({"a": [1, 2]}))
        assert pd.read_parquet(tmp_path / "t.parquet")["a"].tolist() == [1, 2]
    finally:
        pa.set_memory_pool(original)
