"""initsuite as users get it: a non-editable install, used from a folder with no checkout beside it,
and `make sweep`'s entry point end to end on the embedded sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built as a wheel (offline: the venv's setuptools) and installed into a bare folder."""
    tmp = tmp_path_factory.mktemp("pkg")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "wheel"), str(ROOT)], check=True, capture_output=True, cwd=tmp)
    (wheel,) = (tmp / "wheel").glob("initsuite-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, cwd=tmp)
    return tmp, wheel


def _python(tmp: Path, code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # cwd is an empty folder and PYTHONPATH the install: nothing of the checkout is importable.
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tmp / "site"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_carries_configs_and_embedded_data(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert {f"initsuite/conf/{c}" for c in configs} <= names
    assert {f"initsuite/embedded/mnist/{f}" for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")} <= names
    assert "initsuite/embedded/NOTICE" in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "initsuite = initsuite.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()


@pytest.mark.slow
def test_installed_copy_composes_loads_and_compares_from_any_folder(installed):
    """The Python API of an installed copy: configs composed, the embedded sample loaded, ``compare``
    run on a builder defined in the caller's script, and the notebook's table-reading path on its output."""
    tmp, _ = installed
    code = """
import json, keras, pandas as pd, initsuite
from initsuite import configure
from initsuite.analysis import plots
from initsuite.setup import data
assert "site" in initsuite.__file__, initsuite.__file__
cfg = configure.compose(["experiment=smoke"])
b = data.load(configure.compose(["dataset.source=embedded"]).dataset)

def build(input_shape, num_classes, activation="tanh"):
    x = keras.Input(input_shape)
    h = keras.layers.Dense(8, activation=activation)(keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Dense(num_classes)(h))

t = initsuite.compare(build, inits=["glorot_uniform", "standard"], dataset="mnist", steps=2, activation="tanh",
                      results_dir="out", overrides=["dataset.source=embedded", "probes.batch_size=20",
                                                    "train.eval_examples=50"])
ls = t["layer_stats"]
fig = plots.layer_profile(ls)  # the notebook's library call, on the returned table
print(json.dumps({"conf": str(configure.CONF_DIR), "sizes": b.sizes, "source": b.source, "exp": cfg.experiment,
                  "inits": sorted(t["runs"].init), "status": sorted(set(t["runs"].status)),
                  "tensors": sorted(set(ls.tensor)), "axes": len(fig.axes)}))
"""
    out = _python(tmp, code)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["conf"].startswith(str(tmp / "site"))
    assert got["sizes"] == {"n_train": 7000, "n_valid": 1000, "n_test": 2000} and got["source"] == "embedded"
    assert got["exp"] == "smoke"
    assert got["inits"] == ["glorot_uniform", "standard"] and got["status"] == ["done"]
    assert {"activation", "backprop_grad", "weight_grad"} <= set(got["tensors"]) and got["axes"] >= 1


@pytest.mark.slow
def test_sweep_entry_point_ends_in_a_report_on_the_embedded_sample(tmp_path):
    """`make sweep`'s command, narrowed: data line first, report with figures, the sweep folder last."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "INITSUITE_DATA": ""}
    cmd = [sys.executable, "-m", "initsuite", "sweep", "experiment=default", f"paths.results={tmp_path}",
           "init=glorot_uniform,truncated_normal_tf1", "activation=relu", "model.depth=2", "model.width=16",
           "seed=0", "train.max_steps=12", "train.eval_every=6", "probes.every=6", "probes.batch_size=50",
           "train.eval_examples=200", "dataset.source=embedded"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "sweeps" / "default"
    assert out.stdout.strip().splitlines()[-1] == str(sweep)
    assert out.stderr.splitlines()[0].startswith("MNIST: embedded 10k-digit sample")
    html = (sweep / "report.html").read_text()
    assert "embedded 10k-digit sample" in html
    pngs = sorted(p.name for p in (sweep / "figures").glob("*.png"))
    assert "variance_at_init.png" in pngs and len(pngs) >= 4
    # the mission's headline figure is the report's first
    first = html.index("<figure id=")
    assert html[first:first + 40].startswith("<figure id='variance_at_init'")
    runs = pd.read_parquet(sweep / "runs.parquet")
    assert len(runs) == 2 and set(runs.data_source) == {"embedded"}
    assert set(runs.n_train) == {7000} and set(runs.n_test) == {2000}
    assert json.loads((sweep / "data_sources.json").read_text())["mnist"]["source"] == "embedded"
