"""The local target end to end: real runtime processes on 127.0.0.1, models from a real MLflow store,
everything driven through the magics in a real IPython shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deploy_support import pid_of


@pytest.mark.usefixtures("undeploy_all")
def test_ab_shadow_traffic_promote_rollback_undeploy(shell, models, rows, wolt_home, capsys) -> None:
    shell.user_ns["rows"] = rows
    d = shell.run_line_magic(
        "wolt_deploy", f"eta --model {models['champion']} --ab {models['v2']}=30 --shadow {models['v2']}"
    )
    assert d.status == "ready" and d.url.startswith("http://127.0.0.1:") and d.revision == 1
    assert [(v["name"], v["model"], v["traffic"]) for v in d.variants] == [
        ("main", "models:/eta/1", 70),
        ("challenger", "models:/eta/2", 30),
        ("shadow", "models:/eta/2", None),
    ]
    progress = capsys.readouterr().out  # printed while waiting
    assert (
        "starting eta on http://127.0.0.1:" in progress and "eta ready: main, challenger, shadow" in progress
    )
    pid = pid_of(wolt_home, "eta")

    out = shell.run_line_magic("wolt_predict", "eta rows --per-row")
    shares = out["variant"].value_counts(normalize=True)
    assert set(shares.index) == {"main", "challenger"} and 0.15 < shares["challenger"] < 0.45
    # each variant answers with its own model: v2 predicts 100x v1
    expected = rows.sum(axis=1)
    main = out["variant"] == "main"
    assert np.allclose(np.ravel(out.loc[main].iloc[:, 0].tolist()), expected[main], atol=1e-6)
    assert np.allclose(np.ravel(out.loc[~main].iloc[:, 0].tolist()), 100 * expected[~main], rtol=1e-6)

    dry = shell.run_line_magic(
        "wolt_deploy", f"eta --model {models['champion']} --ab {models['v2']}=50 --dry-run"
    )
    assert dry.status == "dry-run" and dry.manifests[0]["kind"] == "LocalRuntime"
    assert "-  traffic: 70\n+  traffic: 50\n" in dry.diff and pid_of(wolt_home, "eta") == pid

    d = shell.run_line_magic("wolt_traffic", "eta main=0 challenger=100")
    assert d.revision == 2 and pid_of(wolt_home, "eta") == pid  # applied in place, no restart
    assert set(shell.run_line_magic("wolt_predict", "eta rows --per-row")["variant"]) == {"challenger"}

    d = shell.run_line_magic("wolt_rollback", "eta")
    assert d.revision == 3 and [v["traffic"] for v in d.variants if not v["shadow"]] == [70, 30]
    assert pid_of(wolt_home, "eta") == pid

    d = shell.run_line_magic("wolt_promote", "eta main")
    assert [v["name"] for v in d.variants] == ["main", "shadow"] and pid_of(wolt_home, "eta") == pid
    assert set(shell.run_line_magic("wolt_predict", "eta rows --per-row")["variant"]) == {"main"}

    # every request is logged, and the shadow saw a copy of each: 3 rounds of 200 rows, live + shadow
    log = shell.run_line_magic("wolt_responses", "eta --revision all")
    assert len(log) == 3 * 200 * 2
    assert set(log.loc[log["shadow"], "variant"]) == {"shadow"} and log["shadow"].sum() == 600
    assert set(log.loc[~log["shadow"], "id"]) == set(log.loc[log["shadow"], "id"])
    # each row carries the revision that served it and the registry version its variant ran
    assert sorted(set(log["revision"])) == [1, 2, 4]  # rounds at revisions 1 (A/B), 2 (traffic), 4 (promoted)
    versions = log.groupby("variant")["model_version"].unique().map(list).to_dict()
    assert versions == {"main": ["1"], "challenger": ["2"], "shadow": ["2"]}
    # by default an analysis reads since the last deploy of other models: the promoted revision only
    assert set(shell.run_line_magic("wolt_responses", "eta")["revision"]) == {4}
    info = shell.run_line_magic("wolt_responses", "eta --info")
    assert info.records == 3 * 200 * 2 and info.bytes > 0 and "removed by retention" in info._repr_html_()
    exported = shell.run_line_magic(
        "wolt_responses", f"eta --revision all --export {wolt_home / 'eta.parquet'}"
    )
    assert exported.export["rows"] == len(log) and "exported" in repr(exported)
    import pandas as pd

    assert pd.read_parquet(wolt_home / "eta.parquet")["id"].tolist() == log["id"].tolist()
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="revision number"):
        shell.run_line_magic("wolt_responses", "eta --revision latest")
    listed = shell.run_line_magic("wolt_deployments", "")
    assert listed.loc[0, "response_log"].startswith("1,200 rows")

    targets = json.loads((wolt_home / "prometheus" / "targets.json").read_text())
    assert targets[0]["labels"]["deployment_name"] == "eta"

    shell.run_line_magic("wolt_undeploy", "eta")
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert json.loads((wolt_home / "prometheus" / "targets.json").read_text()) == []
    assert shell.run_line_magic("wolt_deployments", "").empty
    assert len(shell.run_line_magic("wolt_responses", "eta")) == len(log)  # the log outlives the deployment

    # a redeploy under the same name starts a new revision in the log; analyses follow it
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['v2']}")
    assert d.revision == 5 and "response log" in repr(d)
    shell.run_line_magic("wolt_predict", "eta rows --per-row")
    fresh = shell.run_line_magic("wolt_responses", "eta")
    assert len(fresh) == 200 and set(fresh["revision"]) == {5} and set(fresh["model_version"]) == {"2"}
    assert len(shell.run_line_magic("wolt_responses", "eta --revision all")) == len(log) + 200
    shell.run_line_magic("wolt_undeploy", "eta")


@pytest.mark.usefixtures("undeploy_all")
def test_deployment_outlives_the_kernel_that_made_it(shell, models, rows, wolt_home) -> None:
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'wolt_jupyter')\n"
        f"d = ip.run_line_magic('wolt_deploy', 'other --model {models['v1']}')\n"
        "print(d.status)\n"
    )
    env = {**os.environ, "WOLT_JUPYTER_HOME": str(wolt_home)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ready"), proc.stderr[-2000:]

    table = shell.run_line_magic("wolt_deployments", "")
    assert table.set_index("name").loc["other", "status"] == "ready"
    shell.user_ns["rows"] = rows.head(5)
    out = shell.run_line_magic("wolt_predict", "other rows")
    assert list(out["variant"]) == ["main"] * 5


@pytest.mark.usefixtures("undeploy_all")
def test_dead_process_is_detected_and_redeploy_restarts_it(shell, models, wolt_home) -> None:
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['v1']}")
    pid = pid_of(wolt_home, "eta")
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.3)
    from wolt_jupyter import deployments

    assert deployments.get("eta").status == "stopped"
    again = shell.run_line_magic("wolt_deploy", f"eta --model {models['v1']}")
    assert again.status == "ready" and again.url == d.url  # same port, same URL
    assert pid_of(wolt_home, "eta") != pid


@pytest.mark.usefixtures("undeploy_all")
def test_failed_start_shows_reason_and_log_tail(shell, models, wolt_home, capsys) -> None:
    import shutil

    from wolt_jupyter.registry import download_uri

    artifacts = download_uri("models:/eta/2").removeprefix("file://")
    shutil.rmtree(artifacts)  # the registry still lists version 2, but its files are gone
    result = shell.run_cell(f"%wolt_deploy broken --model {models['v2']}")
    out = capsys.readouterr().out
    assert not result.success
    assert "DeployFailed: deployment 'broken' failed to start: the runtime exited" in out
    assert "runtime.log (last lines)" in out
    assert shell.run_line_magic("wolt_deployments", "").empty  # nothing half-made is left


def test_wrong_deploy_arguments_are_usage_errors(shell, models, capsys) -> None:
    for line, expected in [
        ("eta", "nothing to deploy"),
        (f"Eta --model {models['v1']}", "not a DNS-1123 label"),
        (f"eta --model {models['v1']} --ab {models['v2']}=100", "leaving nothing for 'main'"),
        (f"eta --model {models['v1']} --ab {models['v2']}", "expected [NAME:]URI=WEIGHT"),
        ("eta --model models:/eta@nobody", "has no alias 'nobody'"),
        (f"eta --model {models['v1']} --target moon", "invalid choice"),
    ]:
        result = shell.run_cell(f"%wolt_deploy {line}")
        captured = capsys.readouterr()
        assert not result.success and expected in captured.out + captured.err, (line, captured)
    for cell, expected in [
        ("%wolt_traffic ghost main=100", "no deployment named 'ghost'"),
        ("%wolt_traffic ghost main=half", "weights are whole numbers"),
    ]:
        shell.run_cell(cell)
        captured = capsys.readouterr()
        assert expected in captured.out + captured.err
