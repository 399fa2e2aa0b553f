"""Variants isolated from each other (issue 25): a slow or hung challenger, a champion's timeout, full queues.

Real runtime processes under real HTTP load. Before the change, predicts ran on the event loop: a 0.3 s
challenger at 10 % took main's p99 from 3.2 ms to 604 ms, and a hung one stopped the runtime, health checks
included. Each assertion here fails on that code (measured: see the README's "Variants isolated").
"""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest
from serving_support import Client, free_port, metric, p99, row_doc, under_load

ROW = [[0.3, -0.2, 0.1, 0.9]]
MAIN_P99_BOUND_S = 0.150  # main alone: a few ms; with predicts on the loop: ≥ 0.3 s (the challenger's sleep)
HAS_GRPC = importlib.util.find_spec("grpc") is not None

SLOW = {
    "name": "iso-slow",
    "variants": [
        {"name": "main", "model": "models:/wolt-lr/1", "traffic": 90},
        {"name": "slow", "model": "models:/wolt-sleepy/2", "traffic": 10},  # 0.3 s per predict
    ],
    "logging": {"responses": True},
}
HUNG = {
    "name": "iso-hung",
    "variants": [
        {"name": "main", "model": "models:/wolt-lr/1", "traffic": 90},
        {"name": "hung", "model": "models:/wolt-hangs/1", "traffic": 10, "timeout": 0.3},
    ],
    "logging": {"responses": True},
}
CHAMPION = {
    "name": "iso-champion",
    "variants": [
        {"name": "main", "model": "models:/wolt-sleepy/1", "traffic": 100, "timeout": 0.2},  # 1 s per predict
        {"name": "fast", "model": "models:/wolt-lr/1", "traffic": 0},
    ],
    "logging": {"responses": False},
    "_args": ["--variant-queue-size", "2", *(["--grpc-port", str(free_port())] if HAS_GRPC else [])],
}


@pytest.fixture(scope="module")
def rts(runtime_factory):
    """The three runtimes, started together."""
    return {rt.name: rt for rt in runtime_factory(SLOW, HUNG, CHAMPION)}


def main_latencies(answers) -> list[float]:
    """Requests the split sent to main and main answered (not a challenger's retried on main)."""
    return [a.seconds for a in answers if a.variant == "main" and a.retried_from is None]


def test_a_slow_challenger_does_not_delay_main(rts) -> None:
    rt = rts["iso-slow"]
    answers = under_load(rt, seconds=6, clients=8, doc=row_doc(ROW))
    assert {a.status for a in answers} == {200}
    by_variant = {v: [a for a in answers if a.variant == v] for v in ("main", "slow")}
    assert len(by_variant["slow"]) >= 5, "the slow challenger must take part"
    assert min(a.seconds for a in by_variant["slow"]) >= 0.29  # it really is slow
    main = main_latencies(answers)
    assert p99(main) < MAIN_P99_BOUND_S, f"main's p99 {p99(main) * 1000:.1f} ms with a 0.3 s challenger"
    assert len(main) >= 500  # predicts on the loop: main answered 216 requests in 6 s here


def test_a_hung_challenger_is_answered_by_the_champion_and_skipped(rts) -> None:
    rt = rts["iso-hung"]
    health: list[tuple[int, int, float]] = []
    stop = threading.Event()

    def probe() -> None:  # health checks keep answering while the challenger's predicts hang
        while not stop.is_set():
            t0 = time.perf_counter()
            live, ready = rt.get("/v2/health/live")[0], rt.get("/v2/health/ready")[0]
            health.append((live, ready, time.perf_counter() - t0))
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answers = under_load(rt, seconds=6, clients=8, doc=row_doc(ROW))
    finally:
        stop.set()
        prober.join(30)
    # every request answered 200, by main: the hung variant's own ones after its timeout (or at once when
    # its queue is full or it is skipped), named in x-wolt-retried-from
    assert {a.status for a in answers} == {200}
    assert {a.variant for a in answers} == {"main"}
    retried = [a for a in answers if a.retried_from == "hung"]
    assert len(retried) >= 10
    assert max(a.seconds for a in retried) < 5  # nothing waits for the hung model
    main = main_latencies(answers)
    assert len(main) >= 500
    assert p99(main) < MAIN_P99_BOUND_S, f"main's p99 {p99(main) * 1000:.1f} ms with a hung challenger"
    assert len(health) >= 20 and {(live, ready) for live, ready, _ in health} == {(200, 200)}
    assert max(s for *_, s in health) < 1.0
    text = rt.metrics()
    assert metric(text, "wolt_model_timeouts_total", variant="hung") >= 4
    assert metric(text, "wolt_variant_hung_threads", variant="hung") == 4  # then no new thread is started
    assert metric(text, "wolt_variant_skipped", variant="hung") == 1
    assert metric(text, "wolt_variant_hung_threads", variant="main") == 0
    assert metric(text, "wolt_champion_retries_total", variant="hung", champion="main") == len(retried)
    log = rt.log.read_text()
    assert "variant hung is skipped: 4 predict threads hung past its timeout" in log
    # asked for by name, a skipped variant says so at once: 503 with Retry-After
    c = Client(rt.url)
    try:
        t0 = time.perf_counter()
        status, body, _ = c.infer(rt.name, row_doc(ROW), version="hung")
        assert status == 503 and "retry-after" in c.headers
        assert "variant 'hung' is skipped: 4 of its predicts hung past its timeout" in body["error"]
        assert time.perf_counter() - t0 < 1.0
    finally:
        c.close()


def test_the_champions_timeout_is_a_504_and_its_full_queue_a_503(rts) -> None:
    rt = rts["iso-champion"]
    c = Client(rt.url)
    try:
        t0 = time.perf_counter()
        status, body, _ = c.infer(rt.name, row_doc(ROW))
        took = time.perf_counter() - t0
    finally:
        c.close()
    assert status == 504, body
    assert body == {"error": "variant 'main' did not answer within its timeout of 0.2 s"}
    assert 0.19 <= took < 0.9  # not the model's 1 s
    # more at once than the queue (2) holds: the rest are refused at once, 503 with Retry-After
    statuses: list[tuple[int, dict, dict]] = []
    lock = threading.Lock()

    def one() -> None:
        c = Client(rt.url)
        try:
            status, body, _ = c.infer(rt.name, row_doc(ROW))
            with lock:
                statuses.append((status, body, c.headers))
        finally:
            c.close()

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(statuses) == 12
    assert {s for s, _, _ in statuses} <= {503, 504}
    full = [(b, h) for s, b, h in statuses if s == 503]
    assert full and all("retry-after" in h for _, h in full)
    assert any("has 2 requests waiting (its queue is full)" in b["error"] for b, _ in full)
    text = rt.metrics()
    assert metric(text, "wolt_variant_queue_full_total", variant="main") >= 1
    assert metric(text, "wolt_model_timeouts_total", variant="main") >= 2
    # the other variant of the same runtime is not held up by main's stuck threads
    c = Client(rt.url)
    try:
        t0 = time.perf_counter()
        status, _, variant = c.infer(rt.name, row_doc(ROW), version="fast")
        assert (status, variant) == (200, "fast") and time.perf_counter() - t0 < 0.5
    finally:
        c.close()


@pytest.mark.skipif(not HAS_GRPC, reason="grpcio is optional")
def test_the_champions_timeout_is_deadline_exceeded_over_grpc(rts) -> None:
    import grpc

    from wolt_jupyter.serving.grpc_service import MESSAGES, SERVICE

    rt = rts["iso-champion"]
    time.sleep(1.2)  # the previous test's predicts return; the variant is not skipped any more
    req = MESSAGES["ModelInferRequest"](model_name=rt.name)
    t = req.inputs.add(name="x", datatype="FP64", shape=[1, 4])
    t.contents.fp64_contents.extend(ROW[0])
    with grpc.insecure_channel(rt.grpc) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=MESSAGES["ModelInferResponse"].FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not answer within its timeout of 0.2 s" in err.value.details()
