"""%wolt_compare and %wolt_drift over a real local deployment, its response log and registry references."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FEATURES = ["f0", "f1", "f2"]


@pytest.fixture
def deployed(shell, wolt_home: Path):
    """A classifier deployment: main (good), challenger (worse), a shadow; references kept at register time."""
    from sklearn.linear_model import LogisticRegression

    import wolt_jupyter
    from wolt_jupyter import deployments

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 3)), columns=FEATURES)
    y = (X["f0"] + 0.5 * X["f1"] > 0).astype(int)
    good = LogisticRegression().fit(X, y)
    bad = LogisticRegression().fit(X[["f2"]].assign(f0=0.0, f1=0.0)[FEATURES], y)  # ignores the signal
    for model in (good, bad):
        wolt_jupyter.register(model, name="clf", input_example=X.head(3), reference=X)
    d = deployments.deploy("clf", "models:/clf/1", ab=["models:/clf/2=50"], shadow=["models:/clf/1"])
    assert d.status == "ready"
    yield shell
    with contextlib.suppress(Exception):
        deployments.undeploy("clf")


def test_compare_with_feedback_finds_the_better_variant(deployed) -> None:
    import requests

    from wolt_jupyter import deployments

    rng = np.random.default_rng(1)
    rows = pd.DataFrame(rng.normal(size=(400, 3)), columns=FEATURES)
    truth = (rows["f0"] + 0.5 * rows["f1"] > 0).astype(int)
    out = deployments.predict("clf", rows, per_row=True)
    # ground truth arrives later, through the runtime's feedback endpoint, joined by request id
    from wolt_jupyter.client import EndpointError, feedback_token, send_feedback

    base = deployments.get("clf").url
    url = base + "/v2/models/clf/feedback"
    items = [{"id": i, "ground_truth": int(t)} for i, t in zip(out["id"], truth, strict=True)]
    # ground truth is trusted by the comparison: without the feedback token nothing is written
    anonymous = requests.post(url, json={"feedback": items}, timeout=30)
    assert anonymous.status_code == 401 and "feedback.token" in anonymous.json()["error"]
    assert send_feedback(base, "clf", items) == 400  # the notebook user's own feedback token
    with pytest.raises(EndpointError, match="needs a string 'id'"):
        send_feedback(base, "clf", [{"ground_truth": 1}])
    bad_time = [{"id": "x", "ground_truth": 1, "time": "x"}]
    bad = requests.post(
        url,
        json={"feedback": bad_time},
        headers={"authorization": f"Bearer {feedback_token('clf')}"},
        timeout=30,
    )
    assert bad.status_code == 400 and "'time' must be epoch seconds" in bad.json()["error"]

    result = deployed.run_line_magic("wolt_compare", "clf --metric accuracy")
    table = result.table
    assert list(table.index) == ["main", "challenger", "shadow"]
    assert table.loc["main", "accuracy"] > 0.9 and table.loc["challenger", "accuracy"] < 0.75
    assert table.loc["main", "requests"] + table.loc["challenger", "requests"] == 400
    assert bool(table.loc["challenger", "significant"]) and table.loc["challenger", "accuracy_p_value"] < 1e-6
    # the shadow runs the main model: it agrees with main on every request both answered
    assert result.shadow_table.loc["shadow", "agreement"] == 1.0
    assert result.shadow_table.loc["shadow", "paired_requests"] == table.loc["main", "requests"]


def test_drift_flags_the_shifted_feature(deployed) -> None:
    from wolt_jupyter import deployments

    rng = np.random.default_rng(2)
    # ~500 rows reach main (a 50/50 split): enough that an unshifted feature's PSI stays well under 0.2 by
    # chance (it is ~ bins/n); with 300 rows (~150 to main) f0 once read 0.2+ in a full run
    rows = pd.DataFrame(rng.normal(size=(1000, 3)), columns=FEATURES)
    rows["f2"] += 1.5  # production moved away from training on one feature
    deployments.predict("clf", rows, per_row=True)
    report = deployed.run_line_magic("wolt_drift", "clf --variant main")
    assert report.drifted == ["f2"]
    assert report.table.loc["f2", "psi"] > 0.2 and report.table.loc["f0", "psi"] < 0.2
    assert "drifted features: f2" in repr(report) and "<table" in report._repr_html_()


def test_reports_say_what_is_missing(shell, deployed, capsys) -> None:
    shell.run_cell("%wolt_compare clf --metric accuracy")
    captured = capsys.readouterr()
    assert "has logged no responses yet" in captured.out + captured.err
    shell.run_cell("%wolt_compare clf --metric f1x")
    captured = capsys.readouterr()
    assert "invalid choice" in captured.out + captured.err or "unknown metric" in captured.out + captured.err
