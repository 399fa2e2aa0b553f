"""``%wolt_panel``: the ipywidgets panel deploys, changes traffic and undeploys real local deployments, with
models from a real MLflow store, driven as a user would (widget values and button clicks)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pytest

from helpers import FEATURES, register_eta_models


@pytest.fixture
def registered(wolt_home: Path) -> None:
    register_eta_models()


def test_panel_deploys_changes_traffic_and_undeploys(shell, registered) -> None:
    from wolt_jupyter import deployments

    panel = shell.run_line_magic("wolt_panel", "")
    try:
        assert "v2" in panel.registry_box.value and "@champion" in panel.registry_box.value
        assert "models:/eta@champion" in panel.main_model.options
        assert "no deployments yet" in panel.deployments_box.children[0].value

        panel.name_input.value = "eta"
        panel.main_model.value = "models:/eta@champion"
        panel.challenger.value = "models:/eta/2"
        panel.challenger_weight.value = 30
        panel.shadow.value = "models:/eta/2"
        panel.deploy_button.click()
        assert panel.message.value == "", panel.message.value
        d = deployments.get("eta")
        assert d.status == "ready"
        assert {v["name"]: v["traffic"] for v in d.variants} == {"main": 70, "challenger": 30, "shadow": None}
        assert [p.name for p in panel.deployments] == ["eta"]

        row = panel.deployments_box.children[0]
        weights, apply = row.children[1].children[:2]
        weights.value = "main=0 challenger=100"
        apply.click()
        d = deployments.get("eta")
        assert d.revision == 2 and {v["name"]: v["traffic"] for v in d.variants}["challenger"] == 100
        answered = deployments.predict(
            "eta", pd.DataFrame([[1.0, 2.0, 3.0]] * 4, columns=FEATURES), per_row=True
        )
        assert set(answered["variant"]) == {"challenger"}

        # a wrong weight is the panel's message, not a traceback; nothing changes
        row = panel.deployments_box.children[0]
        weights, apply = row.children[1].children[:2]
        weights.value = "main=10 challenger=10"
        apply.click()
        assert "100" in panel.message.value and deployments.get("eta").revision == 2

        # undeploy asks first
        undeploy = panel.deployments_box.children[0].children[1].children[-1]
        undeploy.click()
        assert deployments.get("eta").status == "ready"  # not yet
        yes = panel.confirm_box.children[0]
        assert yes.description == "yes, undeploy eta"
        yes.click()
        assert panel.deployments == [] and "eta" not in deployments.revision_store().names()
    finally:
        with contextlib.suppress(Exception):
            deployments.undeploy("eta")


def test_panel_filters_and_reports_bad_input(shell, registered) -> None:
    panel = shell.run_line_magic("wolt_panel", "nosuch")
    assert "no registered models" in panel.registry_box.value
    panel = shell.run_line_magic("wolt_panel", "eta")
    panel.name_input.value = "Bad_Name"
    panel.deploy_button.click()
    assert "Bad_Name" in panel.message.value and "DNS" in panel.message.value
    assert "wolt panel" in repr(panel)
