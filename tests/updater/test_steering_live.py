"""People steering a rollout, on the real parts: a real `mlflow server`, real local deployments answering real
clients, the service running in a thread (or the supervised background process), a webhook receiver.

- a traffic change by hand during a canary pauses the rollout, said once in the history and the webhook, and
  the service leaves the person's split alone; resumed (CLI), the step is applied again; paused (magic) and
  resumed, nothing moves;
- ``abort`` mid-canary: the champion alone, the candidate rejected; ``promote-now``: the candidate is the
  champion — no client request fails either way;
- with ``rollout.on_manual_change: abort`` a person's promotion ends the rollout and is left as it is;
- a step marked ``approve`` is not taken until a person approves it;
- a stopped service's rollout is aborted in the caller's process; an undeploy stops a running service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from updater.test_autoupdate_live import Service, _policy, served  # noqa: F401  (served: the fixture)

from deploy_support import Load, failures

pytestmark = pytest.mark.usefixtures("undeploy_all")


def steering_policy(model: str, hook: str, canary: list[dict], **over: Any) -> dict:
    """Candidate version 2 (no errors: only a person stops it) straight into the canary steps."""
    policy = _policy(
        model, hook, rollout={"shadow": False, "canary": canary, "analysis_interval": 0.5}, **over
    )
    del policy["offline"]
    policy["notify"]["events"] = ["pause", "resume", "wait", "approve", "promote", "rollback", "reject"]
    return policy


def wait_until(check: Callable[[], Any], what: str | Callable[[], str], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, (
            f"{what if isinstance(what, str) else what()}: not within {timeout:.0f}s"
        )
        time.sleep(0.1)


def split() -> dict[str, int]:
    """The live variants' weights in the deployment's current spec."""
    from wolt_jupyter import deployments

    return {v.name: v.traffic for v in deployments.revision_store().spec("upd").variants if not v.shadow}


def decisions(action: str | None = None) -> pd.DataFrame:
    """One row per decision (not per check), oldest first."""
    import wolt_jupyter

    table = wolt_jupyter.updates("upd").table.drop_duplicates(["time", "action", "reason"])
    return table if action is None else table[table["action"] == action]


def every_check() -> pd.DataFrame:
    import wolt_jupyter

    return wolt_jupyter.updates("upd").table


def test_a_change_by_hand_pauses_the_rollout_and_the_service_leaves_it(served, shell, capsys) -> None:  # noqa: F811
    from wolt_jupyter import cli, deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "2")
    policy = steering_policy(name, hook.url, [{"weight": 30, "bake": "10m"}, {"weight": 100, "bake": "10m"}])
    store = deployments.revision_store()
    with Load(d.url, "upd", concurrency=2) as load, Service(policy):
        wait_until(lambda: split() == {"main": 70, "candidate": 30}, "the canary at 30%")
        deployments.traffic("upd", {"main": 90, "candidate": 10})  # a person, from another cell
        changed = time.time()
        paused = wait_until(lambda: len(decisions("pause")), "the pause")
        took = float(pd.to_datetime(decisions("pause")["time"]).iloc[0].timestamp()) - changed
        reason = decisions("pause")["reason"].iloc[0]
        assert paused == 1 and "changed by hand" in reason and "candidate 10%" in reason, reason
        revisions = store.revisions("upd")
        time.sleep(4)  # eight looks: the person's split stays, and the pause is said once
        assert split() == {"main": 90, "candidate": 10} and store.revisions("upd") == revisions
        assert len(decisions("pause")) == 1
        checks = every_check()
        row = checks[(checks["action"] == "pause") & (checks["check"] == "deployment spec")].iloc[0]
        assert (row["value"], row["baseline"]) == (revisions[-1], revisions[-2]), row  # revisions named

        # resumed from a terminal: the canary's 30 % is applied again, as a new revision
        assert cli.main(["updater", "resume", "upd"]) == 0
        wait_until(lambda: split() == {"main": 70, "candidate": 30}, "the step applied again", 30)
        assert "applied again" in decisions("resume")["reason"].iloc[-1]

        # paused from the notebook, then resumed: nothing moves meanwhile, no new revision either way
        card = shell.run_line_magic("wolt_autoupdate", "upd --pause")
        assert card.outcome.startswith("paused by hand") and "via %wolt_autoupdate" in card.outcome, card
        revisions = store.revisions("upd")
        time.sleep(2)
        with pytest.raises(Exception, match="already paused"):
            shell.run_line_magic("wolt_autoupdate", "upd --pause")
        card = shell.run_line_magic("wolt_autoupdate", "upd --resume")
        assert "judged anew" in card.outcome, card
        assert store.revisions("upd") == revisions and split() == {"main": 70, "candidate": 30}
        n = len(load.outcomes)
        load.wait_for(n + 40)
    measured = {"change_to_pause_s": round(took, 2), "requests": len(load.outcomes),
                "failed_client_requests": len(failures(load.outcomes))}  # fmt: skip
    with capsys.disabled():
        print(f"\nchange by hand: {json.dumps(measured)}")
    assert failures(load.outcomes) == [] and took < 10, measured
    told = [(m["action"], m["reason"]) for m in hook.messages()]
    assert [a for a, _ in told] == ["pause", "resume", "pause", "resume"], told
    assert "changed by hand" in told[0][1] and "paused by hand" in told[2][1]


@pytest.mark.parametrize("command", ["abort", "promote-now"])
def test_abort_and_promote_now_mid_canary_fail_no_request(served, command, capsys) -> None:  # noqa: F811
    from wolt_jupyter import deployments, steer_rollout
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "2")
    policy = steering_policy(name, hook.url, [{"weight": 40, "bake": "10m"}, {"weight": 100, "bake": "10m"}])
    with Load(d.url, "upd", concurrency=3) as load, Service(policy):
        wait_until(lambda: split() == {"main": 60, "candidate": 40}, "the canary at 40%")
        # the revision is recorded before the runtime switches to it: both arms answering is the canary live
        wait_until(lambda: {o.variant for o in load.outcomes[-40:]} == {"main", "candidate"}, "both arms", 60)
        asked = time.monotonic()
        steered = steer_rollout("upd", command)
        answered_s = time.monotonic() - asked
        assert steered.outcome is not None and steered.applied_by == "the running service", steered
        n = len(load.outcomes)
        load.wait_for(n + 100)
        with pytest.raises(Exception, match="no rollout of 'upd' is in flight"):
            steer_rollout("upd", "pause")
    with capsys.disabled():
        print(
            f"\n{command} mid-canary: {json.dumps({'requests': len(load.outcomes), 'failed_client_requests': len(failures(load.outcomes)), 'asked_to_applied_s': round(answered_s, 2)})}"
        )
    assert failures(load.outcomes) == []  # the switch fails no request in flight
    spec = deployments.revision_store().spec("upd")
    final = decisions().iloc[-1]
    champion = str(client().get_registered_model(name).aliases["champion"])
    tags = client().get_model_version(name, "2").tags
    if command == "abort":
        assert [(v.name, v.model, v.traffic) for v in spec.variants] == [("main", f"models:/{name}/1", 100)]
        assert final["action"] == "reject" and final["reason"].startswith("aborted by hand"), final
        assert "the champion serves alone" in final["reason"] and champion == "1"
        assert all(o.variant == "main" for o in load.outcomes[n + 20 :])
        assert tags["wolt.update.action"] == "reject"
    else:
        assert [(v.name, v.model, v.traffic) for v in spec.variants] == [("main", f"models:/{name}/2", 100)]
        assert final["action"] == "promote" and final["reason"].startswith("promoted by hand"), final
        assert champion == "2" and all(o.value > 50 for o in load.outcomes[n + 20 :])  # v2 answers ~100x
        assert tags["wolt.update.action"] == "promote"
    assert "via Python" in final["reason"] and final["step"] == "canary 40%"
    assert [m["action"] for m in hook.messages()] == [final["action"]]


def test_on_manual_change_abort_gives_the_candidate_up_and_leaves_the_person_s_change(served) -> None:  # noqa: F811
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "2")
    policy = steering_policy(name, hook.url, [{"weight": 20, "bake": "10m"}, {"weight": 100, "bake": "10m"}])
    policy["rollout"]["on_manual_change"] = "abort"
    with Service(policy) as service:
        wait_until(lambda: split() == {"main": 80, "candidate": 20}, "the canary at 20%")
        deployments.promote("upd", "candidate")  # a person decided
        wait_until(lambda: len(decisions("reject")), "the rollout given up")
        revisions = deployments.revision_store().revisions("upd")
        time.sleep(2)
        final = decisions().iloc[-1]
        assert final["action"] == "reject" and final["reason"].startswith(
            "given up: the deployment was changed"
        )
        assert "stays as it was left" in final["reason"]
        assert split() == {"candidate": 100} and deployments.revision_store().revisions("upd") == revisions
        assert (
            str(client().get_registered_model(name).aliases["champion"]) == "1"
        )  # the service moved nothing
        # undeployed under a service running in a thread: it ends by itself at its next look
        deployments.undeploy("upd")
        wait_until(lambda: not service.thread.is_alive(), "the service thread ending", 30)


def test_a_step_to_approve_waits_for_a_person(served) -> None:  # noqa: F811
    from wolt_jupyter import deployments, steer_rollout
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "2")
    canary = [{"weight": 30, "bake": "2s"}, {"weight": 100, "bake": "2s", "approve": True}]
    policy = steering_policy(name, hook.url, canary)
    with Load(d.url, "upd", concurrency=2) as load, Service(policy):
        wait_until(lambda: len(decisions("wait")), "the wait for approval", 180)
        reason = decisions("wait")["reason"].iloc[0]
        assert reason.startswith("waiting for approval before canary 100%") and "--approve" in reason
        time.sleep(4)  # the baked canary would have advanced long ago
        assert split() == {"main": 70, "candidate": 30} and len(decisions("wait")) == 1
        with pytest.raises(Exception, match=r"not paused.*waits for approval before canary 100%"):
            steer_rollout("upd", "resume")
        approved = steer_rollout("upd", "approve", by="the release manager")
        assert approved.outcome == "approved by hand (the release manager): canary 100% goes ahead", approved
        wait_until(lambda: len(decisions("promote")), "the promotion", 120)
        load.wait_for(len(load.outcomes) + 20)
    order = [a for a in decisions()["action"] if a in ("wait", "approve", "advance", "promote")]
    assert order == ["wait", "approve", "advance", "promote"], decisions().to_string()
    assert str(client().get_registered_model(name).aliases["champion"]) == "2"
    assert failures(load.outcomes) == []
    assert [m["action"] for m in hook.messages()] == ["wait", "approve", "promote"]


def test_a_stopped_service_s_rollout_is_aborted_here_and_undeploy_stops_a_running_one(served) -> None:  # noqa: F811
    """The background service stopped mid-canary: ``abort`` is applied in the caller's process with the
    policy the service kept. Started again, it is stopped by the undeploy."""
    from wolt_jupyter import deployments, steer_rollout
    from wolt_jupyter._mlflow import mlflow_client as client
    from wolt_jupyter.processes import process_gone
    from wolt_jupyter.updater import run

    name, hook = served
    deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "2")
    policy = steering_policy(name, hook.url, [{"weight": 10, "bake": "10m"}, {"weight": 100, "bake": "10m"}])
    run.start(policy)
    try:
        status = lambda: f"the canary at 10% ({run.status('upd')})"  # noqa: E731
        wait_until(lambda: split() == {"main": 90, "candidate": 10}, status, 180)
        assert run.stop_service("upd") and split() == {"main": 90, "candidate": 10}  # stopped, it stays
        aborted = steer_rollout("upd", "abort")
        assert aborted.applied_by == "this process (no service runs)", aborted
        assert aborted.outcome.startswith("aborted by hand") and split() == {"main": 100}
        assert decisions().iloc[-1]["action"] == "reject"
        assert [m["action"] for m in hook.messages()] == ["reject"]  # told from here too

        pid = int(run.start(policy)["supervisor_pid"])
        wait_until(lambda: run.status("upd").get("runtime_pid"), "the service running again", 60)
        gone = deployments.undeploy("upd")
        assert gone.stopped == [f"update service (pid {pid})"] and "update service" in repr(gone)
        assert process_gone(pid) and run.status("upd")["running"] is False
    finally:
        run.stop_service("upd")


def test_a_background_service_whose_looks_keep_failing_says_so_and_recovers(served) -> None:  # noqa: F811
    """Alive is not working: the registered model renamed under a running service makes every look fail;
    its status says ``failing`` with the reason until the name is back."""
    import wolt_jupyter
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client
    from wolt_jupyter.updater import run

    name, hook = served
    deployments.deploy("upd", model=f"models:/{name}/1")
    policy = steering_policy(name, hook.url, [{"weight": 100, "bake": "10m"}])
    policy["watch"]["poll_seconds"] = 1
    run.start(policy)
    try:
        wait_until(
            lambda: "watching" in (run.status("upd").get("log") or ""), lambda: str(run.status("upd")), 60
        )
        client().rename_registered_model(name, f"{name}-away")
        try:
            failing = wait_until(
                lambda: (st := run.status("upd")).get("status") == "failing" and st,
                lambda: str(run.status("upd")),
                60,
            )
            assert failing["running"] and name in failing["reason"], failing
            assert "failing since" in repr(wolt_jupyter.updates("upd"))
        finally:
            client().rename_registered_model(f"{name}-away", name)
        wait_until(lambda: run.status("upd").get("status") == "running", lambda: str(run.status("upd")), 60)
    finally:
        run.stop_service("upd")
