"""``mlflow deployments … -t wolt-local``: MLflow's own CLI drives the local target through the plugin, with the
exit codes and output MLflow's CLI expects; errors are one line; ``predict`` takes MLflow's request forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def _mlflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WOLT_JUPYTER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "mlflow", "deployments", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home.parent,
        timeout=300,
    )


@pytest.mark.usefixtures("undeploy_all")
@pytest.mark.e2e
def test_cli_round_trip_with_exit_codes(models, rows, wolt_home, tmp_path) -> None:
    create = _mlflow(wolt_home, "create", "-t", "wolt-local", "--name", "eta", "-m", models["v1"])
    assert create.returncode == 0, create.stderr[-3000:]
    assert "python_function deployment eta is created" in create.stdout

    got = _mlflow(wolt_home, "get", "-t", "wolt-local", "--name", "eta")
    assert got.returncode == 0 and "status: ready" in got.stdout and "flavor: python_function" in got.stdout

    listed = _mlflow(wolt_home, "list", "-t", "wolt-local")
    assert listed.returncode == 0 and "'eta'" in listed.stdout, listed.stdout

    (tmp_path / "rows.json").write_text(rows.head(4).to_json())  # what `pd.read_json` reads
    pred = _mlflow(
        wolt_home, "predict", "-t", "wolt-local", "--name", "eta", "-I", str(tmp_path / "rows.json")
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    answer = pd.DataFrame(json.loads(pred.stdout.strip().splitlines()[-1]))
    assert np.allclose(np.ravel(answer.iloc[:, 0].tolist()), rows.head(4).sum(axis=1), atol=1e-6)

    update = _mlflow(
        wolt_home,
        "update",
        "-t",
        "wolt-local",
        "--name",
        "eta",
        "-m",
        models["v1"],
        "-C",
        f"ab={models['v2']}=20",
    )
    assert update.returncode == 0, update.stderr[-3000:]
    assert "Deployment eta is updated (with flavor python_function)" in update.stdout
    from wolt_jupyter import deployments

    assert [(v["name"], v["traffic"]) for v in deployments.get("eta").variants] == [
        ("main", 80),
        ("challenger", 20),
    ]

    # an error is MLflow's one-line "Error: …" and exit 1, not a traceback
    again = _mlflow(wolt_home, "create", "-t", "wolt-local", "--name", "eta", "-m", models["v1"])
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert (
        again.stderr.strip().splitlines()[-1]
        == "Error: deployment 'eta' exists; use update_deployment (`mlflow deployments update`)"
    )
    bad = _mlflow(wolt_home, "create", "-t", "wolt-local", "--name", "other", "-m", "models:/eta@nobody")
    assert (
        bad.returncode == 1
        and "Traceback" not in bad.stderr
        and "nobody" in bad.stderr.strip().splitlines()[-1]
    )

    deleted = _mlflow(wolt_home, "delete", "-t", "wolt-local", "--name", "eta")
    assert deleted.returncode == 0 and "Deployment eta is deleted" in deleted.stdout
    assert deployments.deployments().empty


@pytest.mark.usefixtures("undeploy_all")
def test_predict_takes_mlflow_request_forms(models, rows) -> None:
    from mlflow.deployments import get_deploy_client

    client = get_deploy_client("wolt-local")
    made = client.create_deployment("eta", models["v1"])
    assert made["flavor"] == "python_function" and made["status"] == "ready"
    head = rows.head(3)
    want = head.sum(axis=1).to_numpy()
    forms = {
        "DataFrame": head,
        "dict of columns": {c: head[c].tolist() for c in head.columns},
        "dataframe_split": {"dataframe_split": json.loads(head.to_json(orient="split"))},
        "dataframe_records": {"dataframe_records": head.to_dict(orient="records")},
        "inputs (columns)": {"inputs": {c: head[c].tolist() for c in head.columns}},
        "inputs (tensor)": {"inputs": head.to_numpy().tolist()},
        "JSON string": json.dumps({"dataframe_split": json.loads(head.to_json(orient="split"))}),
    }
    for what, data in forms.items():
        out = client.predict("eta", data)
        assert np.allclose(np.ravel(out.iloc[:, 0].tolist()), want, atol=1e-6), what
    one = client.predict("eta", {c: float(head[c].iloc[0]) for c in head.columns})
    assert len(one) == 1 and np.isclose(float(np.ravel(one.iloc[:, 0].tolist())[0]), want[0])
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="dataframe_split needs"):
        client.predict("eta", {"dataframe_split": [1, 2]})
    client.delete_deployment("eta")


@pytest.mark.usefixtures("undeploy_all")
def test_update_with_a_new_model_replaces_main_and_keeps_the_split(models, rows) -> None:
    """MLflow's update contract: a new model URI is the main variant's new model; the challenger, its weight
    and the shadow stay (it once turned an 80/20 A/B with a shadow into one variant at 100 %). A config-only
    update keeps every model; a config with a split deploys that split."""
    from mlflow.deployments import get_deploy_client

    from wolt_jupyter import deployments

    client = get_deploy_client("wolt-local")
    client.create_deployment(
        "eta", models["v1"], config={"ab": [f"{models['v2']}=20"], "shadow": [models["v3"]]}
    )
    before = {v.name: (v.model, v.traffic, v.shadow) for v in deployments.revision_store().spec("eta").variants}
    assert before["main"] == ("models:/eta/1", 80, False) and len(before) == 3

    client.update_deployment("eta", model_uri=models["v3"])
    after = {v.name: (v.model, v.traffic, v.shadow) for v in deployments.revision_store().spec("eta").variants}
    assert after["main"] == ("models:/eta/3", 80, False)
    assert {k: v for k, v in after.items() if k != "main"} == {k: v for k, v in before.items() if k != "main"}
    from wolt_jupyter.client import V2Client

    main = V2Client(deployments.get("eta").url, "eta").infer(rows.head(50), variant="main")
    (out,) = main.outputs.values()
    assert main.variant == "main" and np.allclose(np.ravel(out), rows.head(50).sum(axis=1) * 3, atol=1e-6)

    client.update_deployment("eta", config={"sticky_key": "user_id"})
    spec = deployments.revision_store().spec("eta")
    assert spec.routing.sticky_key == "user_id"
    assert {v.name: (v.model, v.traffic, v.shadow) for v in spec.variants} == after

    client.update_deployment("eta", config={"ab": [f"{models['v2']}=50"]})
    split = {v.name: (v.model, v.traffic) for v in deployments.revision_store().spec("eta").variants}
    assert split == {"main": ("models:/eta/3", 50), "challenger": ("models:/eta/2", 50)}

