"""Throughput numbers for the response writer (not a test; run ``python benchmarks/response_log.py``).

Measures the cost of ``submit`` (timeit, queue large enough never to block) and the rows/s the background
writer sustains into SQLite and into a private PostgreSQL (with fsync on, i.e. a durable server).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from wolt_jupyter.responses import ResponseRecord, ResponseWriter

_spec = importlib.util.spec_from_file_location(
    "wolt_tests_pg_server", Path(__file__).parents[1] / "tests" / "pg_server.py"
)
assert _spec and _spec.loader
_pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pg)
postgres_server = _pg.postgres_server

N = 200_000


def record(i: int) -> ResponseRecord:
    return ResponseRecord(
        id=f"req-{i:08d}",
        time=time.time(),
        deployment="bench",
        variant="a",
        model_name="iris",
        model_version="3",
        shadow=False,
        inputs={"x1": [5.1], "x2": [3.5], "x3": [1.4], "x4": [0.2]},
        outputs={"predict": [0]},
        latency_ms=1.7,
        status=200,
    )


def submit_cost(url: str) -> float:
    """Median microseconds per submit over several timeit rounds (flush_interval long: pure enqueue)."""
    rec = record(0)
    with ResponseWriter(url, queue_size=10_000_000, batch_size=10_000_000, flush_interval=3600) as w:
        rounds = timeit.repeat(lambda: w.submit(rec), number=100_000, repeat=5)
        sampled = ResponseWriter(url, sample=0.5, flush_interval=3600)
        sample_rounds = timeit.repeat(lambda: sampled.submit(rec), number=100_000, repeat=5)
        sampled.close()
        w._queue.clear()  # the timing loop re-submitted one object; do not write 500k copies
    print(f"submit (sample=0.5): {statistics.median(sample_rounds) / 100_000 * 1e6:.2f} us")
    return statistics.median(rounds) / 100_000 * 1e6


def throughput(url: str, n: int = N) -> float:
    """Rows/s from first submit until everything is committed (records built beforehand)."""
    recs = [record(i) for i in range(n)]
    w = ResponseWriter(url, queue_size=20_000, batch_size=500, on_full="wait")
    w.submit(recs[0])
    w.flush()  # create the tables outside the timing
    start = time.perf_counter()
    for r in recs[1:]:
        w.submit(r)
    stats = w.close(timeout=300)
    took = time.perf_counter() - start
    assert stats["written"] == n and stats["dropped"] == 0, stats
    return (n - 1) / took


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    print(f"submit: {submit_cost(f'sqlite:///{tmp}/cost.db'):.2f} us")
    print(f"SQLite: {throughput(f'sqlite:///{tmp}/bench.db'):,.0f} rows/s")
    with postgres_server(tmp, fast=False) as url:
        print(f"PostgreSQL (fsync on): {throughput(url):,.0f} rows/s")


if __name__ == "__main__":
    main()
