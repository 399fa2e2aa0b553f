"""The shared example notebooks run end to end, headless, on a fresh state dir."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
            parts.append(out.get("data", {}).get("text/html", ""))
    return "\n".join(parts)


@pytest.mark.usefixtures("wolt_home")
def test_quickstart_notebook(wolt_home: Path) -> None:
    nb = execute("01-quickstart.ipynb")
    text = outputs_text(nb)
    assert "wolt-card wolt-run-card" in text  # the run card rendered as HTML
    assert "quickstart-classifier version 1" in text
    assert "champion" in text
    assert "champion accuracy on the test split: 0.9" in text
    assert (wolt_home / "mlflow.db").exists()  # the embedded store, in the fresh state dir
