"""The notebooks: committed clean, and each runs top to bottom against a finished pipeline run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01_data.ipynb", "02_folds.ipynb", "03_compare.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path: Path):
    """No outputs, no execution counts, no per-user metadata: diffs stay readable (fix: `make clean-notebooks`)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run `make clean-notebooks`"
    assert all(not c.metadata for c in nb.cells), f"{path.name}: cell metadata left; run `make clean-notebooks`"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"{path.name}: notebook metadata {set(nb.metadata)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_finished_run(path: Path, finished_run: Path, monkeypatch, tmp_path):
    """Execute every cell (a failing cell raises CellExecutionError naming it); figures and tables come out."""
    monkeypatch.setenv("MLIC_RUN", str(finished_run))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()  # a failing cell raises, naming it
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, for a look when the test fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert images and tables, f"{path.name}: expected figures and tables, got {len(images)} and {len(tables)}"
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert str(finished_run.resolve()) in text  # the first cell prints the run it opened: the finished run
    expected = {
        "01_data": ["primary"],  # a Planet tag in the label tables
        "02_folds": ["model baseline (baseline)"],  # the fold notebook's model line
        "03_compare": ["global-cut", "hourglass"],  # the fixture's experiment, and the second model
    }[path.stem]
    assert all(word in text for word in expected), f"{path.name}: missing {expected} in the outputs"
    if path.stem == "02_folds":
        assert "no hourglass model" not in text  # the run has one: its label maps were drawn
