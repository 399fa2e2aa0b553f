"""Analyses follow the revision (issue 13): ``--revision`` on every magic that reads the response log, the
panel's series per run of the same models with the revision changes marked, drift over one model version.

The panel tests write a response log with known contents and real revision records under a fresh state
dir (no server); the drift and compare test runs a real local deployment redeployed under the same name.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

from wolt_jupyter.monitoring.responselog import ResponseLogSource
from wolt_jupyter.revisions import SINCE_DEPLOY, DeploymentRecord, RevisionStore
from wolt_jupyter.spec import DeploymentSpec
from wolt_jupyter.widgets.monitor import monitor

from helpers import record_revisions, write_revised_log

FEATURES = ["f0", "f1", "f2"]


# -- the option's value ---------------------------------------------------------------------------------------
def test_parse_revision_forms() -> None:
    from wolt_jupyter.magics import parse_revision

    assert parse_revision(None) == SINCE_DEPLOY
    assert parse_revision("3") == 3 and parse_revision(" 3,4 ") == [3, 4] and parse_revision("ALL") == "all"
    for bad in ("latest", "x", "1.5", "-1", "", "3,", "3;4"):
        with pytest.raises(UsageError, match=r"--revision 3\), several \(--revision 3,4\) or all"):
            parse_revision(bad)


@pytest.mark.parametrize("magic", ["wolt_monitor", "wolt_compare", "wolt_drift", "wolt_responses"])
def test_every_magic_rejects_a_bad_revision_with_the_fix(shell, wolt_home: Path, magic: str) -> None:
    record_revisions(wolt_home, "eta", [{"main": "eta/1"}, {"main": "eta/2"}])
    with pytest.raises(UsageError, match=r"several .--revision 3,4. or all"):
        shell.run_line_magic(magic, "eta --revision latest")
    # a number the deployment never had names the ones it has
    with pytest.raises(UsageError, match=r"deployment 'eta' has no revision 7; its revisions: 1-2"):
        shell.run_line_magic(magic, "eta --revision 7")


def test_revisions_for_resolves_the_default_and_checks_numbers(wolt_home: Path) -> None:
    from wolt_jupyter.deployments import revisions_for
    from wolt_jupyter.errors import InvalidArgument

    # r1 A; r2 B; r3 B with other traffic (same models); undeployed at r3; r4 B again: a new run
    record_revisions(wolt_home, "eta", [{"main": "m/1"}, {"main": "m/2"}, {"main": "m/2"}])
    store = RevisionStore(wolt_home)
    assert revisions_for("eta") == [2, 3] and revisions_for("eta", "all") is None
    assert revisions_for("eta", 1) == [1] and revisions_for("eta", [3, 1]) == [1, 3]
    for bad in ("3", 2.0, True, [1, "2"]):
        with pytest.raises(InvalidArgument, match="revision must be a revision number"):
            revisions_for("eta", bad)
    store.remove("eta")  # undeployed: the log outlives it, every row is read by default
    assert revisions_for("eta") is None
    spec = DeploymentSpec.from_dict(
        {"name": "eta", "variants": [{"name": "main", "model": "models:/m/2", "traffic": 100}]}
    )
    store.save_record(DeploymentRecord("eta", "local", revision=store.add_revision(spec)))
    assert store.model_runs("eta") == {1: 1, 2: 2, 3: 2, 4: 4}  # the undeploy ended the run of m/2
    assert revisions_for("eta") == [4]


# -- the panel ------------------------------------------------------------------------------------------------
@pytest.fixture
def revised(tmp_path: Path, wolt_home: Path) -> tuple[str, dict[int, int], float]:
    record_revisions(wolt_home, "eta", [{"main": "m/1", "shadow": "m/1"}, {"main": "m/2", "shadow": "m/1"},
                               {"main": "m/2", "shadow": "m/1"}])  # fmt: skip
    url = f"sqlite:///{tmp_path / 'eta.db'}"
    now = time.time()
    return url, write_revised_log(url, now), now


@pytest.mark.parametrize("step", ["30s", "0.5s"])  # from the per-second rollup; finer: from the log's rows
def test_panel_default_shows_the_run_since_the_last_deploy(revised, step: str) -> None:
    url, sent, now = revised
    since = "15m" if step == "30s" else "5m"
    panel = monitor("eta", since=since, step=step, refresh=0, source=ResponseLogSource(url))
    try:
        s = panel.data.summary
        # revisions 2 and 3 serve the same models: one series, the variant's own name; revision 1 left out
        assert list(s.index) == ["main", "shadow"]
        assert s.loc["main", "requests"] == sent[2] + sent[3] == s.loc["shadow", "requests"]
        assert s.loc["main", "p50"] == pytest.approx(0.004, rel=0.2)  # revision 2's latency, not r1's 2 ms
        assert [m.label for m in panel.data.revision_marks] == ["r1", "r2", "r3 (same models)"]
        assert panel.data.revision_marks[1].time == pytest.approx(now - 150, abs=0.01)
        assert "revisions 2-3" in panel.data.source and panel.message is None
    finally:
        panel.close()


def test_panel_all_revisions_starts_a_series_at_the_redeploy(revised) -> None:
    from wolt_jupyter.monitoring import figures

    url, sent, now = revised
    panel = monitor("eta", since="15m", step="30s", refresh=0, source=ResponseLogSource(url), revision="all")
    try:
        data = panel.data
        s = data.summary
        assert list(s.index) == ["main (r1)", "main (r2)", "shadow (r1)", "shadow (r2)"]
        assert s.loc["main (r1)", "requests"] == sent[1]
        assert s.loc["main (r2)", "requests"] == sent[2] + sent[3]  # the traffic change continues the run
        assert s.loc["main (r1)", "share"] + s.loc["main (r2)", "share"] == pytest.approx(1.0)
        req = data.requests
        assert (req["main (r2)"].fillna(0) > 0).idxmax().timestamp() >= now - 150 - 30  # starts at r2
        assert req["main (r1)"].fillna(0)[req.index.map(lambda t: t.timestamp()) > now - 120].sum() == 0
        # the prediction histogram and shadow agreement follow the same series
        assert {"main (r1)", "main (r2)"} <= set(data.predictions.columns)
        assert set(data.agreement.columns) == {"shadow (r1) vs main (r1)", "shadow (r2) vs main (r2)"}
        # the revision changes are vertical lines on every time plot, named on the first
        fig = figures.render(data)
        marks = [line for line in fig.axes[0].lines if line.get_linestyle() == "-."]
        assert len(marks) == 3 and {t.get_text() for t in fig.axes[0].texts} >= {"r2", "r3 (same models)"}
        assert "main (r2)" in panel._text()
    finally:
        panel.close()


def test_panel_one_revision_and_an_empty_one(revised, wolt_home: Path) -> None:
    url, sent, _ = revised
    panel = monitor("eta", since="15m", step="30s", refresh=0, source=ResponseLogSource(url), revision=1)
    try:
        assert panel.data.summary.loc["main", "requests"] == sent[1] and "revision 1" in panel.data.source
    finally:
        panel.close()
    # an open panel follows a redeploy: at its next refresh it reads the new revision (nothing answered yet)
    panel = monitor("eta", since="15m", step="30s", refresh=0, source=ResponseLogSource(url))
    try:
        assert panel.data.summary.loc["main", "requests"] == sent[2] + sent[3]
        record_revisions(wolt_home, "eta", [{"main": "eta/3"}])
        assert panel.refresh() is not None and panel.data.empty
        assert panel.message == "no requests of revision 4 logged for 'eta' in this window"
    finally:
        panel.close()


def test_cross_check_reference_stays_revision_blind(revised) -> None:
    """A source made without ``revision`` (what Prometheus is checked against) counts every row by variant."""
    url, sent, now = revised
    data = ResponseLogSource(url).snapshot("eta", since=now - 900, until=now + 1, step=30)
    assert data.summary.loc["main", "requests"] == sum(sent.values()) and data.revision_marks == ()


def test_prometheus_panel_refuses_a_revision(wolt_home: Path) -> None:
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.monitoring.prometheus import PrometheusSource

    record_revisions(wolt_home, "eta", [{"main": "m/1"}])
    with pytest.raises(InvalidArgument, match="needs the response log"):
        monitor("eta", refresh=0, source=PrometheusSource("http://127.0.0.1:9"), revision=1)


# -- drift and compare over a real redeploy -------------------------------------------------------------------
@pytest.fixture
def redeployed(shell, wolt_home: Path):
    """'clf' served by v1 (shifted traffic on f2), then redeployed under the same name on v2 (traffic like
    the training data). Both versions keep the training inputs as their drift reference."""
    from sklearn.linear_model import LogisticRegression

    import wolt_jupyter
    from wolt_jupyter import deployments

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 3)), columns=FEATURES)
    y = (X["f0"] + 0.5 * X["f1"] > 0).astype(int)
    for c in (1.0, 0.1):
        wolt_jupyter.register(
            LogisticRegression(C=c).fit(X, y), name="clf", input_example=X.head(3), reference=X
        )
    assert deployments.deploy("clf", "models:/clf/1").status == "ready"
    shifted = pd.DataFrame(rng.normal(size=(150, 3)), columns=FEATURES).assign(f2=lambda d: d["f2"] + 1.5)
    deployments.predict("clf", shifted, per_row=True)
    assert deployments.deploy("clf", "models:/clf/2").revision == 2
    calm = pd.DataFrame(rng.normal(size=(120, 3)), columns=FEATURES)
    deployments.predict("clf", calm, per_row=True)
    yield shell
    with contextlib.suppress(Exception):
        deployments.undeploy("clf")


@pytest.mark.integration
def test_drift_and_compare_read_one_model_version(redeployed) -> None:
    shell = redeployed
    now = shell.run_line_magic("wolt_drift", "clf --variant main")
    assert (
        now.drifted == [] and now.current_rows == 120 and "of revision 2 (since the last deploy" in repr(now)
    )
    # every revision: still only the rows version 2 answered, not v1's shifted ones under the same name
    every = shell.run_line_magic("wolt_drift", "clf --variant main --revision all")
    assert every.drifted == [] and every.current_rows == 120 and every.model == "models:/clf/2"
    before = shell.run_line_magic("wolt_drift", "clf --revision 1")
    assert before.model == "models:/clf/1" and before.current_rows == 150 and before.drifted == ["f2"]

    compared = shell.run_line_magic("wolt_compare", "clf")
    assert compared.table.loc["main", "requests"] == 120 and "rows of revision 2" in repr(compared)
    merged = shell.run_line_magic("wolt_compare", "clf --revision all")
    assert merged.table.loc["main", "requests"] == 270
    assert "variant main served versions 1 and 2" in repr(merged)  # said, not silently merged
    assert shell.run_line_magic("wolt_compare", "clf --revision 1,2").table.loc["main", "requests"] == 270
