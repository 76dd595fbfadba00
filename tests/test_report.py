"""report.html: one offline page that embeds every figure it lists (and Table 1 for the paper's
sweep); the figure and TensorBoard entry points; TensorBoard event files that hold the tables' values."""

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from initsuite.analysis import report
from test_plots import synthetic_tables

ROOT = Path(__file__).resolve().parent.parent


def write_sweep(folder: Path, tables) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


class _Page(HTMLParser):
    """Collects the contents' figure links, the figures (id -> embedded image) and external references."""

    def __init__(self):
        super().__init__()
        self.listed, self.figures, self.external, self._fig = [], {}, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("class") == "figlink":
            self.listed.append(a["href"].lstrip("#"))
        if tag == "figure":
            self._fig = a.get("id")
            self.figures[self._fig] = None
        if tag == "img" and self._fig is not None:
            self.figures[self._fig] = a.get("src", "")
        for key in ("src", "href"):
            v = a.get(key) or ""
            if re.match(r"(https?:)?//", v) or (tag in ("script", "link") and v):
                self.external.append(v)

    def handle_endtag(self, tag):
        if tag == "figure":
            self._fig = None


def _parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def plain_sweep(tmp_path_factory):
    folder = write_sweep(tmp_path_factory.mktemp("sweep") / "unit", synthetic_tables(seeds=(0,), steps=(0, 10, 20)))
    return folder, report.build(folder)


def test_report_embeds_every_figure_it_lists(plain_sweep):
    folder, path = plain_sweep
    assert path == folder / "report.html"
    page = _parse(path.read_text())
    assert len(page.listed) >= 6
    assert page.listed == list(page.figures)  # listed in the order shown, and nothing unlisted
    for name in page.listed:
        src = page.figures[name]
        assert src and src.startswith("data:image/png;base64,") and len(src) > 2000, name
        assert (folder / "figures" / f"{name}.png").exists() and (folder / "figures" / f"{name}.pdf").exists()
    assert not page.external  # readable offline: no server, no CDN


def test_report_has_runs_summary_and_ranking_but_no_table1_for_other_sweeps(plain_sweep):
    folder, path = plain_sweep
    html = path.read_text()
    for text in ("Summary", "Runs", "variance_at_init", "training_curves", "outcome_heatmaps", "r0001"):
        assert text in html
    assert "Initializers ranked per setting" in html
    assert "Table 1" not in html and not (folder / "table1.csv").exists()


def test_paper_sweep_report_has_table1_claims_and_the_papers_figures(tmp_path):
    t = synthetic_tables(activations=("sigmoid", "tanh", "softsign"), seeds=(0,), steps=(0, 10),
                         datasets=("mnist",), experiment="glorot2010_tiny")
    folder = write_sweep(tmp_path / "glorot2010_tiny", t)
    html = report.build(folder, formats=("png",), theory=False).read_text()
    page = _parse(html)
    for fig in ("fig02", "fig03", "fig04", "fig06", "fig07", "fig08", "fig09", "fig10", "fig12"):
        assert any(n.startswith(fig) for n in page.listed), fig
    for name in page.listed:
        assert page.figures[name].startswith("data:image/png;base64,")
    assert "Table 1" in html and "1.64" in html and "52.92" in html and "82.61" in html
    assert "claims, measured on this sweep" in html and "holds" in html
    assert "scale <b>tiny</b>" in html and "mnist" in html
    assert (folder / "table1.csv").exists() and (folder / "table1.md").exists()


def test_unknown_sweep_folder_says_how_to_collect(tmp_path):
    with pytest.raises(FileNotFoundError, match="make collect SWEEP="):
        report.load_tables(tmp_path)


@pytest.mark.slow
def test_figures_entry_point_collects_and_builds(tmp_path, capsys):
    """initsuite figures on a folder of run folders that was never collected."""
    from initsuite.configure import compose
    from initsuite.run.train import run

    sweep = tmp_path / "sweeps" / "mine"
    for init in ("standard", "glorot_uniform"):
        run(compose(["dataset=synthetic", "dataset.n_train=64", "dataset.n_test=32", "dataset.n_valid=32",
                     "model.depth=2", "model.width=8", "train.batch_size=32", "probes.every=1",
                     "probes.batch_size=32", "probes.hist_steps=[0,-1]", "train.progress=false", f"init={init}",
                     f"paths.runs={sweep / 'runs'}"]))
    from initsuite.cli import main

    main(["figures", str(sweep)])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == str(sweep / "report.html")
    page = _parse(Path(out).read_text())
    assert page.listed and all(page.figures[n] for n in page.listed)
    assert len(pd.read_parquet(sweep / "runs.parquet")) == 2


def test_tensorboard_export_holds_the_tables_values(tmp_path):
    from initsuite.sweep import export

    t = synthetic_tables(inits=("standard", "glorot_uniform"), activations=("tanh",), seeds=(0,), steps=(0, 10),
                         depths=(2,))
    folder = write_sweep(tmp_path / "tb", t)
    log_dir = export.write_tensorboard(folder)
    assert log_dir == folder / "tensorboard"
    ev = export.read_events(log_dir)
    assert set(ev.run) == {"standard/tanh/synthetic_d2x32_s0", "glorot_uniform/tanh/synthetic_d2x32_s0"}
    # every layer_stats value is there once, under <layer>/<tensor>/<stat>, at its step
    scalars = ev[ev.plugin == "scalars"]
    ls = t["layer_stats"]
    assert len(scalars) == len(ls) + len(t["metrics"])
    rid = t["runs"].set_index("init").run_id["standard"]
    row = ls[(ls.run_id == rid) & (ls.layer == "dense_01") & (ls.tensor == "backprop_grad") & (ls.stat == "var")
             & (ls.step == 10)].value.iloc[0]
    got = scalars[(scalars.run == "standard/tanh/synthetic_d2x32_s0") & (scalars.tag == "dense_01/backprop_grad/var")
                  & (scalars.step == 10)].value
    assert len(got) == 1 and got.iloc[0] == pytest.approx(row, rel=1e-6)
    assert {"metrics/test/error", "metrics/train/loss"} <= set(scalars.tag)
    # layers never collide: each layer is its own tag prefix
    assert {tag.split("/")[0] for tag in scalars.tag} == {"dense_00", "dense_01", "logits", "metrics"}
    # histograms: the stored bins (left, right, count), not re-binned
    hist = ev[(ev.plugin == "histograms") & (ev.tag == "dense_00/activation") & (ev.step == 0)
              & (ev.run == "standard/tanh/synthetic_d2x32_s0")]
    assert len(hist) == 1
    arr = hist.value.iloc[0]
    h = t["histograms"]
    h = h[(h.run_id == rid) & (h.layer == "dense_00") & (h.tensor == "activation") & (h.step == 0)].sort_values("bin")
    assert arr.shape == (len(h), 3)
    assert np.allclose(arr[:, 0], h.left) and np.allclose(arr[:, 2], h["count"])
    # exporting again replaces the files instead of doubling every point
    export.write_tensorboard(folder)
    assert len(export.read_events(log_dir)) == len(ev)
