"""The Python API for notebooks: ``compare(build_fn, inits=[...]) -> tables``.

It runs exactly what the command line runs: for each initializer x activation x seed
it composes the Hydra config (``model=custom model.builder=... init=... ``) and calls
:func:`initsuite.train.run`, so the run folders, the resumption (a finished run is
read back, not redone) and the tables are the same as for
``python experiments/run.py model=custom model.builder=package.module:function ...``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import pandas as pd

TABLES = ("layer_stats", "metrics", "histograms", "events")
RUN_FIELDS = ("status", "steps", "wall_s", "first_nonfinite_step", "first_nonfinite_layer",
              "first_nonfinite_phase", "first_nonfinite_tensor",
              *(f"final_{split}_{metric}" for split in ("train", "valid", "test") for metric in ("loss", "error")))


def _as_list(x: Union[str, int, Iterable]) -> List:
    return [x] if isinstance(x, (str, int)) else list(x)


def train_size(dataset_cfg) -> int:
    """Training examples of a configured dataset, without loading it (the splits of ``initsuite.data``)."""
    from initsuite.data import DATASETS

    if dataset_cfg.name == "synthetic":
        n = int(dataset_cfg.n_train)
    else:
        n = int(DATASETS[dataset_cfg.name].n_train_official) - int(dataset_cfg.valid_size)
    if dataset_cfg.get("limit_train") is not None:
        n = min(n, int(dataset_cfg.limit_train))
    return n


def compare(
    build_fn: Union[str, Callable],
    inits: Sequence[str] = ("glorot_uniform", "he_normal", "standard"),
    *,
    dataset: str = "synthetic",
    steps: Optional[int] = 200,
    activation: Union[str, Sequence[str]] = "keep",
    seeds: Union[int, Sequence[int]] = (0,),
    builder_kwargs: Optional[Dict[str, Any]] = None,
    results_dir: str = "results",
    experiment: str = "compare",
    overrides: Sequence[str] = (),
    force: bool = False,
) -> Dict[str, pd.DataFrame]:
    """Train ``build_fn``'s model once per initializer (x activation x seed) and return the tables.

    build_fn:  ``"package.module:function"`` or a callable
               ``f(input_shape, num_classes, activation=None, **builder_kwargs) -> keras.Model``
               returning logits. A callable defined in a notebook is registered in this
               process (see :func:`initsuite.custom.builder_reference`): its source code is
               part of the run id, so editing it reruns.
    inits:     names in ``conf/init/`` (registry keys or presets such as ``truncated_normal_tutorial``).
    dataset:   ``synthetic`` | ``mnist`` | ``fashion_mnist`` | ``cifar10`` (a ``conf/dataset`` name).
    steps:     training steps per run (``train.max_steps``; enough epochs are set to reach it);
               None trains the configured epochs.
    activation: ``keep`` (the model's own) or names passed to the builder; a list makes a grid.
    overrides: any further command-line overrides, e.g. ``["train.batch_size=16", "probes.every=10"]``.

    Returns ``{"runs", "layer_stats", "metrics", "histograms", "events"}``: the run folders'
    tables with the config columns (``initsuite.results.CONFIG_COLUMNS``) in front, and one
    ``runs`` row per run (status, first non-finite step/layer/phase, final losses and errors).
    A diverged run is data (status ``diverged``); a run that fails raises.
    """
    from omegaconf import OmegaConf

    from initsuite import custom, train
    from initsuite.configure import compose
    from initsuite.results import config_columns

    ref = custom.builder_reference(build_fn)
    base = ["model=custom", f"dataset={dataset}", f"paths.results={results_dir}", "train.progress=false", *overrides]
    if force:
        base.append("force=true")

    def make(init: str, act: str, seed: int):
        cfg = compose([*base, f"init={init}", f"activation={act}", f"seed={seed}"])
        OmegaConf.update(cfg, "model.builder", ref)
        cfg.experiment = experiment  # a plain key here: `experiment=` on the command line picks a preset
        if builder_kwargs:
            OmegaConf.update(cfg, "model.kwargs", dict(builder_kwargs), merge=False)
        if steps is not None:
            per_epoch = max(train_size(cfg.dataset) // int(cfg.train.batch_size), 1)
            cfg.train.max_steps = int(steps)
            cfg.train.epochs = max(math.ceil(int(steps) / per_epoch), 1)
        return cfg

    grid = [(i, a, s) for i in _as_list(inits) for a in _as_list(activation) for s in _as_list(seeds)]
    configs = [make(*g) for g in grid]
    for cfg in configs:  # every name and the builder are checked before the first run starts
        train.validate(cfg)

    runs, parts = [], {name: [] for name in TABLES}
    for cfg in configs:
        result = train.run(cfg)
        cols = config_columns(train.as_container(cfg))
        runs.append({**cols, "run_id": result.run_id, **{k: result.info.get(k) for k in RUN_FIELDS},
                     "skipped": result.skipped, "path": str(result.path)})
        for name in TABLES:
            df = getattr(result, name)
            if len(df):
                parts[name].append(df.assign(**cols)[[*cols, *[c for c in df.columns if c not in cols]]])
    out = {"runs": pd.DataFrame(runs)}
    for name in TABLES:
        out[name] = pd.concat(parts[name], ignore_index=True) if parts[name] else pd.DataFrame()
    return out


def summary(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per run: init, activation, seed, status, final test error and the spread of
    the back-propagated gradient at step 0 (max/min over layers of Var[dC/ds]; ~1 is
    what Glorot & Bengio's normalized init aims for)."""
    runs = tables["runs"]
    keep = [c for c in ("init", "activation", "seed", "status", "final_train_loss", "final_test_error")
            if c in runs]
    out = runs[["run_id", *keep]].copy()
    ls = tables["layer_stats"]
    if len(ls):
        g = ls[(ls.step == 0) & (ls.tensor == "backprop_grad") & (ls.stat == "var")]
        spread = g.groupby("run_id").value.agg(lambda v: float(v.max() / v.min()) if v.min() > 0 else float("inf"))
        out["grad_var_spread_step0"] = out.run_id.map(spread)
    return out.drop(columns="run_id")
