"""Routing over real HTTP: the A/B split, sticky keys, shadow isolation, admin changes under load, metrics."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from collections import Counter
from urllib.parse import urlparse

from serving_support import ADMIN, STICKY, Client, metric, row_doc

from wolt_jupyter.serving.router import RoutingTable
from wolt_jupyter.spec import DeploymentSpec

ROW = [[0.3, -0.2, 0.1, 0.9]]


def test_http_split_follows_weights_and_names_the_variant(ab) -> None:
    client = Client(ab.url)
    n = 2000
    seen: Counter[str] = Counter()
    try:
        for _ in range(n):
            status, body, header = client.infer(ab.name, row_doc(ROW))
            assert status == 200 and body["parameters"]["variant"] == header
            seen[header] += 1
    finally:
        client.close()
    assert set(seen) == {"main", "challenger"}  # never a 0-traffic variant or the shadow
    share = seen["challenger"] / n
    assert 0.07 < share < 0.13, seen  # 10% +- ~4.5 standard deviations


def test_sticky_key_from_parameters_or_header(sticky) -> None:
    table = RoutingTable.from_spec(DeploymentSpec.from_dict(STICKY))
    client = Client(sticky.url)
    try:
        got = {}
        for i in range(200):
            key = f"user-{i}"
            answers = {
                client.infer(sticky.name, row_doc(ROW, parameters={"user_id": key}))[2] for _ in range(3)
            }
            answers.add(client.infer(sticky.name, row_doc(ROW), {"x-wolt-route-key": key})[2])
            assert len(answers) == 1, (key, answers)  # the same key always lands on the same variant
            got[key] = answers.pop()
            assert got[key] == table.choose(key=key)  # and the server uses the router's stable hash
        share_a = sum(v == "a" for v in got.values()) / len(got)
        assert 0.35 < share_a < 0.65, share_a
    finally:
        client.close()


def test_slow_and_failing_shadows_never_touch_the_live_answer(sticky) -> None:
    """The slow shadow sleeps 1 s per predict and the other raises: live answers stay fast and correct."""
    client = Client(sticky.url)
    before = metric(sticky.metrics(), "wolt_shadow_errors_total", variant="failing")
    n = 40
    t0 = time.perf_counter()
    try:
        for i in range(n):
            t = time.perf_counter()
            status, body, _ = client.infer(sticky.name, row_doc(ROW, parameters={"user_id": str(i)}))
            assert status == 200 and body["outputs"][0]["data"] in ([0], [1])
            assert time.perf_counter() - t < 0.6  # well under one shadow predict (1 s)
    finally:
        client.close()
    assert time.perf_counter() - t0 < n * 1.0 / 4  # the shadow's sleep is off the hot path
    deadline = time.monotonic() + 20
    text = sticky.metrics()
    while time.monotonic() < deadline:
        text = sticky.metrics()
        slow_done = metric(text, "wolt_predictions_count", variant="slow", shadow="true")
        if metric(text, "wolt_shadow_errors_total", variant="failing") >= before + n and slow_done >= n:
            break
        time.sleep(0.2)
    assert metric(text, "wolt_shadow_errors_total", variant="failing") >= before + n
    # batching: far fewer than n slow predicts were needed for n copies (n * 1 s would be 40 s)
    assert metric(text, "wolt_predictions_count", variant="slow", shadow="true") >= n
    assert metric(text, "wolt_shadow_comparisons_total", shadow="slow") >= n


def test_admin_token_file_is_private_and_required(admin_rt) -> None:
    path = admin_rt.state_dir / "deployments" / admin_rt.name / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert admin_rt.admin("routing", token=None)[0] == 401
    assert admin_rt.admin("routing", token="wrong")[0] == 401
    assert admin_rt.admin("traffic", {"weights": {"a": 0, "b": 100}}, token="wrong")[0] == 401
    status, doc = admin_rt.admin("routing")
    assert status == 200 and doc["weights"] == {"a": 100, "b": 0}  # the refused change did nothing


def test_traffic_change_under_load_fails_no_request(admin_rt) -> None:
    stop = threading.Event()
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def hammer() -> None:
        client = Client(admin_rt.url)
        local = []
        try:
            while not stop.is_set():
                status, _, variant = client.infer(admin_rt.name, row_doc(ROW))
                local.append((status, variant))
        finally:
            client.close()
            with lock:
                results.extend(local)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            weights = [{"a": 100, "b": 0}, {"a": 0, "b": 100}, {"a": 50, "b": 50}][i % 3]
            status, doc = admin_rt.admin("traffic", {"weights": weights})
            assert status == 200 and doc["weights"] == weights
            time.sleep(0.05)
        assert admin_rt.admin("traffic", {"weights": {"a": 0, "b": 100}})[0] == 200
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert len(results) > 50
    assert [r for r in results if r[0] != 200] == []
    assert {v for _, v in results} == {"a", "b"}
    client = Client(admin_rt.url)
    try:
        assert {client.infer(admin_rt.name, row_doc(ROW))[2] for _ in range(30)} == {"b"}
    finally:
        client.close()


def test_promote_and_rollback(admin_rt) -> None:
    assert admin_rt.admin("traffic", {"weights": {"a": 90, "b": 10}})[0] == 200
    status, doc = admin_rt.admin("promote", {"variant": "b"})
    assert status == 200 and doc["weights"] == {"b": 100} and doc["shadows"] == ["shadow"]
    client = Client(admin_rt.url)
    try:
        assert {client.infer(admin_rt.name, row_doc(ROW))[2] for _ in range(20)} == {"b"}
        status, doc = admin_rt.admin("rollback")
        assert status == 200 and doc["weights"] == {"a": 90, "b": 10}
        seen = Counter(client.infer(admin_rt.name, row_doc(ROW))[2] for _ in range(300))
        assert seen["a"] > 200 and seen["b"] > 0
    finally:
        client.close()
    status, doc = admin_rt.admin("promote", {"variant": "nope"})
    assert status == 400 and "nope" in doc["error"]
    status, doc = admin_rt.admin("traffic", {"weights": {"a": 50, "b": 10}})
    assert status == 400 and "sum to 100" in doc["error"]


def test_metrics_exposition(ab) -> None:
    client = Client(ab.url)
    try:
        for _ in range(20):
            assert client.infer(ab.name, row_doc(ROW))[0] == 200
    finally:
        client.close()
    time.sleep(0.5)  # shadow and response log run in the background
    text = ab.metrics()
    # every sample line is `name{labels} value`
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eE]+|.* [+-]Inf", line), line
    seldon = "seldon_api_executor_server_requests_seconds"
    labels = dict(
        deployment_name=ab.name, predictor_name="main", model_name="wolt-lr", model_version="1", code="200"
    )
    assert metric(text, f"{seldon}_count", **labels) >= 1
    assert metric(text, f"{seldon}_bucket", le="+Inf", **labels) == metric(text, f"{seldon}_count", **labels)
    assert metric(text, "wolt_predictions_count", deployment=ab.name, variant="main", shadow="false") >= 1
    assert metric(text, "wolt_response_log_written_total", deployment=ab.name) >= 20
    assert metric(text, "wolt_model_load_seconds", variant="main") > 0
    assert "wolt_shadow_disagreements_total" in text and "wolt_shadow_dropped_total" in text
    from prometheus_client import parser

    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families[seldon].type == "histogram"
    assert families["wolt_shadow_comparisons"].type == "counter"


def test_full_shadow_queue_drops_and_counts_instead_of_waiting(drops) -> None:
    client = Client(drops.url)
    n = 30
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            assert client.infer(drops.name, row_doc(ROW))[0] == 200
    finally:
        client.close()
    assert time.perf_counter() - t0 < 3  # 30 slow shadow predicts would take 30 s
    text = drops.metrics()
    dropped = metric(text, "wolt_shadow_dropped_total", variant="slow")
    assert dropped >= n - 2 * 3  # the queue holds 2; the worker takes at most a few batches meanwhile
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # everything not dropped is eventually predicted
        text = drops.metrics()
        done = metric(text, "wolt_predictions_count", variant="slow", shadow="true")
        if done + dropped >= n:
            break
        time.sleep(0.2)
    assert done + dropped == n


def test_admin_spec_swaps_routing_when_models_are_loaded(admin_rt) -> None:
    spec = json.loads(json.dumps(ADMIN))
    spec["variants"][0]["traffic"], spec["variants"][1]["traffic"] = 30, 70
    spec["routing"] = {"sticky_key": "user_id"}
    status, doc = admin_rt.admin("spec", {"spec": spec})
    assert status == 200 and doc["weights"] == {"a": 30, "b": 70} and doc["sticky_key"] == "user_id"
    assert admin_rt.admin("spec", {"spec": spec}, token="nope")[0] == 401
    other = json.loads(json.dumps(spec))
    other["variants"][1]["model"] = "models:/wolt-lr/1"  # a model this process has not loaded
    status, doc = admin_rt.admin("spec", {"spec": other})
    assert status == 409 and "restart" in doc["error"]
    assert admin_rt.admin("routing")[1]["weights"] == {"a": 30, "b": 70}  # unchanged by the refusal
    assert admin_rt.admin("rollback")[0] == 200
    ready = admin_rt.get(f"/v2/models/{admin_rt.name}/versions/b/ready")
    assert ready[0] == 200 and json.loads(ready[2])["ready"] is True


def test_idle_and_stalled_connections_are_closed(drops) -> None:
    """The drops runtime closes connections quiet for 1 s: idle keep-alives and half-sent requests alike."""
    import socket

    u = urlparse(drops.url)
    with (
        socket.create_connection((u.hostname, u.port), timeout=10) as idle,
        socket.create_connection((u.hostname, u.port), timeout=10) as stalled,
    ):
        stalled.sendall(
            b"POST /v2/models/drops-test/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        t0 = time.monotonic()
        assert idle.recv(1024) == b"" and stalled.recv(1024) == b""  # closed by the server
        assert 0.9 < time.monotonic() - t0 < 5
    client = Client(drops.url)
    try:
        assert client.infer(drops.name, row_doc(ROW))[0] == 200  # new connections are fine
    finally:
        client.close()


def test_a_routing_change_creates_the_new_series_at_zero(admin_rt) -> None:
    """A shadow made live and a live variant made a shadow by ``/admin/spec``: their series in the new roles
    exist (at 0) before any request reaches them, so a scrape sees the start of their first burst."""
    seldon = "seldon_api_executor_server_requests_seconds_count"
    live_shadow = dict(predictor_name="shadow", model_name="wolt-lr", model_version="2", code="200")
    before = admin_rt.metrics()
    assert 'predictor_name="shadow"' not in before  # a shadow is not live traffic
    assert 'wolt_shadow_request_seconds_count{deployment="admin-test",variant="shadow"' in before
    spec = json.loads(json.dumps(ADMIN))
    spec["variants"] = [
        {"name": "a", "model": "models:/wolt-lr/1", "traffic": 50},
        {"name": "shadow", "model": "models:/wolt-lr/2", "traffic": 50},
        {"name": "b", "model": "models:/wolt-lr/2", "shadow": True},
    ]
    status, doc = admin_rt.admin("spec", {"spec": spec})
    assert status == 200 and doc["shadows"] == ["b"], doc
    try:
        text = admin_rt.metrics()
        assert f"{seldon}{{" in text and metric(text, seldon, **live_shadow) == 0
        assert re.search(r"^" + seldon + r'\{[^}]*predictor_name="shadow"[^}]*code="200"\} 0$', text, re.M)
        for code in ("200", "500"):
            assert re.search(
                r'^wolt_shadow_request_seconds_count\{deployment="admin-test",variant="b",'
                rf'model_name="wolt-lr",model_version="2",code="{code}"\}} 0$',
                text,
                re.M,
            ), code
        for live in ("a", "shadow"):
            line = f'wolt_shadow_comparisons_total{{deployment="admin-test",shadow="b",live="{live}"}} 0'
            assert line in text.splitlines()
    finally:
        assert admin_rt.admin("rollback")[0] == 200
