"""Several writers of one deployment in one store (the kubernetes target's replicas): what every writer runs
on its own — batches, the rollup, compaction, retention, the migration of the first format, the spool —
must stay exactly-once when they run at the same time. The runtime processes under load are in
tests/serving/test_serving_replicas.py."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from wolt_jupyter.responses import ResponseWriter, read_frame
from wolt_jupyter.responses.retention import Retention
from wolt_jupyter.responses.store import make_engine, rollup_table

WRITERS = 3
T0 = 1_800_000_000.0


def _together(fns) -> None:
    """Run the callables at once (a barrier first), re-raising the first failure."""
    barrier = threading.Barrier(len(fns))
    errors: list[BaseException] = []

    def run(fn) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]


def test_writers_compacting_and_retaining_one_deployment_at_once_keep_each_record_once(
    pg_url, make_record
) -> None:
    """Three writers interleave small chunks of one deployment (the same seconds, the same rollup keys), then
    all three compact and enforce retention at the same moment, twice: each record is read once, the
    rollup counts each once, and retention's counters count each removal once."""
    n = 1_200  # 400 per writer, a chunk each 20: many small chunks to merge
    writers = [
        ResponseWriter(pg_url, batch_size=20, flush_interval=60, maintenance_interval=3600,
                       retention=Retention(max_age=1_000.0))
        for _ in range(WRITERS)
    ]  # fmt: skip

    def write(k: int) -> None:
        w = writers[k]
        for i in range(k, n, WRITERS):  # interleaved times: every writer writes every second
            w.submit(make_record(i, t=T0 + i // 2, variant="ab"[i % 2]))
            if i % 60 == k:
                assert w.flush(30)
        assert w.flush(30)

    try:
        _together([lambda k=k: write(k) for k in range(WRITERS)])
        # now = T0 + 1_400: records with time < T0 + 400 (i < 800) are older than the age limit
        now = T0 + 1_400
        for _ in range(2):
            _together([lambda w=w: w.maintain(now) for w in writers])
        assert sum(w.stats()["written"] for w in writers) == n
        assert sum(w.stats()["dropped"] for w in writers) == 0
    finally:
        for w in writers:
            w.close()
    log = read_frame("dep", url=pg_url)
    ids = Counter(log["id"])
    assert [rid for rid, c in ids.items() if c > 1] == []
    assert set(ids) == {f"req-{i}" for i in range(800, n)}
    removed = sum(w.stats()["removed"] for w in writers)
    assert removed == 800, removed  # each old record removed (and counted) by exactly one writer
    from wolt_jupyter.responses.summary import summary

    assert summary("dep", url=pg_url).removed_records == 800
    engine = make_engine(pg_url)
    try:
        from sqlalchemy import func, select

        with engine.connect() as conn:
            r = rollup_table()
            assert conn.execute(select(func.sum(r.c.n))).scalar() == n  # rollup: each record counted once
            from wolt_jupyter.responses.store import chunks_table

            chunks = conn.execute(select(func.count()).select_from(chunks_table())).scalar()
    finally:
        engine.dispose()
    assert chunks < n // 20  # the small chunks were merged


def test_writers_migrating_one_legacy_store_at_once_move_each_row_once(pg_url) -> None:
    """A store of the first format (one SQL row a record) opened by three replicas at once: the migration
    each writer starts moves every row into chunks exactly once (disjoint batches)."""
    from sqlalchemy import insert

    from wolt_jupyter.responses.store import ensure_schema, migrate_legacy, tables

    engine = make_engine(pg_url)
    ensure_schema(engine)
    legacy = tables()[0]
    rows = [
        {"id": f"old-{i}", "time": T0 + i, "deployment": "dep", "variant": "a", "model_name": "m",
         "model_version": "1", "shadow": False, "inputs": '{"x": [1.0]}', "outputs": '{"y": [0]}',
         "latency_ms": 1.0, "status": 200, "error": None}
        for i in range(3_000)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(legacy), rows)
    engines = [make_engine(pg_url) for _ in range(WRITERS)]
    moved: list[int] = []
    try:
        _together([lambda e=e: moved.append(migrate_legacy(e, batch=250)) for e in engines])
    finally:
        for e in [engine, *engines]:
            e.dispose()
    assert sum(moved) == 3_000, moved
    ids = Counter(read_frame("dep", url=pg_url)["id"])
    assert len(ids) == 3_000 and max(ids.values()) == 1


def test_a_spool_shared_with_a_live_process_is_not_taken_for_leftovers(tmp_path) -> None:
    """Two runtimes on one volume (one spool directory): a new writer replays the segments of a process that
    is gone, never those of one that still writes them (it would insert them twice and delete the file the
    other still appends to)."""
    from wolt_jupyter.responses.spool import Spool

    live = Spool(tmp_path)
    live.append(b'{"id": "x"}\n', 1)
    other = Spool(tmp_path)  # its own open file description: the live one's lock holds it off
    assert other.leftovers == []
    other.close()
    other.release()
    live.close()  # the segment stays (never settled); the owner is gone once it lets go of its lock
    live.release()
    later = Spool(tmp_path)
    assert [p.name.split("-replay-")[1] for p in later.leftovers] == [live.current.path.name]
    again = Spool(tmp_path)  # a claimed file is the claimer's while it lives
    assert again.leftovers == []
    for s in (later, again):
        s.close()
        s.release()


@pytest.mark.parametrize("n", [2_000])
def test_rollup_rows_come_in_one_order_whatever_the_batch(n, make_record) -> None:
    """Writers upsert the rollup's rows in key order, so two transactions never lock them in opposite orders."""
    from wolt_jupyter.responses.store import rollup_rows
    from wolt_jupyter.responses.writer import to_row

    rows = [to_row(make_record(i, t=T0 + (n - i) % 17, variant="ba"[i % 2])) for i in range(n)]
    keys = [(r["deployment"], r["second"], r["variant"], r["shadow"], r["lbin"]) for r in rollup_rows(rows)]
    assert keys == sorted(keys)
