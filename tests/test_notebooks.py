"""The shared example notebooks run end to end, headless, on a fresh state dir."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, *, then: str | None = None) -> nbformat.NotebookNode:
    """Run a shipped notebook in a real kernel; ``then``: one more cell run after it, in the same kernel."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if then is not None:
        nb.cells.append(nbformat.v4.new_code_cell(then))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def stderr_boxes(nb: nbformat.NotebookNode) -> list[str]:
    """What a notebook would show in pink: MLflow's routine output belongs in the cards' log instead."""
    return [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]


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
    # MLflow's routine output is inside the cards' collapsed log, not in stderr boxes
    assert not stderr_boxes(nb)
    assert "<details class='wolt-log'>" in text


def test_deploy_notebook(wolt_home: Path) -> None:
    nb = execute("02-deploy.ipynb")
    text = outputs_text(nb)
    assert "wolt-card wolt-deployment-card" in text
    assert "variant challenger" in text and "models:/diabetes/2" in text
    # the split answered with both live variants, and the log holds the shadow's copies
    counts = next(c for c in nb.cells if "value_counts" in c.source)["outputs"][0]["data"]["text/plain"]
    assert "main" in counts and "challenger" in counts
    assert "diabetes (local) removed" in text and "shadow" in text  # the undeploy card says what was logged
    assert not stderr_boxes(nb)
    from wolt_jupyter.responses import responses

    log = responses("diabetes")
    assert log["shadow"].any() and len(log.loc[~log["shadow"]]) == 442  # every row of X, once live


def test_monitoring_notebook_leaves_figures(wolt_home: Path) -> None:
    import base64

    nb = execute("03-monitoring.ipynb")
    panel = next(c for c in nb.cells if c.source.startswith("%wolt_monitor"))
    images = [o["data"]["image/png"] for o in panel["outputs"] if "image/png" in o.get("data", {})]
    assert images and base64.b64decode(images[0]).startswith(b"\x89PNG")  # static figures survive export
    text = outputs_text(nb)
    # feedback by deployment name: every one of the 221 live requests got its label
    assert "221 request ids with ground truth" in text
    assert "Variants vs main" in text and "rmse (95% CI)" in text and "rmse_p_value" in text
    assert "within ±" in text  # the regression shadow: error distribution, not exact agreement
    assert not stderr_boxes(nb)
    drift = next(c for c in nb.cells if c.source.startswith("shifted ="))
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in drift["outputs"])
    assert "drifted features: bmi" in shown


# what the second run's kernel holds: what it sent, what %wolt_compare and the panel counted
PROBE = """
import json
from IPython import get_ipython
panels = [v for v in get_ipython().user_ns["Out"].values() if type(v).__name__ == "MonitorPanel"]
print("PROBE " + json.dumps({
    "sent": {str(k): int(v) for k, v in answers["variant"].value_counts().items()},
    "compared": {str(k): int(v) for k, v in result.table["requests"].items()},
    "panel": {str(k): int(v) for k, v in panels[-1].data.summary["requests"].items()},
    "marks": [label for _, label in panels[-1].data.revision_marks],
}))
"""


def test_monitoring_notebook_rerun_sees_only_its_own_revision(wolt_home: Path) -> None:
    """Issue 13: a second run of 03-monitoring in the same home adds to the same deployment name's log; its
    drift, compare and panel must read only the second deploy's rows (not the first run's shifted batch)."""
    import json
    import re

    first = execute("03-monitoring.ipynb")
    assert "drifted features: bmi" in _cell_text(first, "shifted =")
    second = execute("03-monitoring.ipynb", then=PROBE)
    probe = json.loads(_cell_text(second, "\nimport json").split("PROBE ", 1)[1])
    sent = probe["sent"]
    assert set(sent) == {"main", "challenger"} and sum(sent.values()) == 221  # every held-out row, once

    # the cell that says "nothing should drift here" reads the second deploy's rows only
    calm = _cell_text(second, "%wolt_drift diabetes-mon --variant main")
    assert "drifted features: none" in calm, calm
    assert "of revision 2 (since the last deploy" in calm
    assert int(re.search(r"over (\d+) logged rows", calm)[1]) == sent["main"]  # what that version answered
    assert "drifted features: bmi" in _cell_text(second, "shifted =")  # the new shifted batch still shows

    # compare and the panel count exactly what the second run sent (the first run's rows are in the window)
    assert probe["compared"] == {**sent, "shadow": sum(sent.values())}
    assert probe["panel"] == probe["compared"]
    assert probe["marks"][-1] == "r2"  # the redeploy is marked on the panel's time axis
    assert "rows of revision 2 (since the last deploy" in _cell_text(second, "result = %wolt_compare")


def _cell_text(nb: nbformat.NotebookNode, starts: str) -> str:
    cell = next(c for c in nb.cells if c.source.startswith(starts) or starts in c.source[:40])
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell["outputs"])
