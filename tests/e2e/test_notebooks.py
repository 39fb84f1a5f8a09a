"""Every notebook (jupytext percent-format .py) runs top to bottom without error.

The dataset notebooks (01-03) run on one demo build made once here (``configs/builds/demo.yaml``
on the shared demo world), passed in ``$HARVEST_NOTEBOOK_DATASET`` / ``$HARVEST_NOTEBOOK_WORLD``;
without them (a user running a notebook) they build their own.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(
    path: Path,
    tmp_path: Path,
    demo_build: Path,
    demo_world: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARVEST_NOTEBOOK_DATASET", str(demo_build))  # the kernel inherits it
    monkeypatch.setenv("HARVEST_NOTEBOOK_WORLD", str(demo_world))
    nb = jupytext.read(path)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, errors
    nbformat.validate(nb)
    # Figures render inline: every notebook that plots leaves PNG outputs in its cells.
    if "matplotlib" in path.read_text():
        assert any(
            "image/png" in out.get("data", {})
            for cell in nb.cells
            if cell.cell_type == "code"
            for out in cell.get("outputs", [])
        )


def test_no_outputs_are_committed() -> None:
    """The notebooks are .py files (jupytext percent): no .ipynb with outputs in the repo."""
    assert not list((REPO / "notebooks").glob("*.ipynb"))
    for path in NOTEBOOKS:
        assert path.read_text().startswith("# ---\n# jupyter:")
