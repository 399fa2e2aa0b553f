"""The stored form: tables, indexes, JSON text payloads and SQLite settings, inspected with plain SQL."""

from __future__ import annotations

import json
import sqlite3

from sqlalchemy import create_engine, inspect

from wolt_jupyter.responses import ResponseWriter
from wolt_jupyter.responses.store import make_engine


def test_tables_indexes_and_json_payloads(store_url, make_record):
    with ResponseWriter(store_url) as w:
        w.submit(make_record(1, inputs={"x1": [1.0, 2.0]}, outputs={"y": ["a", "b"]}))
        w.submit(make_record(1, variant="b", shadow=True))
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            assert {"wolt_responses", "wolt_feedback"} <= set(insp.get_table_names())
            indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("wolt_responses")}
            assert ("deployment", "time") in indexed and ("id",) in indexed
            rows = conn.exec_driver_sql(
                "SELECT id, variant, shadow, inputs, outputs FROM wolt_responses ORDER BY seq"
            ).all()
    finally:
        engine.dispose()
    # one row per variant, same request id; payloads are JSON text
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [("req-1", "a", False), ("req-1", "b", True)]
    assert json.loads(rows[0][3]) == {"x1": [1.0, 2.0]}
    assert json.loads(rows[0][4]) == {"y": ["a", "b"]}


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


def test_bare_postgres_urls_use_psycopg(pg_url, make_record, count_rows):
    bare = pg_url.replace("postgresql+psycopg://", "postgres://")
    with ResponseWriter(bare) as w:
        w.submit(make_record(1))
    assert count_rows(pg_url) == 1
