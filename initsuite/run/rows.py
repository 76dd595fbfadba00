"""Table rows from measurements: the one place that turns what :class:`initsuite.measure.instrument.Instrument`
returns into rows of the ``layer_stats``, ``histograms`` and ``events`` tables (columns:
:data:`initsuite.tables.TABLE_COLUMNS`), for the suite's own loop (:class:`initsuite.run.train.Trainer`)
and the watched ``model.fit`` (:mod:`initsuite.run.watch`) alike.

``epoch_of(step)`` maps a step (updates done) to the fractional epoch the rows carry.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from initsuite.tables import PROBE, TRAIN


def probe_rows(rid: str, step: int, epoch: float, stats: Mapping[Tuple[str, str], Mapping[str, float]],
               layer_index: Mapping[str, int]) -> List[Dict[str, Any]]:
    """``layer_stats`` rows (``batch = probe``) of one :meth:`Instrument.probe` result."""
    return [dict(run_id=rid, step=step, epoch=epoch, batch=PROBE, layer=layer, layer_index=layer_index[layer],
                 tensor=tensor, stat=stat, value=float(value))
            for (layer, tensor), values in stats.items() for stat, value in values.items()]


def hist_rows(rid: str, step: int, epoch: float, batch: str, layer: str, layer_index: int, tensor: str,
              edges, counts) -> List[Dict[str, Any]]:
    """``histograms`` rows of one histogram: bin b counts the values in [edges[b], edges[b + 1])."""
    return [dict(run_id=rid, step=step, epoch=epoch, batch=batch, layer=layer, layer_index=layer_index,
                 tensor=tensor, bin=b, left=float(edges[b]), right=float(edges[b + 1]), count=int(c))
            for b, c in enumerate(counts)]


def probe_hist_rows(rid: str, step: int, epoch: float, hists: Mapping[Tuple[str, str], Tuple[Any, Any]],
                    layer_index: Mapping[str, int]) -> List[Dict[str, Any]]:
    """``histograms`` rows (``batch = probe``) of one :meth:`Instrument.probe` result."""
    out: List[Dict[str, Any]] = []
    for (layer, tensor), (edges, counts) in hists.items():
        out += hist_rows(rid, step, epoch, PROBE, layer, layer_index[layer], tensor, edges, counts)
    return out


def step_stats_rows(rid: str, stats, taken, epoch_of: Callable[[int], float],
                    layer_index: Mapping[str, int]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(``layer_stats`` rows, ``histograms`` rows), ``batch = train``, of what
    :meth:`initsuite.measure.step_stats.StepStats.take` handed over (``taken``)."""
    steps, values, ranges, counts = taken
    rows, hist = [], []
    for step, row in zip(steps.tolist(), values.tolist()):
        epoch = epoch_of(step)
        rows.extend(dict(run_id=rid, step=step, epoch=epoch, batch=TRAIN, layer=layer, layer_index=layer_index[layer],
                         tensor=tensor, stat=stat, value=float(v))
                    for (layer, tensor, stat), v in zip(stats.layout, row))
    if counts is not None:
        for step, rng, cnt in zip(steps.tolist(), ranges, counts):
            for (layer, tensor), (lo, hi), c in zip(stats.hist_keys, rng, cnt):
                hist += hist_rows(rid, step, epoch_of(step), TRAIN, layer, layer_index[layer], tensor,
                                  np.linspace(float(lo), float(hi), len(c) + 1), c)
    return rows, hist


def add_probe(tables: Dict[str, List[Dict[str, Any]]], rid: str, step: int, epoch: float, stats, hists,
              layer_index: Mapping[str, int]) -> None:
    """Append one :meth:`Instrument.probe` result to a run's ``layer_stats`` and ``histograms`` rows."""
    tables["layer_stats"] += probe_rows(rid, step, epoch, stats, layer_index)
    tables["histograms"] += probe_hist_rows(rid, step, epoch, hists, layer_index)


def add_step_stats(tables: Dict[str, List[Dict[str, Any]]], rid: str, inst, epoch_of: Callable[[int], float]) -> None:
    """Append the training-batch rows the Instrument's device buffer holds (``batch = train``; none
    when its statistics are off) to a run's ``layer_stats`` and ``histograms`` rows."""
    if inst.stats is None:
        return
    ls, hist = step_stats_rows(rid, inst.stats, inst.stats.take(), epoch_of, inst.layer_index)
    tables["layer_stats"] += ls
    tables["histograms"] += hist


def nonfinite_event(rid: str, first: Mapping[str, Any], epoch: float, seen_at: int) -> Dict[str, Any]:
    """The ``events`` row of kind ``first_nonfinite`` for :meth:`Instrument.first_nonfinite`'s answer,
    found by the host at step ``seen_at``."""
    return dict(run_id=rid, step=first["step"], epoch=epoch, phase=first["phase"], layer=first["layer"],
                layer_index=first["layer_index"], tensor=first["tensor"], kind="first_nonfinite",
                detail=f"first NaN/Inf: step {first['step']}, {first['phase']} phase, layer {first['layer']}, "
                       f"tensor {first['tensor']} (seen by step {seen_at})")


def final_metrics(rows: Iterable[Mapping[str, Any]]) -> Dict[str, float]:
    """``final_<split>_<metric>``: each split's metrics at the last step that measured it."""
    last: Dict[Tuple[str, str], Tuple[int, float]] = {}
    for r in rows:
        key = (r["split"], r["metric"])
        if key not in last or r["step"] >= last[key][0]:
            last[key] = (r["step"], r["value"])
    return {f"final_{split}_{metric}": value for (split, metric), (_, value) in last.items()}


def first_nonfinite_fields(first: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``first_nonfinite_*`` fields of status.json (None when every value stayed finite)."""
    return {f"first_nonfinite_{k}": (first[k] if first else None) for k in ("step", "layer", "phase", "tensor")}
