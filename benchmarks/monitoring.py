"""Monitoring refresh cost (not a test; run ``python benchmarks/monitoring.py [--prometheus]``).

1. ``ResponseLogSource``: a response log of 1,000,000 rows (three live variants, one shadow, 30 minutes; a
   redeploy halfway: revisions 1 and 2) in a temp SQLite file; the median wall time of a full panel refresh
   over the whole window, revision-blind and revision-aware (series per revision, the redeploy marked).
   Goal: <= 1 s.
2. ``PrometheusSource`` (with ``--prometheus``, needs Debian's ``prometheus``): against a real server, the
   wall time of one refresh (all its queries) next to the sum of the same queries run one after another —
   concurrent issue means the wall time is near the slowest query, not the sum.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

N_ROWS = 1_000_000
WINDOW_S = 1800.0


def build_log(path: Path, n: int = N_ROWS, now: float | None = None, deployment: str = "bench") -> float:
    """Write ``n`` response-log rows ending at ``now`` with bulk inserts; return ``now``."""
    from wolt_jupyter.responses.store import ensure_schema, insert_rows, make_engine

    now = time.time() if now is None else now
    rng = np.random.default_rng(0)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    ensure_schema(engine)
    n_live = int(n / 1.25)  # 1 shadow copy per 4 live requests
    times = np.sort(rng.uniform(now - WINDOW_S, now, n_live))
    variant = rng.choice(["main", "challenger", "canary"], size=n_live, p=[0.7, 0.2, 0.1])
    latency = rng.lognormal(np.log(2.0), 0.4, n_live) + np.where(variant == "challenger", 20.0, 0.0)
    status = np.where(rng.random(n_live) < 0.01, 500, 200)
    pred = rng.normal(10, 3, n_live)
    rows = []
    for i in range(n_live):
        rows.append(
            {
                "id": f"r{i:09d}",
                "time": float(times[i]),
                "deployment": deployment,
                "variant": str(variant[i]),
                "model_name": "eta",
                "model_version": "1",
                "shadow": False,
                "inputs": '{"f0":[0.1],"f1":[0.2],"f2":[0.3]}',
                "outputs": json.dumps({"predictions": [round(float(pred[i]), 4)]}),
                "latency_ms": float(latency[i]),
                "status": int(status[i]),
                "error": None,
                "revision": 1 if times[i] < now - WINDOW_S / 2 else 2,  # redeployed halfway
            }
        )
        if i % 4 == 0:
            rows.append(
                {
                    **rows[-1],
                    "variant": "shadow",
                    "shadow": True,
                    "time": float(times[i]) + 0.002,
                    # the shadow agrees with the live answer 9 times in 10
                    "outputs": rows[-1]["outputs"] if i % 40 else json.dumps({"predictions": [-1.0]}),
                }
            )
    with engine.begin() as conn:
        for start in range(0, len(rows), 50_000):
            insert_rows(conn, rows[start : start + 50_000])
    engine.dispose()
    return now


def bench_response_log(rounds: int = 7) -> None:
    from wolt_jupyter.monitoring.responselog import ResponseLogSource

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        now = build_log(path)
        print(
            f"built a {N_ROWS:,}-row response log in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.0f} MB)"
        )
        # as if the log ended now: the buckets of the last 10 s are re-read on every refresh
        source = ResponseLogSource(f"sqlite:///{path}", settle=time.time() - now + 10)
        t = time.perf_counter()
        source.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)
        print(f"first read of the window (every bucket from SQL): {(time.perf_counter() - t) * 1000:.0f} ms")
        cold = []
        for _ in range(3):
            fresh = ResponseLogSource(f"sqlite:///{path}")
            t = time.perf_counter()
            fresh.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)
            cold.append(time.perf_counter() - t)
        print(
            f"cold refresh, new source each time (no settled buckets kept): median {statistics.median(cold) * 1000:.0f} ms"
        )
        walls, parts = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            data = source.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)
            walls.append(time.perf_counter() - t)
            parts.append(data.timings)
        total = int(data.summary["requests"].sum())
        print(
            f"ResponseLogSource auto-refresh (settled buckets kept) over {total:,} rows, 30m window, 15s step:"
        )
        print(
            f"  median {statistics.median(walls) * 1000:.0f} ms  (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f}; goal <= 1000 ms)"
        )
        for key in parts[0]:
            print(f"  {key}: median {statistics.median(p[key] for p in parts) * 1000:.0f} ms")
        print(data.summary.round(4).to_string())
        panel_refresh(source, now, rounds)
        bench_revisions(f"sqlite:///{path}", now, rounds)


def bench_revisions(url: str, now: float, rounds: int) -> None:
    """The same window read revision-aware (``--revision all``): the chunk index is asked for each
    revision's first and last time every refresh, and the rollup's rows are attributed by time."""
    from wolt_jupyter.monitoring.responselog import ResponseLogSource

    cold = []
    for _ in range(3):
        fresh = ResponseLogSource(url, revision="all")
        t = time.perf_counter()
        data = fresh.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)
        cold.append(time.perf_counter() - t)
    source = ResponseLogSource(url, revision="all", settle=time.time() - now + 10)
    source.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)
    walls = []
    for _ in range(rounds):
        t = time.perf_counter()
        data = source.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)
        walls.append(time.perf_counter() - t)
    print("revision-aware (revision='all': a series per revision, the redeploy marked):")
    print(f"  cold refresh: median {statistics.median(cold) * 1000:.0f} ms")
    print(f"  auto-refresh: median {statistics.median(walls) * 1000:.0f} ms")
    print(f"  series: {', '.join(data.summary.index)}; marks: {[m.label for m in data.revision_marks]}")
    panel_refresh(source, now, rounds)


def panel_refresh(source: object, now: float, rounds: int) -> None:
    """A whole panel refresh: the source's snapshot plus drawing the PNG."""
    from wolt_jupyter.monitoring import figures

    walls = []
    for _ in range(rounds):
        t = time.perf_counter()
        data = source.snapshot("bench", since=now - WINDOW_S, until=now + 1, step=15.0)  # type: ignore[attr-defined]
        figures.png(figures.render(data))
        walls.append(time.perf_counter() - t)
    print(f"  panel refresh (snapshot + PNG): median {statistics.median(walls) * 1000:.0f} ms")


class _Exporter:
    """A metrics endpoint on 127.0.0.1 that looks like a busy runtime: ``variants`` variants, counters growing
    every scrape, so Prometheus has real series to chew on."""

    def __init__(self, variants: int = 40) -> None:
        import http.server
        import threading

        from wolt_jupyter.serving.metrics import Histogram, Registry

        self.registry = Registry()
        self.seldon = self.registry.add(
            Histogram(
                "seldon_api_executor_server_requests_seconds",
                "latency",
                ("deployment_name", "predictor_name", "model_name", "model_version", "code"),
            )
        )
        self.variants = [f"v{i}" for i in range(variants)]
        self.rng = np.random.default_rng(0)
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.tick()
                body = exporter.registry.render()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tick(self) -> None:
        for i, v in enumerate(self.variants):
            for x in self.rng.lognormal(np.log(0.002 * (1 + i % 5)), 0.5, 50):
                code = "500" if x > 0.02 else "200"
                self.seldon.observe(("bench", v, "eta", "1", code), float(x))

    def close(self) -> None:
        self.server.shutdown()


class _SlowLink:
    """A reverse proxy on 127.0.0.1 that adds ``delay`` seconds to every request: Prometheus as seen across a
    network (a cluster's Prometheus from a laptop), where running queries at once hides the round trips."""

    def __init__(self, target: str, delay: float = 0.05) -> None:
        import http.server
        import threading
        import urllib.request

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(delay)
                req = urllib.request.Request(target + self.path, data=body, method="POST")
                req.add_header("content-type", self.headers.get("content-type", ""))
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _time_refreshes(source: object, window: dict, rounds: int) -> tuple[list, list, list, object]:
    """(concurrent refresh walls, sequential walls, slowest single query, last data)."""
    queries = source.queries("bench", **window)  # type: ignore[attr-defined]
    walls, seq, slowest, data = [], [], [], None
    for _ in range(rounds):
        t = time.perf_counter()
        data = source.snapshot("bench", **window)  # type: ignore[attr-defined]
        walls.append(time.perf_counter() - t)
        t = time.perf_counter()
        singles = []
        for q in queries.values():
            t1 = time.perf_counter()
            source.run(q)  # type: ignore[attr-defined]
            singles.append(time.perf_counter() - t1)
        seq.append(time.perf_counter() - t)
        slowest.append(max(singles))
    return walls, seq, slowest, data


def bench_prometheus(rounds: int = 7, scrape_for: float = 20.0) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from wolt_jupyter.monitoring.prometheus import PrometheusSource

    from prometheus_server import prometheus_server  # type: ignore[import-not-found]

    exporter = _Exporter()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "prometheus").mkdir()
        targets = [{"targets": [f"127.0.0.1:{exporter.port}"], "labels": {"deployment_name": "bench"}}]
        (home / "prometheus" / "targets.json").write_text(json.dumps(targets))
        try:
            with prometheus_server(home) as url:
                time.sleep(scrape_for)  # ~20 scrapes of 40 variants x 15 buckets
                now = time.time()
                window = dict(since=now - 900, until=now, step=1.0)
                local = _time_refreshes(PrometheusSource(url), window, rounds)
                link = _SlowLink(url, delay=0.05)
                try:
                    remote = _time_refreshes(PrometheusSource(link.url), window, rounds)
                finally:
                    link.close()
        finally:
            exporter.close()
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    n = len(PrometheusSource("http://x").queries("bench", **window))
    print(f"PrometheusSource refresh: {n} queries, 40 variants, 15m window at 1s step")
    for label, (walls, seq, slowest, _data) in (("local Prometheus", local), ("50 ms away", remote)):
        print(f"  {label}:")
        print(f"    one refresh (queries at once):      median {ms(walls):.0f} ms")
        print(f"    the same queries one after another: median {ms(seq):.0f} ms")
        print(f"    slowest single query:               median {ms(slowest):.0f} ms")
    summary = remote[3].summary  # type: ignore[attr-defined]
    print(f"  variants seen: {len(summary)}, requests in window: {summary['requests'].sum():.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prometheus", action="store_true", help="also time refreshes against a real Prometheus"
    )
    parser.add_argument("--only-prometheus", action="store_true", help="skip the response-log benchmark")
    args = parser.parse_args()
    if not args.only_prometheus:
        bench_response_log()
    if args.prometheus or args.only_prometheus:
        bench_prometheus()


if __name__ == "__main__":
    main()
