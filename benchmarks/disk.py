"""Disk the response log takes, its write-ahead log included (not a test; ``python benchmarks/disk.py``).

A million logged rows by default (500,000 requests, live + shadow, 20 float64 features: the traffic of
``response_log.py``) go through the background writer into a SQLite store, as a runtime writes them, while a
thread samples the store's files every 10 ms. For this tree and for ``--ref`` (default ``main``), in
alternating subprocesses, it reports write rows/s, the largest WAL seen, and the bytes on disk per million
rows — database + WAL + shared memory — at three moments: writing done (the runtime still up), after the
maintenance pass merged the writer's chunks, and after the writer closed.

Measured 2026-12-07 (2 cores shared with other test runs, load average ~10), MB per million rows, two rounds:

                                  main (before)          now
    writing done, runtime up      177.0-178.2            119.4-119.7
      of which WAL                66.0-66.2              4.19
    after the maintenance pass    182.9-189.5            120.3-120.4
    after the writer closed       116.0-116.1            98.4-98.5
    largest WAL seen              66.7-73.4 MB           11.2 MB (a compaction's transaction)
    write rows/s                  3,893 / 4,769          5,191 / 5,828
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from response_log import _in_subprocess, _tree, traffic

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 10_000  # requests generated at a time (all of them at once would take gigabytes)


def measure(folder: str, requests: int) -> dict:
    """Write ``requests`` requests' records to a SQLite store in ``folder`` with whichever package is first
    on the path; sizes and speed."""
    from wolt_jupyter.responses import ResponseWriter

    base = Path(folder) / "disk.db"
    files = [base, base.with_name("disk.db-wal"), base.with_name("disk.db-shm")]
    sizes = {"wal_max": 0, "total_max": 0}
    stop = threading.Event()

    def now() -> dict[str, int]:
        got = {}
        for name, path in zip(("db", "wal", "shm"), files, strict=True):
            try:
                got[name] = path.stat().st_size
            except OSError:
                got[name] = 0
        got["total"] = sum(got.values())
        return got

    def watch() -> None:
        while not stop.wait(0.01):
            got = now()
            sizes["wal_max"] = max(sizes["wal_max"], got["wal"])
            sizes["total_max"] = max(sizes["total_max"], got["total"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    w = ResponseWriter(
        f"sqlite:///{base}", queue_size=4 * CHUNK + 10, batch_size=500, maintenance_interval=3600
    )
    rows = 0
    start = time.perf_counter()
    for k in range(0, requests, CHUNK):
        records = traffic(min(CHUNK, requests - k), seed=k + 1)
        for r in records:
            w.submit(r)
        rows += len(records)
    assert w.flush(600)
    write_s = time.perf_counter() - start
    written = now()
    w.maintain(now=time.time() + 3600)  # what the background pass does: merge the batches' chunks
    maintained = now()
    stats = w.close(timeout=600)
    stop.set()
    watcher.join()
    assert stats["written"] == rows and stats["dropped"] == 0, stats
    per_million = 1e6 / rows
    return {
        "rows": rows,
        "write_rows_s": rows / write_s,
        "wal_max_mb": sizes["wal_max"] / 1e6,
        "total_max_mb": sizes["total_max"] / 1e6,
        **{f"written_{k}_mb_per_m": v / 1e6 * per_million for k, v in written.items()},
        "maintained_mb_per_m": maintained["total"] / 1e6 * per_million,
        "maintained_wal_mb": maintained["wal"] / 1e6,
        "closed_mb_per_m": now()["total"] / 1e6 * per_million,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500_000, help="requests (two logged rows each)")
    p.add_argument("--ref", default="main", help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wolt-bench-disk-"))
    sides = {args.ref: _tree(args.ref, tmp), "now": ROOT}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side, src in sides.items():
            folder = tmp / f"{side}-{r}"
            folder.mkdir()
            call = f"__import__('disk').measure({str(folder)!r}, {args.requests})"
            results[side].append(_in_subprocess(src, call, tmp))
            for f in folder.iterdir():
                f.unlink()
    print(f"{args.requests:,} requests = {2 * args.requests:,} rows; load average {os.getloadavg()[0]:.1f}")
    for side, runs in results.items():
        for run in runs:
            print(side, json.dumps({k: round(v, 2) for k, v in run.items()}))


if __name__ == "__main__":
    main()
