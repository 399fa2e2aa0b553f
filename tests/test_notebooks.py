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
    from wolt_jupyter.responses import read_frame

    log = read_frame("diabetes")
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


def test_automatic_updates_notebook_promotes_the_better_version(wolt_home: Path) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client
    from wolt_jupyter.updater.history import updates
    from wolt_jupyter.updater.run import stop_service

    try:
        nb = execute("04-automatic-updates.ipynb")
    finally:  # a failed cell must not leave the service or the deployment running
        stop_service("diabetes-auto")
        if "diabetes-auto" in deployments.revision_store().names():
            deployments.undeploy("diabetes-auto")
    text = outputs_text(nb)
    assert "the service decided: promote" in text
    assert "main=100% (models:/diabetes-auto/2)" in text  # the promotion carried out, before the undeploy
    assert str(client().get_registered_model("diabetes-auto").aliases["champion"]) == "2"
    table = updates("diabetes-auto").table
    assert list(table.drop_duplicates("step")["step"]) == ["offline", "shadow", "canary 50%", "canary 100%"]
    live_mae = table[table["check"] == "mae vs champion"]
    # the feedback labels reached the sequential test of the live MAE (n/a while there were too few)
    assert (live_mae["verdict"] == "pass").any() and set(live_mae["verdict"]) <= {"pass", "n/a"}
