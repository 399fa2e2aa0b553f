"""Back-pressure benchmark (issue 25): what a client that sends and never reads makes the runtime hold.

    .venv/bin/python benchmarks/backpressure.py [--ref main] [--rounds 2] [--seconds 5] [--idle 1024]

This tree and ``--ref`` (``git archive``), alternating within each round, each a runtime of ``serving.py``'s
``wolt-single`` (a 20-feature LogisticRegression, one variant, no log) pinned to CPU 0 with gRPC on:

1. ``pipeline``: one raw connection pipelines GETs (``/v2/openapi.json``, a 29 KB answer to 39 bytes, and
   ``/metrics``) for ``--seconds`` and never reads; the runtime's VmRSS is sampled every 20 ms (the attack
   stops early past ``--rss-cap-mb`` of growth, to spare the machine). Meanwhile a bystander sends a 1-row
   inference every 20 ms on its own connection: its latencies and failures. Then ``--attackers`` such
   connections at once: what each may cost at most.
2. ``idle``: ``--idle`` connections (the default ``max_connections``) open and send nothing; then a new
   client asks ``/v2/health/ready``: its first answer and how long until a 200 (retrying for up to
   ``--idle-wait`` seconds; the idle timeout that used to free the slots is 75 s).
3. ``grpc``: ``--streams`` ModelStreamInfer streams each push requests for ``--seconds`` and never read;
   RSS growth, and how many streams were refused (RESOURCE_EXHAUSTED).

Each run writes a dated result file (``benchmarks/_results.py``: ``docs/benchmarks/results/<date>-
backpressure.md``, or ``--out-md``).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving as bench  # noqa: E402 - the serving benchmark's model, start and stop
from _results import write_result  # noqa: E402

GETS = b"GET /v2/openapi.json HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """The peak VmRSS of ``pid`` every 20 ms; ``over`` is set past ``cap_mb`` above the start."""

    def __init__(self, pid: int, cap_mb: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.cap, self.base = pid, cap_mb, rss_mb(pid)
        self.peak, self.stop, self.over = self.base, threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))
            if self.peak - self.base > self.cap:
                self.over.set()

    def growth(self) -> float:
        self.stop.set()
        self.join(2)
        return self.peak - self.base


def get(url: str, timeout: float = 10) -> int:
    """The status, or 0 when the runtime did not answer in ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def recovery(base: str, limit: float = 120.0) -> float | None:
    """Seconds until the runtime answers a health check again (it may still be answering the attack)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if get(base + "/v2/health/live", timeout=2) == 200:
            return round(time.perf_counter() - t0, 2)
        time.sleep(0.2)
    return None


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def pipeline(
    pid: int, base: str, infer: str, body: bytes, seconds: float, cap_mb: float, connections: int = 1
) -> dict:
    for path in ("/metrics", "/v2/openapi.json"):
        get(base + path)  # whatever the first answer allocates once
    sampler = Sampler(pid, cap_mb)
    stop, seen = threading.Event(), []

    def bystander() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status = post(infer, body)
            except OSError:
                status = 0
            seen.append((status, time.perf_counter() - t0))
            time.sleep(0.02)

    host, port = base.removeprefix("http://").split(":")
    attackers = [socket.create_connection((host, int(port))) for _ in range(connections)]
    for a in attackers:
        a.setblocking(False)
    payload, sent, how = GETS * 1000, 0, "ran"
    sampler.start()
    by = threading.Thread(target=bystander, daemon=True)
    by.start()
    t0 = time.monotonic()
    while attackers and time.monotonic() - t0 < seconds:
        if sampler.over.is_set():
            how = "stopped at the cap"
            break
        blocked = 0
        for a in list(attackers):
            try:
                sent += a.send(payload)
            except BlockingIOError:
                blocked += 1
            except OSError:
                how = "dropped by the server"
                attackers.remove(a)
                a.close()
        if blocked == len(attackers):
            time.sleep(0.01)
    elapsed = time.monotonic() - t0
    growth = sampler.growth()
    stop.set()
    for a in attackers:
        a.close()
    back = recovery(base)
    by.join(15)
    lat = sorted(t for s, t in seen if s == 200)
    return {
        "connections": connections,
        "rss_base_mb": round(sampler.base, 1),
        "rss_growth_mb": round(growth, 1),
        "sent_mb": round(sent / 1e6, 1),
        "seconds": round(elapsed, 2),
        "attack": how,
        "answers_again_after_s": back,
        "bystander_ok": len(lat),
        "bystander_failed": len(seen) - len(lat),
        "bystander_p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "bystander_max_ms": round(lat[-1] * 1000, 1) if lat else None,
    }


def idle(base: str, n: int, wait: float) -> dict:
    host, port = base.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port))) for _ in range(n)]
    try:
        time.sleep(1.0)  # accepted: the runtime is at its cap
        t0 = time.perf_counter()
        first = get(base + "/v2/health/ready")
        first_s = time.perf_counter() - t0
        status = first
        while status != 200 and time.perf_counter() - t0 < wait:
            time.sleep(0.5)
            status = get(base + "/v2/health/ready")
        served = time.perf_counter() - t0 if status == 200 else None
    finally:
        for s in socks:
            s.close()
    return {"first_status": first, "first_ms": round(first_s * 1000, 1),
            "served_after_s": None if served is None else round(served, 3)}  # fmt: skip


def grpc_streams(pid: int, target: str, streams: int, seconds: float) -> dict:
    import grpc

    from wolt_jupyter.serving.grpc_service import MESSAGES

    req = MESSAGES["ModelInferRequest"](model_name="bench")
    req.inputs.add(name="input-0", datatype="FP64", shape=[1, 20]).contents.fp64_contents.extend([0.1] * 20)
    sampler = Sampler(pid, float("inf"))
    sampler.start()
    stop = threading.Event()

    def requests():  # pushed as fast as flow control lets them; the answers are never read
        while not stop.is_set():
            yield req

    channels = [grpc.insecure_channel(target) for _ in range(streams)]
    calls = []
    for ch in channels:
        call = ch.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=MESSAGES["ModelStreamInferResponse"].FromString,
        )(requests())
        calls.append(call)
    time.sleep(seconds)
    refused = sum(1 for c in calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
    growth = sampler.growth()
    stop.set()
    for c in calls:
        c.cancel()
    for ch in channels:
        ch.close()
    return {"rss_growth_mb": round(growth, 1), "streams": streams, "refused": refused}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="main", help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rss-cap-mb", type=float, default=2048)
    p.add_argument("--attackers", type=int, default=64, help="then this many pipelining connections at once")
    p.add_argument("--idle", type=int, default=1024)
    p.add_argument("--idle-wait", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument(
        "--out-md",
        default=None,
        help="the dated result file (default docs/benchmarks/results/<date>-backpressure.md; '-' prints it)",
    )
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wolt-bench-bp-"))
    prep = bench.prepare(root)
    body = Path(prep["body"]).read_bytes()
    results = []
    for rnd in range(args.rounds):
        kinds = ["wolt-single", f"wolt-single@{args.ref}"]
        for kind in kinds if rnd % 2 == 0 else kinds[::-1]:
            grpc_port = bench.free_port()
            proc, infer, _ = bench.start(kind, root, prep, args, ("--grpc-port", str(grpc_port)))
            base = infer.split("/v2/")[0]
            try:
                r = {"round": rnd, "server": kind}
                r["pipeline"] = pipeline(proc.pid, base, infer, body, args.seconds, args.rss_cap_mb)
                if args.attackers > 1:  # what each connection may cost at most, many at once
                    r["pipelines"] = pipeline(
                        proc.pid, base, infer, body, args.seconds, args.rss_cap_mb, args.attackers
                    )
                r["idle"] = idle(base, args.idle, args.idle_wait)
                r["grpc"] = grpc_streams(proc.pid, f"127.0.0.1:{grpc_port}", args.streams, args.seconds)
            finally:
                bench.stop(proc)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    write_result(
        "backpressure",
        "Back-pressure: clients that send and never read",
        ["round", "server", *HEADER[: 4 + 3 * (args.attackers > 1)], *HEADER[7:]],
        [table_row(r) for r in results],
        notes=NOTES.format(a=args),
        out=args.out_md,
    )
    return 0


HEADER = [
    "1 connection pipelining: RSS growth MB",
    "requests sent MB",
    "runtime answers again after s",
    "bystander answered / failed, max ms",
    "N connections pipelining: RSS growth MB",
    "answers again after s",
    "bystander answered, p50 / max ms",
    "idle sockets, then a new client: status, ms",
    "unread ModelStreamInfer streams: RSS growth MB, refused",
]
NOTES = """\
The wolt runtime is `serving.py`'s `wolt-single` (one variant, no response log) pinned to CPU
{a.server_cpu}, gRPC on; `KIND@REV` is the same runtime with the package at git revision REV.
Pipelining: GETs of `/v2/openapi.json` (29 KB answers) and `/metrics` for {a.seconds:g} s, never read,
on 1 connection and then on N = {a.attackers} at once; an attack stops early past {a.rss_cap_mb:g} MB of
growth. Meanwhile a bystander sends a 1-row inference every 20 ms on its own connection. Idle: {a.idle}
connections that send nothing, then a new client asks `/v2/health/ready` (retried for {a.idle_wait:g} s).
gRPC: {a.streams} ModelStreamInfer streams push requests for {a.seconds:g} s and never read their answers.
Requests a runtime does not read wait in the kernel's socket buffers, outside its RSS."""


def table_row(r: dict) -> list:
    one, idle, rpc = r["pipeline"], r["idle"], r["grpc"]
    row = [r["round"], r["server"], one["rss_growth_mb"], one["sent_mb"], one["answers_again_after_s"]]
    row.append(f"{one['bystander_ok']} / {one['bystander_failed']}, {one['bystander_max_ms'] or '-'}")
    many = r.get("pipelines")
    if many:
        row += [many["rss_growth_mb"], many["answers_again_after_s"]]
        p50, top = many["bystander_p50_ms"] or "-", many["bystander_max_ms"] or "-"
        row.append(f"{many['bystander_ok']}, {p50} / {top}")
    served = "" if idle["served_after_s"] is None else f" (200 after {idle['served_after_s']} s)"
    row.append(f"{idle['first_status']}, {idle['first_ms']}{served}")
    row.append(f"{rpc['rss_growth_mb']}, {rpc['refused']} of {rpc['streams']}")
    return row


if __name__ == "__main__":
    sys.exit(main())
