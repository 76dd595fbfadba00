"""The Python API for notebooks: ``compare(build_fn, inits=[...]) -> tables``.

It runs exactly what the command line runs: for each initializer x activation x seed
it composes the Hydra config (``model=custom model.builder=... init=... ``) and runs the
grid with :func:`initsuite.sweep.run_grid`, the runner behind ``make sweep``, so the run
folders, the resumption (a finished run is read back, not redone) and the tables are the
same as for ``make sweep``, in the same place: ``<results_dir>/sweeps/<experiment>/``,
where ``make figures SWEEP=<folder>`` draws them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import pandas as pd
from omegaconf import OmegaConf

from initsuite.setup import custom

from initsuite import sweep

from initsuite.configure import compose
from initsuite.run import train
from initsuite.setup.data import DATASETS
from initsuite.tables import TABLES, batch_rows


def _as_list(x: Union[str, int, Iterable]) -> List:
    return [x] if isinstance(x, (str, int)) else list(x)


def train_size(dataset_cfg) -> int:
    """Training examples of a configured dataset, without loading it (the splits of ``initsuite.setup.data``)."""
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
               process (see :func:`initsuite.setup.custom.builder_reference`): its source code is
               part of the run id, so editing it reruns.
    inits:     names in ``conf/init/`` (registry keys or presets such as ``truncated_normal_tutorial``).
    dataset:   ``synthetic`` | ``mnist`` | ``fashion_mnist`` | ``cifar10`` (a ``conf/dataset`` name).
    steps:     training steps per run (``train.max_steps``; enough epochs are set to reach it);
               None trains the configured epochs.
    activation: ``keep`` (the model's own) or names passed to the builder; a list makes a grid.
    overrides: any further command-line overrides, e.g. ``["train.batch_size=16", "probes.every=10"]``.

    Returns ``{"runs", "layer_stats", "metrics", "histograms", "events"}`` of this grid's runs, in
    grid order: the sweep's tables (:mod:`initsuite.tables`: config columns in front, one ``runs``
    row per run with status, first non-finite step/layer/phase, final losses and errors) plus
    ``skipped`` (read back, not rerun). The sweep folder keeps every run of ``experiment``.
    A diverged run is data (status ``diverged``); a run that fails raises.
    """
    ref = custom.builder_reference(build_fn)
    base = ["model=custom", f"dataset={dataset}", f"paths.results={results_dir}", "train.progress=false",
            *overrides]
    if force:
        base.append("force=true")
    updates: Dict[str, Any] = {"model.builder": ref}
    if builder_kwargs:
        updates["model.kwargs"] = dict(builder_kwargs)
    if steps is not None:
        first = compose(base)
        per_epoch = max(train_size(first.dataset) // int(first.train.batch_size), 1)
        base += [f"train.max_steps={int(steps)}", f"train.epochs={max(math.ceil(int(steps) / per_epoch), 1)}"]
    points = [[f"init={i}", f"activation={a}", f"seed={s}"]
              for i in _as_list(inits) for a in _as_list(activation) for s in _as_list(seeds)]
    for p in points:  # every name and the builder are checked before the first run starts
        cfg = compose([*base, *p])
        for k, v in updates.items():
            OmegaConf.update(cfg, k, v, merge=False)
        train.validate(cfg)
    collected = sweep.run_grid(points, base, experiment=experiment, verbose=False, updates=updates)
    failed = [o for o in collected.outcomes if o.get("status") == "failed"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(points)} runs failed; first: {failed[0].get('error')} "
                           f"(log: {failed[0].get('log')})")
    order = {o["run_id"]: i for i, o in enumerate(collected.outcomes)}
    skipped = {o["run_id"]: bool(o.get("skipped")) for o in collected.outcomes}
    out = {}
    for name in TABLES:
        df = collected[name]
        df = df[df.run_id.isin(order)] if len(df) else df
        if name == "runs":
            df = df.assign(skipped=df.run_id.map(skipped)).sort_values("run_id", key=lambda s: s.map(order))
        out[name] = df.reset_index(drop=True)
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
        ls = batch_rows(ls)
        g = ls[(ls.step == 0) & (ls.tensor == "backprop_grad") & (ls.stat == "var")]
        spread = g.groupby("run_id").value.agg(lambda v: float(v.max() / v.min()) if v.min() > 0 else float("inf"))
        out["grad_var_spread_step0"] = out.run_id.map(spread)
    return out.drop(columns="run_id")
