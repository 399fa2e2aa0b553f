"""The background writer against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.responses import ResponseWriter, read_frame, sampled_in

from helpers import read_chunk


def test_burst_from_threads_writes_every_record(store_url, make_record, count_rows):
    threads, per_thread = 4, 5000
    w = ResponseWriter(store_url, queue_size=10000, batch_size=500)
    accepted = []

    def burst(t: int) -> None:
        ok = [w.submit(make_record(t * per_thread + i)) for i in range(per_thread)]
        accepted.append(sum(ok))

    workers = [threading.Thread(target=burst, args=(t,)) for t in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    stats = w.close()

    total = threads * per_thread
    assert sum(accepted) == total
    assert stats == {
        "queued": 0,
        "written": total,
        "dropped": 0,
        "sampled_out": 0,
        "deferred": 0,
        "replayed": 0,
        "removed": 0,
        "unlogged": 0,
    }
    assert count_rows(store_url) == total
    assert count_rows(store_url, shadow=True) == 0
    # every id once: no batch was written twice by a retry or by close()
    df = read_frame("dep", url=store_url)
    assert len(df) == total and df["id"].is_unique


def test_close_flushes_what_is_still_queued(store_url, make_record, count_rows):
    # neither the timer nor the batch size would ever trigger a write: only close() can
    w = ResponseWriter(store_url, batch_size=100_000, flush_interval=3600)
    for i in range(1234):
        assert w.submit(make_record(i))
    time.sleep(0.2)
    assert count_rows(store_url) == 0
    assert w.stats()["queued"] == 1234
    stats = w.close()
    assert stats["written"] == 1234 and stats["queued"] == 0
    assert count_rows(store_url) == 1234
    assert w.close()["written"] == 1234  # idempotent


def test_flush_writes_without_closing(store_url, make_record, count_rows):
    w = ResponseWriter(store_url, batch_size=100_000, flush_interval=3600)
    for i in range(300):
        w.submit(make_record(i))
    assert w.flush(timeout=30)
    assert count_rows(store_url) == 300
    w.submit(make_record(300))
    w.close()
    assert count_rows(store_url) == 301


def test_drop_counts_when_queue_full_and_writer_slow(store_url, make_record, count_rows, writes_blocked):
    w = ResponseWriter(store_url, queue_size=10, batch_size=5, flush_interval=0.01, on_full="drop")
    assert w.submit(make_record(0))
    assert w.flush()  # tables exist, so the lock below can be taken
    with writes_blocked(store_url):
        results = [w.submit(make_record(i)) for i in range(1, 1001)]
        during = w.stats()
    stats = w.close()

    refused = results.count(False)
    # at most the queue plus the stalled transaction (itself at most a queue's worth) and a little slack got in
    assert refused >= 1000 - 2 * 10 - 5
    assert during["dropped"] == refused
    assert stats["dropped"] == refused
    assert stats["written"] == 1 + results.count(True)
    assert count_rows(store_url) == stats["written"]


def test_wait_loses_nothing_with_tiny_queue(store_url, make_record, count_rows, writes_blocked):
    w = ResponseWriter(store_url, queue_size=4, batch_size=2, flush_interval=0.01, on_full="wait")
    w.submit(make_record("warmup"))
    w.flush()
    longest = []

    def producer(t: int) -> None:
        slowest = 0.0
        for i in range(500):
            start = time.perf_counter()
            assert w.submit(make_record(t * 1000 + i))
            slowest = max(slowest, time.perf_counter() - start)
        longest.append(slowest)

    with writes_blocked(store_url) as release:
        timer = threading.Timer(0.5, release)
        timer.start()
        workers = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
        for th in workers:
            th.start()
        for th in workers:
            th.join()
        timer.join()
    stats = w.close()
    assert stats["dropped"] == 0
    assert stats["written"] == 1 + 3 * 500
    assert count_rows(store_url) == 1 + 3 * 500
    # backpressure really happened: producers were held while the database was locked
    assert max(longest) > 0.3


def test_wait_timeout_counts_a_drop_instead_of_hanging(tmp_path, make_record, writes_blocked, caplog):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    w = ResponseWriter(url, queue_size=1, batch_size=1, flush_interval=0.01, wait_timeout=0.2)
    w.submit(make_record(0))
    w.flush()
    with writes_blocked(url), caplog.at_level(logging.WARNING):
        results = [w.submit(make_record(i)) for i in range(1, 4)]
    stats = w.close()
    assert results[-1] is False
    assert stats["dropped"] == results.count(False) >= 1
    assert stats["written"] + stats["dropped"] == 4
    assert "queue stayed full" in caplog.text


def test_sampling_keeps_the_rate_and_live_with_shadow(store_url, make_record):
    n, rate = 4000, 0.25
    w = ResponseWriter(store_url, sample=rate)
    kept_live = kept_shadow = 0
    for i in range(n):
        kept_live += w.submit(make_record(i))
        kept_shadow += w.submit(make_record(i, variant="b", shadow=True))
    stats = w.close()
    assert kept_live == kept_shadow
    assert abs(kept_live / n - rate) < 0.03
    assert stats["sampled_out"] == 2 * (n - kept_live)
    assert stats["written"] == 2 * kept_live
    df = read_frame("dep", url=store_url)
    per_id = df.groupby("id")["shadow"].agg(["count", "sum"])
    assert (per_id["count"] == 2).all() and (per_id["sum"] == 1).all()
    # deterministic: the same ids are kept by any other writer or process
    assert set(df["id"]) == {f"req-{i}" for i in range(n) if sampled_in(f"req-{i}", rate)}


def test_sampling_extremes():
    assert all(sampled_in(f"x{i}", 1.0) for i in range(100))
    assert not any(sampled_in(f"x{i}", 0.0) for i in range(100))
    assert sampled_in("abc", 0.5) == sampled_in("abc", 0.5)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


def test_database_error_is_retried_then_counted_and_logged(make_record, caplog):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nowhere"
    w = ResponseWriter(url, batch_size=10, retries=2, retry_backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="wolt_jupyter.responses"):
        for i in range(25):
            assert w.submit(make_record(i))
        stats = w.close()
    assert stats == {
        "queued": 0,
        "written": 0,
        "dropped": 25,
        "sampled_out": 0,
        "deferred": 0,
        "replayed": 0,
        "removed": 0,
        "unlogged": 0,
    }
    assert "retry 2/2" in caplog.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "database error after 2 retries" in errors[0].getMessage()


def test_transient_lock_is_retried_without_loss(tmp_path, make_record, writes_blocked, count_rows, caplog):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    # a short busy timeout turns the lock into errors, which the writer must retry through
    w = ResponseWriter(
        url,
        flush_interval=0.01,
        retries=8,
        retry_backoff=0.05,
        engine_options={"connect_args": {"timeout": 0.05}},
    )
    w.submit(make_record(0))
    w.flush()
    with caplog.at_level(logging.WARNING, logger="wolt_jupyter.responses"), writes_blocked(url) as release:
        for i in range(1, 101):
            w.submit(make_record(i))
        time.sleep(0.4)
        release()
        stats = w.close()
    assert "database is locked" in caplog.text  # it did fail at least once ...
    assert stats["dropped"] == 0 and stats["written"] == 101  # ... and lost nothing
    assert count_rows(url) == 101


def test_submit_after_close_is_counted_as_dropped(tmp_path, make_record, caplog):
    w = ResponseWriter(f"sqlite:///{tmp_path / 'r.db'}")
    w.close()
    with caplog.at_level(logging.WARNING):
        assert w.submit(make_record(1)) is False
    assert w.stats()["dropped"] == 1
    assert "after close" in caplog.text


def test_payloads_with_numpy_and_bytes_are_stored(tmp_path, make_record):
    import numpy as np

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with ResponseWriter(url) as w:
        w.submit(
            make_record(
                1, inputs={"x": np.array([1.5, 2.5]), "b": [b"hi", b"\xff"]}, outputs={"y": np.int64(3)}
            )
        )
    df = read_frame("dep", url=url)
    assert df["input.x"].tolist() == [1.5, 2.5]
    assert df["input.b"].tolist() == ["hi", {"b64": "/w=="}]
    assert df["output.y"].tolist() == [3, 3]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"on_full": "block"},
        {"sample": 1.5},
        {"sample": -0.1},
        {"queue_size": 0},
        {"batch_size": 0},
        {"flush_interval": 0},
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(InvalidArgument):
        ResponseWriter(f"sqlite:///{tmp_path / 'r.db'}", **kwargs)


def test_bad_url_is_rejected_before_any_thread_starts():
    with pytest.raises(InvalidArgument, match="response store URL"):
        ResponseWriter("not a url")
    with pytest.raises(InvalidArgument, match="no database driver"):
        ResponseWriter("nosuchdb://x/y")


def test_submit_is_cheap(tmp_path, make_record):
    """Generous bound (the measured cost is well under 1 us); guards against work creeping into submit."""
    import timeit

    rec = make_record(1)
    w = ResponseWriter(
        f"sqlite:///{tmp_path / 'r.db'}", queue_size=10**7, batch_size=10**7, flush_interval=3600
    )
    per_call = min(timeit.repeat(lambda: w.submit(rec), number=20_000, repeat=3)) / 20_000
    w._queue.clear()
    w.close()
    assert per_call < 20e-6


def test_postgres_outage_is_retried_without_loss(private_postgres, make_record, count_rows, caplog):
    server = private_postgres
    w = ResponseWriter(server.url, flush_interval=0.02, retries=10, retry_backoff=0.05)
    for i in range(100):
        w.submit(make_record(i))
    assert w.flush()
    server.stop()
    with caplog.at_level(logging.WARNING, logger="wolt_jupyter.responses"):
        for i in range(100, 200):
            assert w.submit(make_record(i))
        time.sleep(0.5)  # the writer fails against the stopped server and backs off
        assert w.stats()["written"] == 100
        server.start()
        stats = w.close()
    assert "retry 1/10" in caplog.text
    assert stats == {
        "queued": 0,
        "written": 200,
        "dropped": 0,
        "sampled_out": 0,
        "deferred": 0,
        "replayed": 0,
        "removed": 0,
        "unlogged": 0,
    }
    assert count_rows(server.url) == 200


def test_close_under_load_writes_everything_it_accepted(store_url, make_record, count_rows):
    w = ResponseWriter(store_url, queue_size=5000, batch_size=200)
    accepted, refused = [], []
    stop = threading.Event()

    def producer(t: int) -> None:
        ok = bad = 0
        i = 0
        while not stop.is_set() or bad == 0:  # keep going past close() until refusals are seen
            if w.submit(make_record(t * 1_000_000 + i)):
                ok += 1
            else:
                bad += 1
            i += 1
            if bad > 100:
                break
        accepted.append(ok)
        refused.append(bad)

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
    for th in workers:
        th.start()
    time.sleep(0.3)
    stats = w.close()
    stop.set()
    for th in workers:
        th.join()
    final = w.stats()
    assert sum(accepted) > 1000  # there was real load when close() ran
    assert stats["queued"] == 0
    assert final["written"] == sum(accepted) == count_rows(store_url)
    assert final["dropped"] == sum(refused) > 0


def test_rollup_counts_equal_the_logged_rows(store_url, make_record) -> None:
    """The per-second rollup the monitoring panel reads adds up to exactly what the log holds, even when many
    batches (from several threads) land in the same second and upsert the same rollup rows."""
    from collections import Counter

    from sqlalchemy import select

    from wolt_jupyter.responses.store import chunks_table, latency_bin, make_engine, rollup_table

    w = ResponseWriter(store_url, batch_size=7, flush_interval=0.001)
    t0 = float(int(time.time()))

    def burst(k: int) -> None:
        for i in range(600):
            record = make_record(
                f"{k}-{i}",
                variant="ab"[i % 2],
                shadow=i % 5 == 0,
                t=t0 + (i % 3) + 0.5,
                latency_ms=1.0 + (i % 4),
                status=500 if i % 10 == 0 else 200,
            )
            w.submit(record)

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    w.close()
    engine = make_engine(store_url)
    rollup = rollup_table()
    with engine.connect() as conn:
        rows = []
        for (data,) in conn.execute(select(chunks_table().c.data)):
            t = read_chunk(data).to_pydict()
            rows += [
                (tm, v, sh, lat)
                for tm, v, sh, lat, r in zip(
                    t["time"], t["variant"], t["shadow"], t["latency_ms"], t["_row"], strict=True
                )
                if r == 0
            ]
        raw = Counter((int(t // 1), v, bool(sh), latency_bin(lat)) for t, v, sh, lat in rows)
        rolled = {(r.second, r.variant, bool(r.shadow), r.lbin): r.n for r in conn.execute(select(rollup))}
        errors = sum(r.errors for r in conn.execute(select(rollup)))
    engine.dispose()
    assert len(rows) == 2400 and sum(rolled.values()) == 2400
    assert rolled == dict(raw)
    assert errors == 4 * 60
