"""Response-log numbers, before and after the compact format (not a test; ``python benchmarks/response_log.py``).

The same synthetic traffic for every store: ``--requests`` requests to a 20-feature model (float64 features
from a normal distribution, full precision, as a scaled tabular dataset gives), each logged twice (the live
variant and a shadow), one float output, 2,000 requests/s. For each store it reports

- bytes per logged row: SQLite, the whole database file (after a WAL checkpoint) / rows; PostgreSQL, the
  log table with its indexes and TOAST (``pg_total_relation_size``) / rows;
- read rows/s: ``read_frame(name)`` into a DataFrame, and (after) with ``columns=`` the 20 numeric inputs;
- write rows/s through the background writer, and the cost of ``submit``.

"before" is the previous format measured with the code of a git revision that still had it (``--before-ref``,
default the last commit with JSON payloads), unpacked to a temporary directory and run in a subprocess, so
both sides are the real code of their time on the same traffic.

The read path alone: ``--read-ref`` (default the last commit before the read rework) reads the same "after"
store with that revision's read code and with this tree's, in subprocesses taking turns ``--read-rounds``
times, and reports the best wall and CPU (all threads) rows/s of each with the load average: on a shared
machine only same-run ratios mean something, and CPU rows/s move least with the load.

Measured 2026-11-30, 100,000 requests (200,000 rows), 2 cores shared with other engineers' test runs,
``python benchmarks/response_log.py --requests 100000 --no-before --read-rounds 3`` (then 5):

    bytes/row: SQLite 103.7, PostgreSQL 102.3 (unchanged: the write side is not touched)
    reads (rows/s, wall / CPU)          12a2b04                now                  load
    SQLite      responses(name)         0.27M / 1.48M  ->  0.84M / 1.60M         7.9
                20 numeric columns      1.06M / 2.31M  ->  1.13M / 2.51M
    PostgreSQL  responses(name)         0.46M / 1.06M  ->  1.14M / 1.53M         7.6
                20 numeric columns      0.92M / 1.50M  ->  1.59M / 2.23M
    second run:
    SQLite      responses(name)         1.70M / 1.65M  ->  1.70M / 1.78M         6.0
                20 numeric columns      2.65M / 2.60M  ->  2.73M / 2.76M
    PostgreSQL  responses(name)         0.28M / 1.08M  ->  0.35M / 1.57M         8.6
                20 numeric columns      0.36M / 1.44M  ->  0.65M / 2.26M
    a trial merge with main's format (Arrow IPC writer chunks), --read-ref main (3cc4aa3):
    SQLite      responses(name)         1.67M / 1.76M  ->  1.63M / 1.85M         7.5
                20 numeric columns      2.21M / 2.75M  ->  2.40M / 3.06M
    PostgreSQL  responses(name)         0.82M / 1.21M  ->  1.16M / 1.73M         6.0
                20 numeric columns      1.03M / 1.56M  ->  1.49M / 2.38M
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE_REF = "12d8ef2"  # the last commit writing one SQL row per record with JSON payloads
READ_REF = "12a2b04"  # the last commit before the read path's rework (per-row fetch, hex bytea, one thread)
FEATURES = 20
RATE = 2000.0  # requests/s the synthetic timestamps are spread at


def _pg_module():
    spec = importlib.util.spec_from_file_location("wolt_tests_pg_server", ROOT / "tests" / "pg_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def traffic(n: int, seed: int = 1) -> list:
    """The records of ``n`` requests (live + shadow each), as the runtime builds them."""
    import numpy as np

    from wolt_jupyter.responses import ResponseRecord

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES))
    live = rng.normal(size=n)
    t0 = time.time() - n / RATE
    extra = {"revision": 1} if "revision" in ResponseRecord.__dataclass_fields__ else {}
    records = []
    for i in range(n):
        inputs = {f"x{j}": [float(x[i, j])] for j in range(FEATURES)}
        for variant, shadow, version in (("main", False, "3"), ("shadow", True, "4")):
            records.append(
                ResponseRecord(
                    id=f"{i:08x}-6f1c-4b7e-9a53-{i * 7919 % 10**12:012d}",  # a uuid-shaped request id
                    time=t0 + i / RATE + (0.0015 if shadow else 0.0),
                    deployment="bench",
                    variant=variant,
                    model_name="diabetes",
                    model_version=version,
                    shadow=shadow,
                    inputs=inputs,
                    outputs={"predict": [float(live[i]) * (1.01 if shadow else 1.0)]},
                    latency_ms=float(0.4 + rng.gamma(2.0, 0.3)),
                    status=200,
                    **extra,
                )
            )
    return records


def measure(url: str, n: int, after: bool) -> dict:
    """Write ``n`` requests' records to ``url``, then size and read them; runs with whichever package is
    first on the path (this tree's, or the before-ref's in the subprocess)."""
    import wolt_jupyter.responses as log
    from wolt_jupyter.responses import ResponseWriter

    read_frame = getattr(log, "read_frame", None) or log.responses  # the before-ref named it responses

    records = traffic(n)
    kwargs = {"maintenance_interval": 3600} if after else {}
    w = ResponseWriter(url, queue_size=len(records) + 10, batch_size=500, **kwargs)
    start = time.perf_counter()
    for r in records:
        w.submit(r)
    assert w.flush(600)
    write_s = time.perf_counter() - start
    if after:
        w.maintain(now=time.time() + 3600)  # what the background pass does: merge the batches' chunks
    stats = w.close(timeout=600)
    assert stats["written"] == len(records) and stats["dropped"] == 0, stats
    out = {"rows": len(records), "write_rows_s": len(records) / write_s, "bytes": _size(url, after)}
    out["bytes_per_row"] = out["bytes"] / len(records)
    reads = []
    for _ in range(3 if after else 1):  # the previous format takes long: once is enough
        t = time.perf_counter()
        df = read_frame("bench", url=url, **({"revision": "all"} if after else {}))
        reads.append(time.perf_counter() - t)
    assert len(df) == len(records), len(df)
    out["read_rows_s"] = len(df) / min(reads)
    if after:
        cols = [f"input.x{j}" for j in range(FEATURES)]
        reads = []
        for _ in range(3):
            t = time.perf_counter()
            df = read_frame("bench", url=url, columns=cols, revision="all")
            reads.append(time.perf_counter() - t)
        out["read_numeric_rows_s"] = len(df) / min(reads)
    return out


def read_speed(url: str, reps: int = 3) -> dict:
    """Best wall and CPU (all threads) rows/s of ``responses(name)`` and of the 20 numeric input columns, read
    with whichever package is first on the path; what ``--read-ref`` compares in alternating subprocesses."""
    import wolt_jupyter.responses as log

    read = getattr(log, "read_frame", None) or log.responses  # renamed read_frame later; the ref's name
    out = {}
    for label, kw in (("read", {}), ("numeric", {"columns": [f"input.x{j}" for j in range(FEATURES)]})):
        read("bench", url=url, revision="all", **kw)  # imports and caches warm
        walls, cpus = [], []
        for _ in range(reps):
            t, c = time.perf_counter(), time.process_time()
            rows = len(read("bench", url=url, revision="all", **kw))
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        out[f"{label}_rows_s"], out[f"{label}_cpu_rows_s"] = rows / min(walls), rows / min(cpus)
    return out


def compare_reads(url: str, ref: str, tmp: Path, rounds: int) -> dict[str, dict]:
    """``read_speed`` with this tree and with the read code of ``ref``, on the same store, alternating
    subprocesses ``rounds`` times (a loaded machine shifts both alike); the best of each, and the load."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for side, src in ((ref, _tree(ref, tmp)), ("now", ROOT)):
            got = _in_subprocess(src, f"b.read_speed({url!r})", tmp)
            mine = best.setdefault(side, {})
            for key, value in got.items():
                mine[key] = max(mine.get(key, 0.0), value)
    best["load"] = {"load_1m": os.getloadavg()[0]}
    return best


def _size(url: str, after: bool) -> int:
    from sqlalchemy import create_engine

    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        return os.path.getsize(path)
    table = "wolt_response_chunks" if after else "wolt_responses"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        # what the rows take once the space of merged chunks is reused (as the next writes do)
        conn.exec_driver_sql(f"VACUUM FULL {table}")
        size = conn.exec_driver_sql(f"SELECT pg_total_relation_size('{table}')").scalar_one()
    engine.dispose()
    return int(size)


def submit_cost() -> float:
    """Median microseconds per ``submit`` (pure enqueue: the writer thread sleeps meanwhile)."""
    from wolt_jupyter.responses import ResponseWriter

    rec = traffic(1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        w = ResponseWriter(
            f"sqlite:///{tmp}/cost.db", queue_size=10**7, batch_size=10**7, flush_interval=3600
        )
        rounds = timeit.repeat(lambda: w.submit(rec), number=100_000, repeat=5)
        w._queue.clear()
        w.close()
    return statistics.median(rounds) / 100_000 * 1e6


def _tree(ref: str, tmp: Path) -> Path:
    """The package as it was at ``ref`` (git archive into ``tmp``, once)."""
    from _proc import tree

    return tree(ref, tmp)


def _in_subprocess(src: Path, call: str, tmp: Path) -> dict:
    """``call`` (an expression over this module as ``b``) run with the package at ``src``; its JSON result."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT / 'benchmarks'}"}
    code = f"import json, response_log as b; print(json.dumps({call}))"
    # cwd elsewhere: "python -c" puts the working directory first on the path, which may hold this tree
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{call} with {src} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _before(url: str, n: int, ref: str, tmp: Path) -> dict:
    """``measure`` with the package as it was at ``ref``, in a subprocess."""
    return _in_subprocess(_tree(ref, tmp), f"b.measure({url!r}, {n}, after=False)", tmp)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50_000, help="requests (two logged rows each)")
    p.add_argument("--before-ref", default=BEFORE_REF, help="git revision with the previous format")
    p.add_argument("--no-before", action="store_true", help="skip the previous format")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--read-ref", default=READ_REF, help="git revision whose read code reads the same store")
    p.add_argument("--read-rounds", type=int, default=3, help="alternating rounds of that comparison")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wolt-bench-log-"))
    print(f"traffic: {args.requests:,} requests x (live + shadow), {FEATURES} float64 features, 1 output")
    print(f"submit: {submit_cost():.2f} us")
    results: dict[str, dict] = {}
    reads: dict[str, dict[str, dict]] = {}

    def run(store: str, url_before: str | None, url_after: str) -> None:
        if url_before is not None:
            results[f"{store} before"] = _before(url_before, args.requests, args.before_ref, tmp)
        results[f"{store} after"] = measure(url_after, args.requests, after=True)
        if args.read_rounds:
            reads[store] = compare_reads(url_after, args.read_ref, tmp, args.read_rounds)

    skip = args.no_before
    run("SQLite", None if skip else f"sqlite:///{tmp}/before.db", f"sqlite:///{tmp}/after.db")
    if not args.no_postgres:
        pg = _pg_module()
        with pg.postgres_server(tmp / "pg", fast=False) as base:
            from sqlalchemy import create_engine

            engine = create_engine(base, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                for name in ("before_db", "after_db"):
                    conn.exec_driver_sql(f"CREATE DATABASE {name}")
            engine.dispose()
            root = base.rsplit("/", 1)[0]
            run("PostgreSQL", None if skip else f"{root}/before_db", f"{root}/after_db")
    print(f"{'store':<20}{'bytes/row':>11}{'write rows/s':>14}{'read rows/s':>13}{'numeric cols rows/s':>21}")
    for name, r in results.items():
        numeric = f"{r['read_numeric_rows_s']:,.0f}" if "read_numeric_rows_s" in r else "-"
        print(
            f"{name:<20}{r['bytes_per_row']:>11,.1f}{r['write_rows_s']:>14,.0f}{r['read_rows_s']:>13,.0f}{numeric:>21}"
        )
    if reads:
        print(f"\nreads of the same store, read code of {args.read_ref} vs now, alternating subprocesses")
        print(f"{'store':<12}{'code':<10}{'read rows/s':>13}{'(CPU)':>12}{'numeric rows/s':>16}{'(CPU)':>12}")
    for store, sides in reads.items():
        for side in (args.read_ref, "now"):
            r = sides[side]
            print(
                f"{store:<12}{side:<10}{r['read_rows_s']:>13,.0f}{r['read_cpu_rows_s']:>12,.0f}"
                f"{r['numeric_rows_s']:>16,.0f}{r['numeric_cpu_rows_s']:>12,.0f}"
            )
        o, n = sides[args.read_ref], sides["now"]
        print(
            f"{store}: now/{args.read_ref} read {n['read_rows_s'] / o['read_rows_s']:.2f}x "
            f"(CPU {n['read_cpu_rows_s'] / o['read_cpu_rows_s']:.2f}x), numeric "
            f"{n['numeric_rows_s'] / o['numeric_rows_s']:.2f}x "
            f"(CPU {n['numeric_cpu_rows_s'] / o['numeric_cpu_rows_s']:.2f}x), "
            f"load average {sides['load']['load_1m']:.1f}"
        )
    for store in ("SQLite", "PostgreSQL"):
        b, a = results.get(f"{store} before"), results.get(f"{store} after")
        if a and b:
            print(
                f"{store}: {b['bytes_per_row'] / a['bytes_per_row']:.1f}x smaller, "
                f"reads {a['read_rows_s'] / b['read_rows_s']:.1f}x faster"
            )


if __name__ == "__main__":
    main()
