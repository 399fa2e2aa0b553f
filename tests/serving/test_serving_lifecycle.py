"""The runtime process: live before ready, ready only when loaded, SIGTERM flushes the response log."""

from __future__ import annotations

import json
import time

import pytest
from serving_support import lr_spec, row_doc, spawn_runtime, stop_runtime, wait_ready

pytestmark = pytest.mark.integration


def test_ready_after_load_and_sigterm_flushes_the_response_log(model_store, tmp_path) -> None:
    from wolt_jupyter import responses

    rt = spawn_runtime(model_store, lr_spec("flush-test"), tmp_path)
    try:
        # the port opens before the models are loaded: live, not ready, inference refused with 503
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if rt.get("/v2/health/live")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        ready_status, _, body = rt.get("/v2/health/ready")
        if ready_status != 200:  # loading takes seconds; this is what a poller sees meanwhile
            assert ready_status == 503 and "loading" in json.loads(body)["error"]
            assert rt.infer(row_doc([[1, 2, 3, 4]]))[0] == 503
        wait_ready(rt)
        ids = [f"flush-{i}" for i in range(30)]
        for i, rid in enumerate(ids):
            status, doc, _ = rt.infer(row_doc([[i, 0, 0, 1]], id=rid))
            assert status == 200 and doc["id"] == rid
    finally:
        code = stop_runtime(rt)
    assert code == 0, rt.log.read_text()[-2000:]
    url = responses.default_store_url("flush-test", rt.state_dir)
    df = responses.read_frame("flush-test", url=url)
    live = df[~df["shadow"].astype(bool)]
    shadow = df[df["shadow"].astype(bool)]
    assert sorted(live["id"]) == sorted(ids)  # every answer logged, flushed at shutdown
    assert sorted(shadow["id"]) == sorted(ids) and set(shadow["variant"]) == {"shadow"}
    assert set(live["variant"]) <= {"main", "challenger"}
    assert (live["status"] == 200).all()
    assert "output.predict" in df.columns and "input.x" in df.columns


def test_a_model_that_cannot_load_exits_with_status_3(model_store, tmp_path) -> None:
    spec = lr_spec("bad-load")
    spec["variants"][1]["model"] = "models:/wolt-lr/99"
    rt = spawn_runtime(model_store, spec, tmp_path)
    try:
        code = rt.proc.wait(60)
    finally:
        stop_runtime(rt)
    assert code == 3
    assert "wolt-lr" in rt.log.read_text()


def test_admin_flush_gives_read_your_writes(ab) -> None:
    from wolt_jupyter import responses

    ids = [f"ryw-{i}" for i in range(25)]
    for rid in ids:
        assert ab.infer(row_doc([[0.1, 0.2, 0.3, 0.4]], id=rid))[0] == 200
    assert ab.admin("flush", token="wrong")[0] == 401
    status, doc = ab.admin("flush")
    assert status == 200 and doc["flushed"] is True and doc["response_log"]["written"] >= 2 * len(ids)
    df = responses.read_frame(ab.name, url=responses.default_store_url(ab.name, ab.state_dir))
    logged = df[df["id"].isin(ids)]
    assert sorted(logged[~logged["shadow"].astype(bool)]["id"]) == sorted(ids)
    assert sorted(logged[logged["shadow"].astype(bool)]["id"]) == sorted(ids)  # shadow copies too


def test_sigterm_with_drain_answers_open_connections_then_closes_them(model_store, tmp_path) -> None:
    """Behind a Service: after SIGTERM the runtime takes no new connection, answers the next request on each
    open one normally with `connection: close` (the client reconnects to another replica), then exits."""
    import http.client
    import signal
    import socket

    rt = wait_ready(spawn_runtime(model_store, lr_spec("drain-test"), tmp_path, ["--drain-seconds", "5"]))
    host, port = rt.url.removeprefix("http://").split(":")
    path = "/v2/models/drain-test/infer"
    body = json.dumps(row_doc([[1, 2, 3, 4]]))
    conns = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(3)]
    try:
        for c in conns:  # keep-alive connections with one answered request each
            c.request("POST", path, body, {"content-type": "application/json"})
            resp = c.getresponse()
            assert resp.status == 200 and resp.getheader("connection") is None
            resp.read()
        rt.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with socket.socket() as s:  # no new connection
            s.settimeout(2)
            assert s.connect_ex((host, int(port))) != 0
        for c in conns[:2]:
            c.request("POST", path, body, {"content-type": "application/json"})
            resp = c.getresponse()
            assert resp.status == 200 and resp.getheader("connection") == "close"
            resp.read()
        # the third connection stays idle: closed after a short grace, and the runtime exits well within the drain
        rt.proc.wait(15)
    finally:
        for c in conns:
            c.close()
        stop_runtime(rt)
    assert rt.proc.returncode == 0, rt.log.read_text()[-2000:]
    assert "drained (0 connections still open)" in rt.log.read_text()
