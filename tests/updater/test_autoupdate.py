"""The update service on a real local deployment: traffic from real clients, the registry of a real MLflow
store; the service's traffic changes are revisions made through the deployments core under its lock."""

from __future__ import annotations

import threading
import time

import pytest

from deploy_support import Load, failures

pytestmark = pytest.mark.usefixtures("undeploy_all")


def _policy(**over):
    policy = {
        "deployment": "upd",
        "watch": {"model": "eta", "alias": "challenger", "poll_seconds": 0.3},
        "replay": {"requests": 50},
        "rollout": {
            "shadow": {"requests": 30},
            "canary": [{"weight": 50, "bake": "1s"}, {"weight": 100, "bake": "1s"}],
        },
        "guards": {"min_sample": 20, "limit_min_requests": 10, "step_deadline": "3m", "max_p99_ms": 10000},
    }
    policy.update(over)
    return policy


def test_a_new_version_is_replayed_shadowed_canaried_and_promoted(models, wolt_home) -> None:
    import wolt_jupyter
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import serve

    d = deployments.deploy("upd", model=models["v1"])
    mlflow_client().set_registered_model_alias("eta", "challenger", "2")  # the candidate: version 2, not 3
    stop = threading.Event()
    with Load(d.url, "upd", concurrency=3) as load:
        load.wait_for(80)  # logged traffic for the replay gate
        service = threading.Thread(
            target=serve, args=(Policy.load(_policy()), stop), kwargs={"mlflow": False}, daemon=True
        )
        service.start()
        try:
            deadline = time.monotonic() + 240
            while str(mlflow_client().get_registered_model("eta").aliases.get("champion")) != "2":
                assert time.monotonic() < deadline, wolt_jupyter.updates("upd").table.tail(10).to_string()
                assert service.is_alive()
                time.sleep(0.2)
        finally:
            stop.set()
            service.join(60)
        n = len(load.outcomes)
        load.wait_for(n + 50)
    assert failures(load.outcomes) == []  # no client saw a failure across five revisions
    now = deployments.get("upd")
    assert [(v["name"], v["model"], v["traffic"]) for v in now.variants] == [("main", "models:/eta/2", 100)]
    assert all(o.value > 50 for o in load.outcomes[-30:])  # version 2 answers ~100x
    history = wolt_jupyter.updates("upd").table
    actions = [a for a in history.drop_duplicates(["step", "action"])["action"] if a != "hold"]
    assert actions[-1] == "promote" and "advance" in actions
    steps = set(history["step"])
    assert {"replay", "shadow"} <= steps and any("50" in s for s in steps)
    revisions = deployments.revision_store().revisions("upd")
    assert len(revisions) >= 4  # shadow, canary 50, canary 100, promote: each one an ordinary revision


def test_one_service_per_deployment_and_the_magic_starts_and_stops_it(
    shell, models, wolt_home, tmp_path, capsys
) -> None:
    import os
    import stat

    import yaml

    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client
    from wolt_jupyter.locking import DeploymentBusy
    from wolt_jupyter.updater import run
    from wolt_jupyter.updater.history import updater_dir
    from wolt_jupyter.updater.policy import Policy

    deployments.deploy("upd", model=models["v1"])
    mlflow_client().set_registered_model_alias("eta", "challenger", "3")
    path = tmp_path / "policy.yaml"
    text = "# kept as written\n" + yaml.safe_dump(
        _policy(rollout={"shadow": {"requests": 100000}, "canary": [{"weight": 100, "bake": "1s"}]})
    )
    path.write_text(text)
    log = updater_dir("upd") / "service.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("an older version's log\n")
    os.chmod(log, 0o644)
    shell.user_ns["policy_yaml"] = text  # YAML text in a notebook variable, as the docs show
    shell.run_line_magic("wolt_autoupdate", "upd --policy policy_yaml")
    assert run.policy_path("upd").read_text() == text
    try:
        deadline = time.monotonic() + 120
        while run.status("upd").get("runtime_pid") is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # the background service holds the deployment's service lock: a second one in the foreground is refused
        time.sleep(3)
        with pytest.raises(DeploymentBusy, match="update service"):
            run.serve(Policy.load(path), threading.Event())
        # it took the candidate into its shadow step: a revision with the candidate as a shadow
        deadline = time.monotonic() + 120
        while not any(v["name"] == "candidate" for v in deployments.get("upd").variants):
            assert time.monotonic() < deadline, run.status("upd")
            time.sleep(0.2)
        assert shell.run_line_magic("wolt_updates", "upd").table["step"].notna().any()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600 and log.stat().st_size > 0  # what the service prints
    finally:
        capsys.readouterr()
        shell.run_line_magic("wolt_autoupdate", "upd --stop")
    assert run.status("upd")["running"] is False
    said = capsys.readouterr().out
    assert "stopped" in said and "version 3 of eta" in said and "shadow step" in said, said
    assert "%wolt_rollback upd" in said  # the revision before the shadow is the champion alone
    deployments.rollback("upd")  # what it says takes the candidate out
    assert [v["name"] for v in deployments.get("upd").variants] == ["main"]
    assert run.left_behind("upd") is None


def test_stopped_mid_canary_it_says_what_stays_and_how_to_take_it_out(
    shell, models, wolt_home, capsys
) -> None:
    from wolt_jupyter import deployments

    # where a service left its canary at 25% after a 5% step (the revisions its steps make)
    deployments.deploy("upd", model=models["v1"])
    candidate = {"name": "candidate", "model": "models:/eta/3"}
    for variants in (
        [{"name": "main", "model": "models:/eta/1", "traffic": 95}, {**candidate, "traffic": 5}],
        [{"name": "main", "model": "models:/eta/1", "traffic": 75}, {**candidate, "traffic": 25}],
    ):
        deployments.deploy("upd", spec={"name": "upd", "variants": variants})
    shell.run_line_magic("wolt_autoupdate", "upd --stop")
    said = capsys.readouterr().out
    assert "was not running" in said and "version 3 of eta" in said, said
    assert "canary 25% step (25% of live traffic)" in said and "%wolt_promote upd main" in said, said
    shell.run_line_magic("wolt_promote", "upd main")  # what it says takes the candidate out
    assert [(v["name"], v["traffic"]) for v in deployments.get("upd").variants] == [("main", 100)]
    shell.run_line_magic("wolt_autoupdate", "upd --stop")
    assert "Mid-rollout" not in capsys.readouterr().out  # nothing left


def test_a_service_that_cannot_work_is_refused_in_one_line_at_start(models, wolt_home, tmp_path) -> None:
    """No deployment to update, a holdout that is not there: refused before any process is started."""
    from wolt_jupyter import deployments
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.updater import run

    with pytest.raises(InvalidArgument, match="there is no deployment 'upd' to update: deploy it first"):
        run.autoupdate("upd", _policy())
    deployments.deploy("upd", model=models["v1"])
    missing = {**_policy(), "offline": {"dataset": str(tmp_path / "gone.parquet"), "target": "y",
                                        "metrics": {"rmse": "min"}}}  # fmt: skip
    with pytest.raises(InvalidArgument, match=r"gone\.parquet' does not exist"):
        run.autoupdate("upd", missing)
    assert run.status("upd")["running"] is False
