"""The stored form: tables, indexes, JSON text payloads and SQLite settings, inspected with plain SQL."""

from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
from sqlalchemy import create_engine, inspect

from wolt_jupyter.responses import ResponseWriter
from wolt_jupyter.responses.store import make_engine

from helpers import read_chunk


def test_tables_indexes_and_compact_chunks(store_url, make_record):
    with ResponseWriter(store_url) as w:
        w.submit(make_record(1, inputs={"x1": [1.0, 2.0]}, outputs={"y": ["a", "b"]}, revision=4))
        w.submit(make_record(1, variant="b", shadow=True, revision=4))
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            assert {"wolt_response_chunks", "wolt_feedback", "wolt_response_retention"} <= set(
                insp.get_table_names()
            )
            indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("wolt_response_chunks")}
            assert ("deployment", "t_min") in indexed and ("deployment", "t_max") in indexed
            chunks = conn.exec_driver_sql(
                "SELECT records, rows, rev_min, rev_max, variants, bytes, data FROM wolt_response_chunks"
            ).all()
    finally:
        engine.dispose()
    assert len(chunks) == 1  # one batch, one chunk
    records, rows, rev_min, rev_max, variants, size, data = chunks[0]
    assert (records, rows, rev_min, rev_max) == (2, 3, 4, 4)  # the live record spreads over 2 rows
    assert json.loads(variants) == ["a", "b"] and size == len(data)
    # typed columns in an Arrow IPC file, read with pyarrow alone
    table = read_chunk(data)
    assert table.schema.field("input.x1").type == pa.float64()
    assert table.schema.field("output.y").type == pa.string()
    assert table.column("input.x1").to_pylist() == [1.0, 2.0, 1.0]
    assert table.column("id").to_pylist() == ["req-1"] * 3
    assert table.column("revision").to_pylist() == [4, 4, 4]


def test_sqlite_uses_wal_and_synchronous_normal(tmp_path, make_record):
    path = tmp_path / "r.db"
    with ResponseWriter(f"sqlite:///{path}") as w:
        w.submit(make_record(1))
    # journal_mode is stored in the file itself
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
    engine.dispose()


def test_a_new_file_vacuums_incrementally_and_a_read_writes_nothing(tmp_path, make_record):
    """auto_vacuum is set on a new file only: on an existing one the pragma changed nothing but wrote the
    header, so every read of the log committed and fsynced (16 ms of a 100 ms read)."""
    import hashlib

    from wolt_jupyter.responses import read_frame

    path = tmp_path / "r.db"
    with ResponseWriter(f"sqlite:///{path}") as w:
        w.submit(make_record(1))
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(read_frame("dep", url=f"sqlite:///{path}")) == 1
    wal = path.with_name(path.name + "-wal")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not wal.exists() or wal.stat().st_size == 0


def test_chunk_blobs_are_fetched_as_stored(store_url, make_record):
    """fetch_blobs (SQLite: incremental blob reads in one read transaction; PostgreSQL: the binary protocol)
    gives the bytes a plain SQL select gives, in the query's order, and only the chunks it selects."""
    from sqlalchemy import select

    from wolt_jupyter.responses.store import chunks_table, fetch_blobs

    with ResponseWriter(store_url, batch_size=10, flush_interval=0.05, maintenance_interval=3600) as w:
        for i in range(45):
            w.submit(make_record(i, t=1_800_000_000.0 + i, inputs={"x1": [float(i)] * (1 + i % 3)}))
            if i % 10 == 9:
                assert w.flush(30)
    c = chunks_table()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            plain = conn.exec_driver_sql("SELECT data FROM wolt_response_chunks ORDER BY t_max DESC").all()
            plain = [bytes(d) for (d,) in plain]
            assert len(plain) >= 5
            newest_first = select(c.c.data).where(c.c.deployment == "dep").order_by(c.c.t_max.desc())
            assert fetch_blobs(conn, newest_first) == plain
            assert all(type(b) is bytes for b in fetch_blobs(conn, newest_first))
            some = newest_first.where(c.c.t_min >= 1_800_000_000.0 + 30)
            assert fetch_blobs(conn, some) == plain[: len(fetch_blobs(conn, some))] != []
            assert fetch_blobs(conn, newest_first.where(c.c.deployment == "nope")) == []
    finally:
        engine.dispose()


def test_bare_postgres_urls_use_psycopg(pg_url, make_record, count_rows):
    bare = pg_url.replace("postgresql+psycopg://", "postgres://")
    with ResponseWriter(bare) as w:
        w.submit(make_record(1))
    assert count_rows(pg_url) == 1


def test_schema_creation_is_safe_to_race(tmp_path) -> None:
    """The writer and a feedback request create the tables at once on a new deployment's first requests:
    without a retry, one of them failed with "table ... already exists" (15 of 80 racers here)."""
    import threading

    from sqlalchemy import create_engine, inspect

    from wolt_jupyter.responses.store import ensure_schema, tables

    failures: list[str] = []
    for trial in range(10):
        url = f"sqlite:///{tmp_path / f'race-{trial}.db'}"
        engines = [create_engine(url) for _ in range(4)]

        def create(engine) -> None:
            try:
                ensure_schema(engine)
            except Exception as exc:  # what the race test counts
                failures.append(repr(exc))

        threads = [threading.Thread(target=create, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(tables()[0].metadata.tables) <= set(inspect(engines[0]).get_table_names())
    assert failures == []


def test_a_new_sqlite_log_has_large_pages_for_its_chunks(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with ResponseWriter(url) as w:
        w.submit_many([])
    engine = make_engine(url)
    try:
        from wolt_jupyter.responses.store import ensure_schema

        ensure_schema(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == 65536
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar_one() == 2  # incremental
    finally:
        engine.dispose()
