"""The REST API of the server extension, through a real Jupyter server (pytest-jupyter's ``jp_fetch``), a real
MLflow store and real local deployments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path

import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from wolt_jupyter.server import handlers

from helpers import record_revisions, write_revised_log

API = "wolt-jupyter/api"
OPENAPI = Path(handlers.__file__).with_name("openapi.yaml")
METHODS = ("get", "post", "put", "patch", "delete")


async def call(jp_fetch, *path: str, method: str = "GET", body: dict | None = None, **params):
    """(status, JSON or None) of one request with the server's token."""
    response = await jp_fetch(
        API,
        *path,
        method=method,
        body=None if body is None else json.dumps(body),
        params=params or None,
        raise_error=False,
        request_timeout=180,
        allow_nonstandard_methods=True,
    )
    return response.code, json.loads(response.body) if response.body else None


def test_routes_and_openapi_agree() -> None:
    """Every route and method the extension registers is in openapi.yaml, and nothing else is."""
    spec = yaml.safe_load(OPENAPI.read_text())
    documented = {
        (path, method) for path, item in spec["paths"].items() for method in item if method in METHODS
    }
    served = set()
    for pattern, handler in handlers.ROUTES:
        path = "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
        served |= {(path, m) for m in METHODS if getattr(handler, m) is not getattr(handlers.WoltHandler, m)}
    assert served == documented
    assert spec["servers"][0]["url"] == "/" + API


async def test_requests_without_the_token_are_refused(jp_fetch, jp_base_url, jp_http_port, wolt_home) -> None:
    code, _ = await call(jp_fetch, "deployments")
    assert code == 200  # with the token
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}{API}"
    for method, path, body in (
        ("GET", "deployments", None),
        ("GET", "models", None),
        ("POST", "deployments", json.dumps({"name": "eta", "model": "models:/eta/1"})),
        ("DELETE", "deployments/eta", None),
    ):
        response = await client.fetch(
            HTTPRequest(f"{base}/{path}", method=method, body=body, allow_nonstandard_methods=True),
            raise_error=False,
        )
        assert response.code == 403, (method, path, response.code)
        assert json.loads(response.body)["status"] == 403
    assert not (wolt_home / "deployments" / "eta").exists()


async def test_registry_lists_models_versions_and_aliases(jp_fetch, registered) -> None:
    code, data = await call(jp_fetch, "models")
    assert code == 200
    (eta,) = [m for m in data["models"] if m["name"] == "eta"]
    assert [v["version"] for v in eta["versions"]] == ["2", "1"]
    assert eta["aliases"] == {"champion": "1"}
    assert eta["versions"][1]["aliases"] == ["champion"]
    assert eta["versions"][0]["uri"] == "models:/eta/2"
    code, one = await call(jp_fetch, "models", "eta")
    assert (code, one["name"]) == (200, "eta")
    code, err = await call(jp_fetch, "models", "nosuch")
    assert code == 404 and "nosuch" in err["error"]


async def test_deploy_change_monitor_and_remove_a_live_deployment(jp_fetch, registered) -> None:
    from wolt_jupyter import deployments

    spec = {
        "name": "eta",
        "variants": [
            {"name": "main", "model": registered["v1"], "traffic": 70},
            {"name": "challenger", "model": registered["v2"], "traffic": 30},
            {"name": "shadow", "model": registered["v2"], "shadow": True},
        ],
        "routing": {"sticky_key": "user_id"},
    }
    try:
        code, dry = await call(
            jp_fetch, "deployments", method="POST", body={"name": "eta", "spec": spec, "dry_run": True}
        )
        assert (code, dry["status"]) == (200, "dry-run")
        assert "challenger" in dry["manifests_yaml"] and dry["manifests"]
        assert not deployments.deployments()["name"].tolist()  # a dry run changes nothing

        code, made = await call(jp_fetch, "deployments", method="POST", body={"name": "eta", "spec": spec})
        assert (code, made["status"], made["revision"]) == (201, "ready", 1), made
        assert {v["name"]: v["traffic"] for v in made["variants"]} == {
            "main": 70,
            "challenger": 30,
            "shadow": None,
        }
        code, listed = await call(jp_fetch, "deployments")
        assert [d["name"] for d in listed["deployments"]] == ["eta"]
        assert listed["deployments"][0]["url"].startswith("http://127.0.0.1:")

        code, changed = await call(
            jp_fetch,
            "deployments",
            "eta",
            "traffic",
            method="PUT",
            body={"weights": {"main": 0, "challenger": 100}},
        )
        assert (code, changed["revision"]) == (200, 2), changed
        import pandas as pd

        answered = deployments.predict(
            "eta", pd.DataFrame([[1.0, 2.0, 3.0]] * 6, columns=["f0", "f1", "f2"]), per_row=True
        )
        assert set(answered["variant"]) == {"challenger"}  # the new split routes, checked over HTTP

        for _ in range(60):  # the runtime writes its response log in batches, off the hot path
            code, series = await call(jp_fetch, "deployments", "eta", "metrics", since="15m", step="5s")
            assert code == 200, series
            if "challenger" in series["requests"]["columns"]:
                break
            await asyncio.sleep(0.5)
        assert sum(v or 0 for v in series["requests"]["columns"]["challenger"]) > 0
        assert {row["variant"] for row in series["summary"]} >= {"challenger", "shadow"}
        # the view names its source; only Prometheus is checked against the response log
        assert series["source"].startswith("response log") and series["checked_against"] is None

        code, data = await call(jp_fetch, "deployments", "eta", "updates")
        assert code == 200 and data["running"] is False and data["decisions"] == [] and data["failing"] is None
        code, data = await call(
            jp_fetch, "deployments", "eta", "autoupdate", method="POST", body={"enabled": True}
        )
        assert code == 400 and "no policy" in data["error"]  # nothing to start with yet: says what to send

        code, promoted = await call(
            jp_fetch, "deployments", "eta", "promote", method="POST", body={"variant": "challenger"}
        )
        assert code == 200 and [v["name"] for v in promoted["variants"] if not v["shadow"]] == ["challenger"]
        code, back = await call(jp_fetch, "deployments", "eta", "rollback", method="POST")
        assert code == 200 and back["revision"] == 4
        assert {v["name"]: v["traffic"] for v in back["variants"]}["challenger"] == 100

        code, _ = await call(jp_fetch, "deployments", "eta", method="DELETE")
        assert code == 204
        code, gone = await call(jp_fetch, "deployments", "eta")
        assert code == 404 and "eta" in gone["error"]
    finally:
        with contextlib.suppress(Exception):
            deployments.undeploy("eta")


async def test_metrics_follow_the_revision_and_mark_each_redeploy(jp_fetch, wolt_home) -> None:
    """The lab view's series come from the notebook panel's revision rule: since the last deploy by default
    (a traffic change continues the run), a series per run with ``revision=all``, and every revision's start
    as a mark with its time and number."""
    from wolt_jupyter.responses.store import default_store_url

    record_revisions(wolt_home, "eta", [{"main": "m/1", "shadow": "m/1"}, {"main": "m/2", "shadow": "m/1"},
                                        {"main": "m/2", "shadow": "m/1"}])  # fmt: skip
    now = time.time()
    sent = write_revised_log(default_store_url("eta", wolt_home), now)

    code, data = await call(jp_fetch, "deployments", "eta", "metrics", since="15m", step="30s")
    assert code == 200, data
    marks = data["revision_marks"]
    assert [(m["revision"], m["label"]) for m in marks] == [(1, "r1"), (2, "r2"), (3, "r3 (same models)")]
    assert [m["time"] / 1000 for m in marks] == pytest.approx([now - 280, now - 150, now - 60], abs=0.01)
    assert data["revisions"] == {"asked": "since-deploy", "follows": True, "read": [2, 3], "current": 3,
                                 "known": [1, 2, 3]}  # fmt: skip
    summary = {row["variant"]: row for row in data["summary"]}
    assert set(summary) == {"main", "shadow"} and summary["main"]["requests"] == sent[2] + sent[3]
    assert "revisions 2-3" in data["source"]

    code, every = await call(
        jp_fetch, "deployments", "eta", "metrics", since="15m", step="30s", revision="all"
    )
    assert code == 200 and every["revisions"]["read"] is None and every["revision_marks"] == marks
    columns, times = every["requests"]["columns"], every["requests"]["time"]
    assert set(columns) == {"main (r1)", "main (r2)"}  # live requests; shadows have their own summary rows
    assert {row["variant"] for row in every["summary"]} == {
        "main (r1)",
        "main (r2)",
        "shadow (r1)",
        "shadow (r2)",
    }
    r2_start = marks[1]["time"]
    # a series per run: r1's line ends at the redeploy, r2's begins there (30 s buckets around the mark)
    assert all(not v for t, v in zip(times, columns["main (r1)"], strict=True) if t > r2_start + 30_000)
    assert all(not v for t, v in zip(times, columns["main (r2)"], strict=True) if t < r2_start - 30_000)
    assert {row["variant"]: row["requests"] for row in every["summary"]}["main (r1)"] == sent[1]

    code, one = await call(jp_fetch, "deployments", "eta", "metrics", since="15m", step="30s", revision="1")
    assert code == 200 and one["revisions"]["read"] == [1]
    assert {row["variant"]: row["requests"] for row in one["summary"]}["main"] == sent[1]

    code, bad = await call(jp_fetch, "deployments", "eta", "metrics", revision="latest")
    assert code == 400 and "revision=3" in bad["error"] and "latest" in bad["error"]
    code, bad = await call(jp_fetch, "deployments", "eta", "metrics", revision="7")
    assert code == 400 and "has no revision 7; its revisions: 1-3" in bad["error"]


# (method, path, body, status, a word the message must contain): one server for all, it takes seconds to start
ERRORS = [
    ("POST", ("deployments",), {"name": "Bad_Name", "model": "models:/eta/1"}, 400, "Bad_Name"),
    ("POST", ("deployments",), {"name": "eta", "model": "models:/eta/9"}, 404, "eta"),
    ("POST", ("deployments",), {"name": "eta", "model": "models:/eta/1", "weights": 3}, 400, "weights"),
    ("POST", ("deployments",), {"name": "eta", "spec": {"name": "eta", "variants": []}}, 400, "variant"),
    ("POST", ("deployments",), {"model": "models:/eta/1"}, 400, "name"),
    ("PUT", ("deployments", "nosuch", "traffic"), {"weights": {"main": 100}}, 404, "nosuch"),
    ("PUT", ("deployments", "nosuch", "traffic"), {"weights": {"main": "all"}}, 400, "whole numbers"),
    ("POST", ("deployments", "nosuch", "promote"), {}, 400, "variant"),
    ("POST", ("deployments", "nosuch", "rollback"), None, 404, "nosuch"),
    ("DELETE", ("deployments", "nosuch"), None, 404, "nosuch"),
    ("GET", ("deployments", "nosuch", "metrics"), None, 404, "nosuch"),
    ("GET", ("deployments", "nosuch", "updates"), None, 404, "nosuch"),
    ("POST", ("deployments", "nosuch", "autoupdate"), {"enabled": True}, 404, "nosuch"),
    ("POST", ("deployments", "nosuch", "rollout"), {"command": "pause"}, 404, "nosuch"),
]


async def test_domain_errors_are_json_with_their_status(jp_fetch, wolt_home) -> None:
    for method, path, body, status, says in ERRORS:
        code, data = await call(jp_fetch, *path, method=method, body=body)
        assert (code, data["status"]) == (status, status), (method, path, data)
        assert says in data["error"], (method, path, data)


async def test_a_malformed_body_is_400(jp_fetch, wolt_home) -> None:
    response = await jp_fetch(API, "deployments", method="POST", body="{not json", raise_error=False)
    assert response.code == 400
    assert "not JSON" in json.loads(response.body)["error"]


async def test_bad_metric_window_is_400(jp_fetch, wolt_home) -> None:
    code, data = await call(jp_fetch, "deployments", "eta", "metrics", since="forever")
    assert code == 400 and "since" in data["error"]


async def test_unreachable_mlflow_is_503_in_one_line(
    jp_fetch, wolt_home, closed_port_uri, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_uri)
    code, data = await call(jp_fetch, "models")
    assert code == 503, data
    assert closed_port_uri.split("//")[1] in data["error"] and "\n" not in data["error"]


async def test_settings_name_the_targets(jp_fetch, wolt_home) -> None:
    code, data = await call(jp_fetch, "settings")
    assert code == 200
    assert data["targets"] == ["local", "kubernetes", "seldon", "kserve"]
    assert data["default_target"] == "local"


async def test_the_lab_steers_a_rollout(jp_fetch, registered) -> None:
    """A rollout in flight (the service in a thread of this server's process, a real local deployment): the
    updates view says which commands apply; the lab pauses it, is told why a second pause cannot apply, and
    aborts it, each asked as the lab's user."""
    import threading

    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import serve

    def split() -> dict[str, int]:
        return {v.name: v.traffic for v in deployments.revision_store().spec("eta").variants}

    deployments.deploy("eta", model=registered["v1"])
    mlflow_client().set_registered_model_alias("eta", "challenger", "2")
    canary = [{"weight": 20, "bake": "10m"}, {"weight": 100, "bake": "10m"}]
    policy = {"deployment": "eta", "watch": {"model": "eta", "alias": "challenger", "poll_seconds": 0.3},
              "rollout": {"shadow": False, "canary": canary, "analysis_interval": 0.5}}  # fmt: skip
    stop = threading.Event()
    service = threading.Thread(target=serve, args=(Policy.load(policy), stop), kwargs={"mlflow": False})
    service.start()
    try:
        for _ in range(600):
            if split() == {"main": 80, "candidate": 20}:
                break
            await asyncio.sleep(0.2)
        code, data = await call(jp_fetch, "deployments", "eta", "updates")
        assert code == 200 and data["rollout"]["step"] == "canary 20%", data["rollout"]
        assert (
            data["rollout"]["commands"] == ["pause", "promote-now", "abort"] and not data["rollout"]["paused"]
        )

        code, paused = await call(
            jp_fetch, "deployments", "eta", "rollout", method="POST", body={"command": "pause"}
        )
        assert code == 200 and paused["applied"] and paused["outcome"].startswith("paused by hand"), paused
        assert paused["by"].endswith("via the lab") and paused["by"] in paused["outcome"]
        code, data = await call(jp_fetch, "deployments", "eta", "updates")
        assert data["rollout"]["paused"] == paused["outcome"]
        assert data["rollout"]["commands"] == ["resume", "promote-now", "abort"]
        code, again = await call(
            jp_fetch, "deployments", "eta", "rollout", method="POST", body={"command": "pause"}
        )
        assert code == 400 and "already paused at canary 20%" in again["error"], again
        code, bad = await call(jp_fetch, "deployments", "eta", "rollout", method="POST", body={"command": 3})
        assert code == 400 and "one of pause, resume, promote-now, abort, approve" in bad["error"]

        code, aborted = await call(
            jp_fetch, "deployments", "eta", "rollout", method="POST", body={"command": "abort"}
        )
        assert code == 200 and aborted["outcome"].startswith("aborted by hand"), aborted
        assert split() == {"main": 100}
        code, data = await call(jp_fetch, "deployments", "eta", "updates")
        assert data["rollout"]["outcome"] == "rejected" and data["rollout"]["commands"] == []
        assert [d["action"] for d in data["decisions"]][-2:] == ["pause", "reject"]
    finally:
        stop.set()
        await asyncio.to_thread(service.join, 60)
        with contextlib.suppress(Exception):
            deployments.undeploy("eta")
