"""The notebook runs top to bottom against a smoke sweep (so it cannot rot) and draws its figures."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "explore_sweep.ipynb"


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """A real two-run sweep (tiny tanh MLPs, standard vs glorot_uniform), collected."""
    from initsuite.sweep import run_grid

    out = tmp_path_factory.mktemp("nb")
    collected = run_grid([["init=standard"], ["init=glorot_uniform"]],
                         ["experiment=smoke", "activation=tanh", "model.depth=3", f"paths.results={out}"],
                         verbose=False)
    assert set(collected["runs"].status) == {"done"}
    return collected.sweep_dir


@pytest.mark.slow
def test_notebook_executes_and_draws_two_figures(smoke_sweep, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("INITSUITE_SWEEP", str(smoke_sweep))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [c for c in nb.cells if c.cell_type == "code"
              and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    assert len(images) >= 2  # the two hand-drawn figures (and the library's)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert str(smoke_sweep) in text  # it read the sweep it was given


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
