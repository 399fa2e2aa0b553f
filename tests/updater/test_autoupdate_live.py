"""The update service end to end on the real parts: a real `mlflow server` (registry, runs), real local
deployments answering real clients, ground truth posted as feedback, a webhook receiver on 127.0.0.1.

- a worse version is rejected offline: the alias does not move, the deployment is untouched, the history, the
  model version and the webhook say why;
- a version fine offline that fails live (a pyfunc raising on a share of live rows) is rolled back; the time
  from its first failed request to the canary taken out is measured, and the failed client requests counted,
  while the webhook answers each message 10 s late (the rollback does not wait; each decision told once);
- no traffic: the step holds, then rolls back as "no data" at its deadline;
- the champion's inputs drift: the retraining command runs, registers a new version, and the service takes it up.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deploy_support import FAILS_LIVE, Load, failures
from helpers import FEATURES, WebhookReceiver, unique

pytestmark = pytest.mark.usefixtures("undeploy_all")


def holdout(n: int = 200, seed: int = 5) -> pd.DataFrame:
    X = pd.DataFrame(np.random.default_rng(seed).normal(size=(n, 3)), columns=FEATURES)
    return X.assign(y=X.sum(axis=1))


@pytest.fixture
def served(mlflow_server: str, wolt_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """On the shared MLflow server, a model of its own name: v1 the champion (the sum of the features), v2
    worse (100 x the sum), v3 fine offline but failing on live rows. A webhook receiver listens."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter._mlflow import mlflow_client as client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = unique("upd")
    X = holdout(60, 0)[FEATURES]
    for scale in (1.0, 100.0):  # v1 keeps its training inputs as the reference drift is measured against
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale),
            name=name,
            input_example=X.head(3),
            reference=X if scale == 1.0 else None,
        )
    code = tmp_path / "fails_live.py"
    code.write_text(FAILS_LIVE)
    mlflow.set_experiment(name)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=str(code), registered_model_name=name, input_example=X.head(3)
        )
    client().set_registered_model_alias(name, "champion", "1")
    hook = WebhookReceiver()
    try:
        yield name, hook
    finally:
        hook.close()


def _policy(model: str, hook: str, **over) -> dict:
    policy = {
        "deployment": "upd",
        "watch": {"model": model, "alias": "challenger", "poll_seconds": 0.3},
        "offline": {"dataset": holdout(), "target": "y", "metrics": {"rmse": "min"}},
        "rollout": {"shadow": False, "canary": [{"weight": 50, "bake": "5m"}, {"weight": 100, "bake": "5m"}]},
        "guards": {"min_sample": 20, "limit_min_requests": 10, "max_error_rate": 0.05, "step_deadline": "3m"},
        "notify": {"webhook": hook, "events": ["promote", "rollback", "reject", "hold"], "rate_limit": 50},
    }
    policy.update(over)
    return policy


class Service:
    """``serve`` in a thread of this process, stopped at exit."""

    def __init__(self, policy: dict) -> None:
        from wolt_jupyter.updater.policy import Policy
        from wolt_jupyter.updater.run import serve

        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(Policy.load(policy), self.stop), daemon=True)

    def __enter__(self) -> Service:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def wait_for_final(deployment: str, timeout: float = 180.0) -> pd.DataFrame:
    """The history once a final decision (promote, rollback, reject) is in it."""
    import wolt_jupyter

    deadline = time.monotonic() + timeout
    while True:
        table = wolt_jupyter.updates(deployment).table
        if not table.empty and table["action"].isin(["promote", "rollback", "reject"]).any():
            return table
        assert time.monotonic() < deadline, table.tail(10).to_string()
        time.sleep(0.2)


def wait_for_messages(deployment: str, timeout: float) -> list[str]:
    """The ids of the decisions whose webhook message was sent, once none is waiting any more."""
    import wolt_jupyter

    deadline = time.monotonic() + timeout
    while True:
        records = wolt_jupyter.updates(deployment).records
        if records and not any(r.notified == "pending" for r in records):
            return list({r.id: r for r in records if r.notified == "sent"})
        assert time.monotonic() < deadline, [(r.action, r.notified) for r in records]
        time.sleep(0.2)


def test_a_worse_version_is_rejected_offline_and_nothing_moves(served) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    before = (deployments.get("upd").variants, len(deployments.revision_store().revisions("upd")))
    client().set_registered_model_alias(name, "challenger", "2")
    with Load(d.url, "upd", concurrency=2) as load, Service(_policy(name, hook.url)):
        table = wait_for_final("upd")
        load.wait_for(len(load.outcomes) + 20)
    final = table[table["action"] != "hold"]
    assert list(final["action"].unique()) == ["reject"] and set(final["step"]) == {"offline"}
    reason = final["reason"].iloc[0]
    assert "rmse" in reason and "improvement" in reason and "champion" in reason
    # the numbers behind it: the candidate's rmse is far above the champion's on the same rows
    rmse = final[final["check"] == "rmse"].iloc[0]
    assert rmse["value"] > 10 * max(rmse["baseline"], 1e-6) and rmse["verdict"] == "fail"
    aliases = client().get_registered_model(name).aliases
    assert str(aliases["champion"]) == "1" and str(aliases["challenger"]) == "2"
    assert (deployments.get("upd").variants, len(deployments.revision_store().revisions("upd"))) == before
    assert failures(load.outcomes) == [] and all(abs(o.value - 1.2) < 0.7 for o in load.outcomes)
    tags = client().get_model_version(name, "2").tags
    assert tags["wolt.update.action"] == "reject" and "rmse" in tags["wolt.update.reason"], tags
    told = [m for m in hook.messages() if m["action"] == "reject"]
    assert len(told) == 1 and told[0]["version"] == "2" and "rmse" in told[0]["text"]


def test_fine_offline_but_failing_live_is_rolled_back(served, capsys) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client
    from wolt_jupyter.client import send_feedback

    name, hook = served
    hook.delay = 10  # has each message at once, answers 10 s later
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "3")
    policy = _policy(name, hook.url)
    policy["notify"]["timeout"] = "15s"
    candidate_gone: float | None = None
    # the canary's revision is stored before the runtime serves it: with revisions [1, 2] and the runtime still
    # staging the candidate, "not in variants" is not "taken out" (the full CI run measured -5 s so). Gone
    # means a third revision, the rollback, and the candidate no longer served
    deployed = len(deployments.revision_store().revisions("upd"))
    with Load(d.url, "upd", concurrency=3) as load, Service(policy):
        deadline = time.monotonic() + 180
        labelled = 0
        while candidate_gone is None:
            assert time.monotonic() < deadline, "the candidate was never taken out"
            # ground truth for what was answered so far (the sum of the features the load sent)
            done = [o for o in load.outcomes[labelled:] if o.status == 200]
            labelled = len(load.outcomes)
            if done:
                items = [{"id": o.id, "ground_truth": round(o.value, 6)} for o in done]
                send_feedback(d.url, "upd", items)
            variants = [v["name"] for v in deployments.get("upd").variants]
            history = deployments.revision_store().revisions("upd")
            if len(history) > deployed + 1 and "candidate" not in variants:
                candidate_gone = time.time()
            time.sleep(0.1)
        table = wait_for_final("upd")
        # the record is saved before the runtime switches (so the switch reads the new revision): a request
        # answered in between may still be the candidate's. The canary must be gone within 10 s.
        settle = time.monotonic() + 10
        while time.monotonic() < settle and any(o.variant != "main" for o in load.outcomes[-20:]):
            time.sleep(0.1)
        n = len(load.outcomes)
        load.wait_for(n + 60)
        told = wait_for_messages("upd", timeout=120)
    failed = failures(load.outcomes)
    # the candidate's failures, which the runtime retried on the champion: in the response log, not at the client
    log = deployments.read_responses("upd", revision="all")
    attempts = log[(log["variant"] == "candidate") & (log["status"] == 500)]
    assert len(attempts) and attempts["error"].str.startswith("retried on the champion").all()
    first_failure = float(pd.to_datetime(attempts["time"]).min().timestamp())
    final = table[table["action"] != "hold"]
    assert list(final["action"].unique())[-1] == "rollback", final.to_string()
    assert set(final["action"]) <= {"advance", "rollback"}  # through the offline gate, then rolled back live
    reason = final[final["action"] == "rollback"]["reason"].iloc[0]
    # 1 request in 7 failing, the champion failing none: the comparison is sure before the 5 % limit is
    assert "error rate" in reason and ("worse than the champion" in reason or "hard limit" in reason)
    assert str(client().get_registered_model(name).aliases["champion"]) == "1"
    assert [(v["name"], v["model"], v["traffic"]) for v in deployments.get("upd").variants] == [
        ("main", f"models:/{name}/1", 100)
    ]
    after = [o for o in load.outcomes[n:] if o.status == 200]
    assert after and all(o.variant == "main" for o in after)  # the champion serves everything again
    assert sorted(m["id"] for m in hook.messages()) == sorted(told)  # every decision told, each once
    rollbacks = [m for m in hook.messages() if m["action"] == "rollback"]
    assert len(rollbacks) == 1 and "error rate" in rollbacks[0]["text"]
    measured = {
        "failed_client_requests": len(failed),
        "requests": len(load.outcomes),
        "candidate_failures_retried": len(attempts),
        "first_failure_to_canary_out_s": candidate_gone - first_failure,
    }
    with capsys.disabled():
        print(f"\nrollback on a live failure: {json.dumps(measured)}")
    # every failed candidate request was answered by the champion; the breach took the canary out
    assert len(failed) == 0 and candidate_gone - first_failure < 60, measured


def test_no_traffic_holds_then_rolls_back_for_no_data(served) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "3")
    policy = _policy(
        name,
        hook.url,
        offline=None,
        rollout={"shadow": {"requests": 30}, "canary": [{"weight": 100, "bake": "1m"}]},
        guards={"min_sample": 20, "limit_min_requests": 10, "step_deadline": "6s"},
    )
    del policy["offline"]
    with Service(policy):
        table = wait_for_final("upd", timeout=120)
    decided = table.drop_duplicates(["time", "action"])
    assert list(decided["action"]) == ["hold", "rollback"], decided.to_string()
    assert "too little data" in decided["reason"].iloc[0] or "waiting" in decided["reason"].iloc[0]
    assert decided["reason"].iloc[1].startswith("no data") and "deadline 6s" in decided["reason"].iloc[1]
    assert set(decided["step"]) == {"shadow"}
    assert [(v["name"], v["traffic"]) for v in deployments.get("upd").variants] == [("main", 100)]
    assert str(client().get_registered_model(name).aliases["champion"]) == "1"
    actions = [m["action"] for m in hook.messages()]
    assert actions == ["hold", "rollback"] and "no data" in hook.messages()[-1]["text"]


TRAIN = """
import os

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

import wolt_jupyter

X = pd.DataFrame(np.random.default_rng(7).normal(1.2, 0.3, size=(80, 3)), columns=["f0", "f1", "f2"])
card = wolt_jupyter.register(
    LinearRegression().fit(X, X.sum(axis=1)), name=os.environ["WOLT_MODEL"], aliases=["challenger"],
    input_example=X.head(3), reference=X,
)
print("retrained because", os.environ["WOLT_RETRAIN_REASON"])
"""


def test_drift_runs_the_retraining_command_and_its_version_is_taken_up(served, tmp_path) -> None:
    import sys

    import wolt_jupyter
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    (tmp_path / "train.py").write_text(TRAIN)
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    policy = _policy(name, hook.url)
    policy["notify"]["events"] = ["retrain", "reject", "promote", "rollback"]
    policy["retrain"] = {"command": [sys.executable, "train.py"], "drift_threshold": 0.5, "window": "5m",
                         "min_requests": 40, "check_every": "1s", "cooldown": "1h"}  # fmt: skip
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import serve

    stop = threading.Event()
    service = threading.Thread(target=serve, args=(Policy.load(policy), stop), kwargs={"workdir": tmp_path})
    # the load's inputs (f0 1.0..1.6, f1 0.2, f2 -0.3) are far from v1's reference (standard normal)
    with Load(d.url, "upd", concurrency=2):
        service.start()
        try:
            deadline = time.monotonic() + 240
            while True:
                table = wolt_jupyter.updates("upd").table
                ended = table["reason"].str.startswith("retraining finished").any()
                if ended and (table["candidate"] == "4").any():
                    break
                assert time.monotonic() < deadline, table.tail(10).to_string()
                time.sleep(0.3)
        finally:
            stop.set()
            service.join(60)
    retrain = table[table["action"] == "retrain"]
    started = retrain["reason"].str.startswith("retraining started: input drift PSI").to_numpy()
    assert started.any(), retrain.to_string()
    finished = retrain[retrain["reason"].str.startswith("retraining finished")]["reason"]
    assert (
        len(finished) == 1 and "exit code 0" in finished.iloc[0] and "retrained because" in finished.iloc[0]
    )
    # taken up after the run started it
    assert table.index[table["candidate"] == "4"].min() > retrain.index[started].min()
    assert str(client().get_registered_model(name).aliases["challenger"]) == "4"
    told = [m["reason"] for m in hook.messages() if m["action"] == "retrain"]
    assert told[0].startswith("retraining started: input drift") and told[1].startswith("retraining finished")


def _decided_at(table: pd.DataFrame, action: str) -> float:
    return float(pd.to_datetime(table[table["action"] == action]["time"]).min().timestamp())


@pytest.mark.parametrize("weight", [60, 100])
def test_a_failing_candidate_reaches_no_client_and_the_champion_alone_is_back_within_1s(
    served, weight, capsys
) -> None:
    """A candidate failing 1 request in 7 at a 60 % canary, or only once it takes 100 %: every failure is
    retried on the champion (kept loaded at weight 0 at 100 %), the breach is judged on the analysis clock
    though the registry is polled once a minute, and the rollback restores the champion alone in place."""
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "3")
    canary = [{"weight": weight, "bake": "5m"}, *([{"weight": 100, "bake": "5m"}] if weight < 100 else [])]
    policy = _policy(name, hook.url, rollout={"shadow": False, "canary": canary})
    del policy["offline"]
    policy["watch"]["poll_seconds"] = 60
    wall = time.time() - time.monotonic()
    with Load(d.url, "upd", concurrency=3) as load, Service(policy):
        table = wait_for_final("upd", timeout=120)
        decided = _decided_at(table, "rollback")
        time.sleep(max(0.0, decided + 2.0 - time.time()))  # answers well after the switch
        load.wait_for(len(load.outcomes) + 100)
    final = table[table["action"] != "hold"]
    assert list(final["action"].unique()) == ["rollback"], final.to_string()
    served_by_candidate = [o.t + wall for o in load.outcomes if o.variant == "candidate"]
    log = deployments.read_responses("upd", revision="all")
    attempts = log[(log["variant"] == "candidate") & (log["status"] == 500)]
    first_failure = float(pd.to_datetime(attempts["time"]).min().timestamp())
    measured = {
        "weight": weight,
        "requests": len(load.outcomes),
        "failed_client_requests": len(failures(load.outcomes)),
        "candidate_failures_retried": len(attempts),
        "first_failure_to_decision_s": round(decided - first_failure, 2),
        "decision_to_last_candidate_answer_s": round(max(served_by_candidate) - decided, 2),
    }
    with capsys.disabled():
        print(f"\nfailing candidate at {weight}%: {json.dumps(measured)}")
    assert failures(load.outcomes) == [], measured
    assert len(attempts) and attempts["error"].str.startswith("retried on the champion").all()
    assert measured["first_failure_to_decision_s"] < 15, measured  # not the 60 s poll interval
    assert measured["decision_to_last_candidate_answer_s"] < 1.0, measured
    spec = deployments.revision_store().spec("upd")
    assert [(v.name, v.model, v.traffic) for v in spec.variants] == [("main", f"models:/{name}/1", 100)]
    # the history line precedes the action: answers a moment after the decision may still be the candidate's
    later = [o for o in load.outcomes if o.t + wall > decided + 1.0 and o.status == 200]
    assert later and all(o.variant == "main" for o in later)
    assert str(client().get_registered_model(name).aliases["champion"]) == "1"


CRASHES = """
import os
import random

import mlflow.pyfunc


class Crashes(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        if random.random() < 0.03:
            os._exit(1)  # the whole runtime goes: its in-flight requests never reach the response log
        return model_input[["f0", "f1", "f2"]].to_numpy(dtype=float).sum(axis=1)


mlflow.models.set_model(Crashes())
"""


def test_a_candidate_that_crashes_the_runtime_is_rolled_back_with_the_crash_in_the_history(
    served, tmp_path, capsys
) -> None:
    import mlflow

    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client

    name, hook = served
    code = tmp_path / "crashes.py"
    code.write_text(CRASHES)
    with mlflow.start_run():  # v4
        mlflow.pyfunc.log_model(name="model", python_model=str(code), registered_model_name=name,
                                input_example=holdout(3)[FEATURES])  # fmt: skip
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    client().set_registered_model_alias(name, "challenger", "4")
    policy = _policy(name, hook.url, rollout={"shadow": False, "canary": [{"weight": 10, "bake": "5m"},
                                                                         {"weight": 100, "bake": "5m"}]})  # fmt: skip
    del policy["offline"]  # the offline gate runs the model in this process
    with Load(d.url, "upd", concurrency=3) as load, Service(policy):
        table = wait_for_final("upd", timeout=180)
        n = len(load.outcomes)
        load.wait_for(n + 100)
    final = table[table["action"] != "hold"]
    assert list(final["action"].unique()) == ["rollback"], final.to_string()
    reason = final["reason"].iloc[-1]
    assert reason.startswith("crash during the step") and "runtime" in reason, reason
    assert str(client().get_registered_model(name).aliases["champion"]) == "1"
    spec = deployments.revision_store().spec("upd")
    assert [(v.name, v.traffic) for v in spec.variants] == [("main", 100)]
    after = load.outcomes[n:]
    assert after and all(o.status == 200 and o.variant == "main" for o in after[-50:])
    with capsys.disabled():
        print(
            f"\ncrashing candidate: {json.dumps({'requests': len(load.outcomes), 'failed_client_requests': len(failures(load.outcomes)), 'reason': reason})}"
        )


def test_a_prometheus_query_guard_rolls_back_what_the_hard_limits_let_through(served, wolt_home) -> None:
    """A real Prometheus scraping the runtime; the policy's own PromQL (the candidate's failed predicts, with
    its variant substituted) is the guard that sees the failing candidate, the hard limits set out of reach."""
    from wolt_jupyter import deployments

    from prometheus_server import prometheus_server

    name, hook = served
    with prometheus_server(wolt_home) as prom:
        d = deployments.deploy("upd", model=f"models:/{name}/1")
        deployments.deployments()  # writes the Prometheus targets file
        from wolt_jupyter._mlflow import mlflow_client as client

        client().set_registered_model_alias(name, "challenger", "3")
        policy = _policy(name, hook.url, rollout={"shadow": False, "canary": [{"weight": 100, "bake": "5m"}]})
        del policy["offline"]
        policy["guards"] = {"max_error_rate": 1.0, "min_sample": 20, "queries": [{
            "name": "candidate failures", "prometheus": prom, "max": 0,
            "query": 'sum(wolt_model_errors_total{deployment="$deployment",variant="$candidate"})'}]}  # fmt: skip
        with Load(d.url, "upd", concurrency=2) as load, Service(policy):
            table = wait_for_final("upd", timeout=120)
    final = table[table["action"] != "hold"]
    assert list(final["action"].unique()) == ["rollback"], final.to_string()
    reason = final["reason"].iloc[-1]
    assert reason.startswith("the service is hurt") and "query candidate failures" in reason, reason
    assert failures(load.outcomes) == []
    assert [(v.name, v.traffic) for v in deployments.revision_store().spec("upd").variants] == [("main", 100)]


def test_the_champions_baseline_before_the_rollout_is_read_from_its_log(served) -> None:
    """``guards.service.champion_max_p99_ratio`` on a real deployment: the champion's p99 from the window
    before the rollout began is read from the log once, and the step's champion requests over ratio x that
    are counted beside it (the decision's check is judged in test_decide)."""
    from wolt_jupyter import deployments
    from wolt_jupyter.updater.policy import Policy, Step
    from wolt_jupyter.updater.run import DeploymentActions

    name, hook = served
    d = deployments.deploy("upd", model=f"models:/{name}/1")
    with Load(d.url, "upd", concurrency=2) as load:
        load.wait_for(300)
    deployments.flush_log("upd")
    started = time.time()
    policy = _policy(name, hook.url)
    del policy["offline"]
    policy["guards"] = {**policy["guards"], "service": {"champion_max_p99_ratio": 1.0001, "baseline": "5m"}}
    actions = DeploymentActions(Policy.load(policy))
    with Load(d.url, "upd", concurrency=2) as load:
        load.wait_for(200)
    deployments.flush_log("upd")
    window = actions.observe("2", Step("canary", 50, 300.0), started - 0.001, started)
    assert window.champion_baseline is not None
    p99, n = window.champion_baseline
    assert n >= 300 and 0 < p99 < 1000
    # a limit just above the old p99: some of the step's requests are slower, and they are counted
    assert window.champion.requests >= 200 and 0 <= window.champion.slow_vs_baseline < window.champion.requests
    assert actions.observe("2", Step("canary", 50, 300.0), started, started).champion_baseline == (p99, n)  # once
    assert failures(load.outcomes) == []
