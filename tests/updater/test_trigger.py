"""The registry-webhook trigger over real HTTP on 127.0.0.1: deliveries signed the way MLflow signs them (its own
signing function as the oracle), refused when forged, stale or replayed; MLflow's own server delivering to it;
and the update service on a real deployment taking a new challenger up at once although its poll is minutes
away."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from wolt_jupyter.updater.policy import PolicyError, parse
from wolt_jupyter.updater.trigger import WebhookTrigger, mlflow_signature, verify_mlflow_delivery

from helpers import running_mlflow_server, unique

SECRET = "mlflow-hook-secret-91c2"


def delivery(body: dict, *, secret: str = SECRET, stamp: int | None = None, delivery_id: str | None = None):
    """Headers and body as MLflow's server sends them (mlflow.webhooks.delivery signs them)."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    payload = json.dumps(body)
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp_text = str(int(time.time()) if stamp is None else stamp)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp_text,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp_text, payload),
    }
    return headers, payload.encode()


def created(name: str) -> dict:
    return {"entity": "model_version", "action": "created", "timestamp": "2026-11-30T00:00:00+00:00",
            "data": {"name": name, "version": "4", "source": "models:/m-1", "tags": {}}}  # fmt: skip


def test_our_signature_is_mlflows() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = json.dumps(created("eta"))
    assert mlflow_signature(SECRET, "d-1", "1800000000", body.encode()) == _generate_hmac_signature(
        SECRET, "d-1", "1800000000", body
    )


def test_signed_deliveries_wake_the_loop_and_forged_ones_do_not() -> None:
    woken = []
    with WebhookTrigger(SECRET, "eta", lambda: woken.append(1)) as trigger:
        url = trigger.url
        assert url.startswith("http://127.0.0.1:")
        headers, body = delivery(created("eta"))
        ok = requests.post(url, data=body, headers=headers, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"polling": "eta"} and len(woken) == 1
        again = requests.post(url, data=body, headers=headers, timeout=10)  # the same delivery replayed
        assert again.json() == {"ignored": "delivery already received"} and len(woken) == 1

        refused = [
            delivery(created("eta"), secret="not-the-secret"),
            delivery(created("eta"), stamp=int(time.time()) - 3600),
        ]
        tampered_headers, _ = delivery(created("eta"))
        refused.append((tampered_headers, json.dumps(created("other")).encode()))
        for h, b in refused:
            r = requests.post(url, data=b, headers=h, timeout=10)
            assert r.status_code == 401 and "error" in r.json()
        missing = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert missing.status_code == 401 and "X-MLflow-Signature" in missing.json()["error"]
        h, b = delivery(created("other"))
        assert requests.post(url, data=b, headers=h, timeout=10).json()["ignored"].endswith("of 'other'")
        h, b = delivery({"entity": "registered_model", "action": "deleted", "data": {"name": "eta"}})
        assert "ignored" in requests.post(url, data=b, headers=h, timeout=10).json()
        h, b = delivery({"hello": 1})
        assert requests.post(url, data=b, headers=h, timeout=10).status_code == 400
        wrong = requests.post(
            url.replace("/mlflow-webhook", "/other"), data=body, headers=headers, timeout=10
        )
        assert wrong.status_code == 404
        assert len(woken) == 1 and trigger.refused == 4
    assert verify_mlflow_delivery(SECRET, {}, b"", time.time()) is not None


def test_policy_needs_a_secret_for_the_receiver(monkeypatch) -> None:
    base = {"deployment": "eta", "watch": {"model": "eta"}}
    with pytest.raises(PolicyError, match=r"watch\.webhook\.secret_env"):
        parse({**base, "watch": {"model": "eta", "webhook": {"port": 8801}}})
    monkeypatch.setenv("WOLT_TEST_MLFLOW_HOOK", SECRET)
    p = parse(
        {**base, "watch": {"model": "eta", "webhook": {"port": 8801, "secret_env": "WOLT_TEST_MLFLOW_HOOK"}}}
    )
    assert (
        p.watch.webhook is not None and p.watch.webhook.host == "127.0.0.1" and p.watch.webhook.port == 8801
    )
    assert SECRET not in repr(p) and p.to_dict()["watch"]["webhook"]["secret"] == "****"


@pytest.fixture(scope="module")
def delivering_server(tmp_path_factory: pytest.TempPathFactory):
    """An `mlflow server` (SQL store) allowed to deliver webhooks to 127.0.0.1 over http."""
    env = {
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-webhooks"), env) as url:
        yield url


def test_mlflow_itself_delivers_to_the_receiver(delivering_server, wolt_home, monkeypatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", delivering_server)
    name = unique("hooked")
    woken = threading.Event()
    with WebhookTrigger(SECRET, name, woken.set) as trigger:
        client = MlflowClient(delivering_server, registry_uri=delivering_server)  # not a registry set earlier
        hook = client.create_webhook(
            name=unique("wolt"),
            url=trigger.url,
            events=["registered_model.created", "model_version.created"],
            secret=SECRET,
        )
        try:
            client.create_registered_model(name)
            assert woken.wait(30), "MLflow did not deliver the webhook"
            assert trigger.received >= 1 and trigger.refused == 0
        finally:
            client.delete_webhook(hook.webhook_id)


def test_a_webhook_makes_the_service_take_a_challenger_up_at_once(
    delivering_server, wolt_home, monkeypatch, capsys
) -> None:
    """The poll is 5 minutes away: only the webhook can make the service see the new challenger in time."""
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter import deployments
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import serve

    from helpers import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", delivering_server)
    monkeypatch.setenv("WOLT_TEST_MLFLOW_HOOK", SECRET)
    name = unique("hooked")
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for scale in (1.0, 2.0):
        wolt_jupyter.register(LinearRegression().fit(X, X.a * scale), name=name, input_example=X.head(2))
    client = MlflowClient(delivering_server, registry_uri=delivering_server)  # not a registry set earlier
    client.set_registered_model_alias(name, "champion", "1")
    port = free_port()
    hook = client.create_webhook(
        name=unique("wolt"),
        url=f"http://127.0.0.1:{port}/mlflow-webhook",
        events=["model_version_alias.created"],
        secret=SECRET,
    )
    policy = {
        "deployment": "hooked",
        "watch": {"model": name, "alias": "challenger", "poll_seconds": 300,
                  "webhook": {"port": port, "secret_env": "WOLT_TEST_MLFLOW_HOOK"}},
        "rollout": {"shadow": {"requests": 100000}, "canary": [{"weight": 100, "bake": "1h"}]},
    }  # fmt: skip
    stop = threading.Event()
    service = threading.Thread(target=serve, args=(Policy.load(policy), stop), kwargs={"mlflow": False})
    try:
        deployments.deploy("hooked", model=f"models:/{name}/1")
        service.start()
        time.sleep(2)  # its first look (nothing to do) is over; the next poll is 5 minutes away
        moved = time.monotonic()
        client.set_registered_model_alias(name, "challenger", "2")
        deadline = moved + 90
        while True:
            table = wolt_jupyter.updates("hooked").table
            if not table.empty and (table["candidate"] == "2").any():
                break
            assert time.monotonic() < deadline and service.is_alive(), table
            time.sleep(0.1)
        taken_up = time.monotonic() - moved
        with capsys.disabled():
            print(f"\nchallenger taken up {taken_up:.2f}s after the alias moved (poll interval 300s)")
        assert table[table["candidate"] == "2"]["step"].iloc[0] == "shadow"
    finally:
        stop.set()
        service.join(60)
        client.delete_webhook(hook.webhook_id)
        deployments.undeploy("hooked")
