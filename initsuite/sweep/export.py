"""TensorBoard event files from a sweep's tables, for users who live in TensorBoard.

``write_tensorboard(sweep_dir)`` writes ``<sweep>/tensorboard/``, one TensorBoard run
per suite run, named ``<init>/<activation>/<dataset>_d<depth>x<width>_s<seed>`` (so
TensorBoard's run filter works by initializer or activation), holding:

* scalars ``<layer>/<tensor>/<stat>`` from ``layer_stats`` (``dense_03/backprop_grad/var``):
  the layer's full name leads the tag, so layers never collide and TensorBoard groups
  each layer's curves in one section; the training-batch rows (``batch = train``) under
  ``train_batch/<layer>/<tensor>/<stat>``;
* scalars ``metrics/<split>/<metric>`` from ``metrics``;
* histograms ``<layer>/<tensor>`` from ``histograms``, with the stored bin edges and counts
  (TensorBoard's own format: rows of left edge, right edge, count), not re-binned.

TensorBoard itself is not a dependency (``pip install tensorboard`` to view). The files
are written with TensorFlow's core ``tf.summary.write`` plus the plugin metadata the
scalar and histogram dashboards expect, which works without the tensorboard package.
The tables stay the suite's record; the event files can be deleted and rewritten.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from initsuite.analysis.report import load_tables
from initsuite.tables import PROBE, TRAIN

SCALARS_PLUGIN = "scalars"
HISTOGRAMS_PLUGIN = "histograms"


def run_names(runs: pd.DataFrame) -> Dict[str, str]:
    """run_id -> a TensorBoard run path; the run id is appended where two runs would share a name."""
    names = {}
    for r in runs.itertuples():
        names[r.run_id] = f"{r.init}/{r.activation}/{r.dataset}_d{r.depth}x{r.width}_s{r.seed}"
    counts = pd.Series(list(names.values())).value_counts()
    dup = set(counts[counts > 1].index)
    return {rid: _safe(f"{n}_{rid}" if n in dup else n) for rid, n in names.items()}


def _safe(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=/+-]", "_", path)


def _metadata(plugin: str, description: str = ""):
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=b""),
        summary_description=description)


def write_tensorboard(sweep_dir: Path, out_dir: Optional[Path] = None,
                      tables: Optional[Dict[str, pd.DataFrame]] = None) -> Path:
    """Write the event files of every run of a sweep; returns the log directory
    (``tensorboard --logdir <it>``). An earlier export in that folder is replaced."""
    import tensorflow as tf

    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "tensorboard"
    tables = tables if tables is not None else load_tables(sweep_dir)
    runs = tables["runs"]
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a re-export must not stack a second copy of every point
    names = run_names(runs)
    scalar_md, hist_md = _metadata(SCALARS_PLUGIN), _metadata(HISTOGRAMS_PLUGIN)
    by_run = {name: df.groupby("run_id") if len(df) else None
              for name, df in tables.items() if name in ("layer_stats", "metrics", "histograms")}

    def part(name, rid):
        g = by_run.get(name)
        if g is None or rid not in g.groups:
            return pd.DataFrame()
        return g.get_group(rid)

    for rid, name in names.items():
        writer = tf.summary.create_file_writer(str(out_dir / name))
        with writer.as_default():
            ls = part("layer_stats", rid)
            for r in ls.itertuples(index=False):
                # the training-batch series under its own prefix, beside the fixed probe's
                where = "train_batch/" if getattr(r, "batch", PROBE) == TRAIN else ""
                tf.summary.write(f"{where}{r.layer}/{r.tensor}/{r.stat}", tf.constant(float(r.value), tf.float32),
                                 step=int(r.step), metadata=scalar_md)
            met = part("metrics", rid)
            for r in met.itertuples(index=False):
                tf.summary.write(f"metrics/{r.split}/{r.metric}", tf.constant(float(r.value), tf.float32),
                                 step=int(r.step), metadata=scalar_md)
            hist = part("histograms", rid)
            if len(hist):
                if "batch" not in hist.columns:
                    hist = hist.assign(batch=PROBE)
                for (step, batch, layer, tensor), h in hist.groupby(["step", "batch", "layer", "tensor"]):
                    h = h.sort_values("bin")
                    data = np.stack([h.left.to_numpy(float), h.right.to_numpy(float),
                                     h["count"].to_numpy(float)], axis=1)
                    where = "train_batch/" if batch == TRAIN else ""
                    tf.summary.write(f"{where}{layer}/{tensor}", tf.constant(data, tf.float64), step=int(step),
                                     metadata=hist_md)
        writer.flush()
        writer.close()
    return out_dir


def read_events(log_dir: Path) -> pd.DataFrame:
    """Every value in the event files under ``log_dir``: run, tag, step, plugin, value (a float
    for scalars, an array for histograms). For tests and for checking an export."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    log_dir = Path(log_dir)
    rows = []
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        run = path.parent.relative_to(log_dir).as_posix()
        for raw in tf.data.TFRecordDataset(str(path)):
            ev = event_pb2.Event.FromString(raw.numpy())
            for v in ev.summary.value:
                arr = tf.make_ndarray(v.tensor)
                rows.append(dict(run=run, tag=v.tag, step=ev.step, plugin=v.metadata.plugin_data.plugin_name,
                                 value=float(arr) if arr.ndim == 0 else arr))
    return pd.DataFrame(rows, columns=["run", "tag", "step", "plugin", "value"])
