"""Back-pressure (issue 25, goal 2): what a client that sends and never reads can make the runtime hold.

The issue's reproducers against a real runtime process: a client pipelining thousands of GETs on a raw
socket without reading grew it from 216 MB to 2,277 MB in 1.2 s; 1,024 idle sockets from one process locked
every other client out for 75 s (503 at the connection cap). Plus the order of pipelined answers when one
request is malformed, and the gRPC stream cap. The in-process cases at the end use ``serve`` on a real
socket with a handler that holds its answers, to count what the server reads while answers are owed.
"""

from __future__ import annotations

import asyncio
import json
import resource
import select
import socket
import threading
import time
from pathlib import Path

import pytest
from serving_support import free_port, row_doc

SEND_TIMEOUT_S = 3
RSS_BUDGET_MB = 50
# connections the runtime may hold: the 1,024, or what this process's descriptors allow
IDLE = min(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)


@pytest.fixture(scope="module")
def bp(runtime_factory):
    """One variant, no response log, the default limits but a short send timeout; gRPC on ``bp.grpc``."""
    pytest.importorskip("grpc")
    spec = {
        "name": "bp-test",
        "variants": [{"name": "main", "model": "models:/wolt-lr/1", "traffic": 100}],
        "logging": {"responses": False},
        "_args": [
            *("--send-timeout", str(SEND_TIMEOUT_S), "--max-connections", str(IDLE)),
            *("--grpc-port", str(free_port())),
        ],
    }
    [rt] = runtime_factory(spec)
    return rt


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(rt, timeout: float = 10) -> socket.socket:
    host, port = rt.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_answers(sock: socket.socket, timeout: float = 15) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP answer on ``sock`` until the server closes it."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        n = int(headers["content-length"])
        answers.append((int(lines[0].split()[1]), headers, rest[:n]))
        data = rest[n:]
    return answers


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closed (or reset) ``sock`` within ``seconds``; what it sent first is discarded."""
    deadline = time.monotonic() + seconds
    sock.setblocking(False)
    poll = select.poll()  # not select(): descriptors past 1,024 here
    poll.register(sock, select.POLLIN)
    while time.monotonic() < deadline:
        if not poll.poll(50):
            continue
        try:
            while sock.recv(1 << 20):
                pass
            return True  # EOF
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


class Bystander(threading.Thread):
    """Another client: one inference every 50 ms on its own connections, latencies and statuses kept."""

    def __init__(self, rt) -> None:
        super().__init__(daemon=True)
        self.rt, self.stop, self.results = rt, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                status = self.rt.infer(row_doc([[0.1, 0.2, 0.3, 0.4]]))[0]
            except OSError as exc:
                status = repr(exc)
            self.results.append((status, time.perf_counter() - t0))
            time.sleep(0.05)


# -- the unread pipeline -------------------------------------------------------------------------------------
def test_a_client_pipelining_gets_and_never_reading_costs_little_and_blocks_nobody(bp) -> None:
    pid = bp.proc.pid
    for path in ("/metrics", "/v2/openapi.json", "/v2/health/ready"):  # warm: whatever they allocate once
        assert bp.get(path)[0] == 200
    base, peak = rss_mb(pid), 0.0
    over = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            if peak - base > RSS_BUDGET_MB:
                over.set()  # stop the attack at once: uncapped, the old runtime grew by hundreds of MB a second
            time.sleep(0.02)

    done = threading.Event()
    sampler = threading.Thread(target=sample, daemon=True)
    bystander = Bystander(bp)
    # a 29 KB answer to 39 bytes, and one the runtime renders each time
    requests = b"GET /v2/openapi.json HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    payload = requests * 1000  # ~70 KB: 2,000 requests
    attacker = connect(bp)
    attacker.setblocking(False)
    sent, dropped = 0, False
    sampler.start()
    bystander.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not over.is_set():
            try:
                sent += attacker.send(payload)
            except BlockingIOError:
                time.sleep(0.02)
            except (ConnectionResetError, BrokenPipeError):
                dropped = True  # the send timeout: the server gave up on a client that takes nothing
                break
        time.sleep(0.5)  # the bystander's requests meanwhile
    finally:
        bystander.stop.set()
        bystander.join(10)
        done.set()
        sampler.join(5)
    assert not over.is_set(), (
        f"RSS grew {peak - base:.0f} MB (from {base:.0f} MB) out of {sent / 1e6:.1f} MB sent"
    )
    assert sent > 1_000_000  # the attack was real: far more than the limits, in requests
    assert peak - base <= RSS_BUDGET_MB
    statuses = [s for s, _ in bystander.results]
    assert len(statuses) >= 20 and set(statuses) == {200}, statuses
    assert max(t for _, t in bystander.results) < 3.0, bystander.results
    # the attacker is dropped once it has taken nothing for the send timeout
    assert dropped or closed_within(attacker, SEND_TIMEOUT_S + 4)
    attacker.close()
    assert bp.infer(row_doc([[0, 0, 0, 1]]))[0] == 200


# -- the connection cap --------------------------------------------------------------------------------------
def test_idle_connections_at_the_cap_make_way_for_a_new_client(bp) -> None:
    busy = connect(bp)
    # a request in progress: this connection is never closed for others
    busy.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.2)
    idle = []
    try:
        for _ in range(IDLE - 1):  # with ``busy``: the cap
            idle.append(connect(bp))
        time.sleep(1.0)  # let the runtime accept them all: it is at its cap now
        t0 = time.perf_counter()
        status, _, body = bp.get("/v2/health/ready")
        elapsed = time.perf_counter() - t0
        assert status == 200 and json.loads(body) == {"ready": True}
        assert elapsed < 1.0, elapsed
        assert closed_within(idle[0], 2.0)  # the oldest idle one made way
        assert not closed_within(idle[-1], 0.2)
        busy.sendall(b"Connection: close\r\n\r\n")
        [(status, _, _)] = read_answers(busy)
        assert status == 200
    finally:
        for s in [busy, *idle]:
            s.close()


# -- order ---------------------------------------------------------------------------------------------------
def test_pipelined_answers_come_in_order_with_a_parse_error_last(bp) -> None:
    doc = json.dumps(row_doc([[0.5, 0.1, 0.2, 0.3]], id="in-order")).encode()
    infer = (
        b"POST /v2/models/bp-test/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(doc), doc)
    )
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    meta = b"GET /v2/models/bp-test HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(bp) as sock:
        sock.sendall(live + infer + meta + b"BOGUS\x01 / HTTP/1.1\r\n\r\n" + live)
        answers = read_answers(sock)
    assert [status for status, _, _ in answers] == [200, 200, 200, 400]
    assert json.loads(answers[1][2])["id"] == "in-order"
    assert json.loads(answers[2][2])["name"] == "bp-test"
    assert answers[3][1]["connection"] == "close" and "malformed" in json.loads(answers[3][2])["error"]


def test_more_pipelined_requests_than_the_cap_are_all_answered_in_order(bp) -> None:
    n = 300  # max_pipelined is 64: reading pauses and resumes several times on the way
    blob = b""
    for i in range(n):
        doc = json.dumps(row_doc([[i / n, 0.1, 0.2, 0.3]], id=f"p-{i}")).encode()
        blob += b"POST /v2/models/bp-test/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (
            len(doc),
            b"Connection: close\r\n" if i == n - 1 else b"",
            doc,
        )
    with connect(bp) as sock:
        sock.sendall(blob)
        answers = read_answers(sock)
    assert [json.loads(body)["id"] for _, _, body in answers] == [f"p-{i}" for i in range(n)]
    assert {status for status, _, _ in answers} == {200}


# -- gRPC ----------------------------------------------------------------------------------------------------
def test_grpc_infer_streams_beyond_the_cap_are_resource_exhausted(bp) -> None:
    import grpc

    from wolt_jupyter.serving.grpc_service import MESSAGES

    def request():
        req = MESSAGES["ModelInferRequest"](model_name="bp-test")
        req.inputs.add(name="x", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([0, 0, 0, 1])
        return req

    channel = grpc.insecure_channel(bp.grpc)
    stream = channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=MESSAGES["ModelStreamInferResponse"].FromString,
    )

    def held_open(gate: threading.Event):
        yield request()
        gate.wait(30)  # the stream stays open until the gate opens

    feeds, calls = [], []
    try:
        for _ in range(4):  # the default cap
            gate = threading.Event()
            call = stream(held_open(gate), timeout=30)
            assert next(call).infer_response.outputs, "the stream answered"
            feeds.append(gate)
            calls.append(call)
        extra = stream(iter([request()]), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert (
            err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and "ModelStreamInfer" in err.value.details()
        )
        assert bp.infer(row_doc([[0, 0, 0, 1]]))[0] == 200  # unary calls and REST are not starved meanwhile
        unary = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerReady",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=MESSAGES["ServerReadyResponse"].FromString,
        )
        assert unary(MESSAGES["ServerReadyRequest"](), timeout=10).ready
        feeds.pop().set()  # one stream ends: a new one is taken
        list(calls.pop())
        again = stream(iter([request()]), timeout=10)
        assert next(again).infer_response.outputs
    finally:
        for gate in feeds:
            gate.set()
        for call in calls:
            call.cancel()
        channel.close()


# -- in process: what the server reads while answers are owed ------------------------------------------------
class HeldServer:
    """``serve`` on a real socket in a thread of its own; its handler keeps every request and answers only
    when told (``release``: the held ones, and every later one at once), so a test can count what the server
    read while answers were owed."""

    def __init__(self, **limits) -> None:
        from wolt_jupyter.serving.http import Limits

        self.limits = Limits(**limits)
        self.held: list = []
        self.auto = False
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _handle(self, req, respond) -> None:
        from wolt_jupyter.serving.http import Response

        if self.auto:
            respond(Response(200, req.path.encode(), "text/plain"))
        else:
            self.held.append((req, respond))

    def _run(self, ready: threading.Event) -> None:
        from wolt_jupyter.serving.http import serve

        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await serve(self._handle, "127.0.0.1", 0, limits=self.limits)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def release(self) -> None:
        def answer_all() -> None:
            self.auto = True
            held, self.held[:] = list(self.held), []
            for req, respond in held:
                self._handle(req, respond)

        self.loop.call_soon_threadsafe(answer_all)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()  # the server's sweeper

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_reading_stops_at_max_pipelined_and_at_max_body_of_unanswered_bodies() -> None:
    server = HeldServer(max_pipelined=8, max_body=100_000)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            gets = [b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(49)]
            sock.sendall(b"".join(gets) + b"GET /49 HTTP/1.1\r\nConnection: close\r\n\r\n")
            time.sleep(0.5)
            assert len(server.held) == 8  # the rest wait unread until answers go out
            server.release()
            answers = read_answers(sock)
        assert [body for _, _, body in answers] == [b"/%d" % i for i in range(50)]
    finally:
        server.close()
    server = HeldServer(max_body=100_000)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            body = b"x" * 40_000
            post = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            sock.sendall(post * 6)  # 240 kB of bodies, well within the pipeline cap: max_body bounds them
            time.sleep(0.5)
            assert len(server.held) == 2 and sum(len(req.body) for req, _ in server.held) <= 100_000
    finally:
        server.close()


def test_the_oldest_idle_connection_is_closed_and_busy_ones_make_a_503() -> None:
    server = HeldServer(max_connections=3)
    socks = []
    try:
        address = ("127.0.0.1", server.port)
        socks = [socket.create_connection(address, timeout=10) for _ in range(3)]
        time.sleep(0.2)
        socks.append(socket.create_connection(address, timeout=10))
        assert closed_within(socks[0], 2.0)  # the oldest idle one made way
        for s in socks[1:]:  # all busy now: a request each, answers held
            s.setblocking(True)
            s.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        refused = socket.create_connection(address, timeout=10)
        socks.append(refused)
        [(status, _, body)] = read_answers(refused, timeout=5)
        assert status == 503 and b"too many open connections" in body
    finally:
        for s in socks:
            s.close()
        server.close()
