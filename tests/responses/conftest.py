"""Real stores for the response-log tests: SQLite files in tmp_path and a private PostgreSQL server."""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wolt_jupyter.responses import ResponseRecord

# tests/pg_server.py is shared with other suites; load it by path so no sys.path or package layout is assumed
_spec = importlib.util.spec_from_file_location(
    "wolt_tests_pg_server", Path(__file__).parents[1] / "pg_server.py"
)
assert _spec and _spec.loader
pg_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg_server)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One PostgreSQL cluster for the session. Missing binaries FAIL the tests: CI must install them."""
    try:
        with pg_server.postgres_server(tmp_path_factory.mktemp("postgres")) as url:
            yield url
    except pg_server.PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL test server unavailable: {exc}", pytrace=False)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Any]:
    """A cluster of the test's own, which it may stop and start (an outage)."""
    try:
        with pg_server.running_postgres(tmp_path) as server:
            yield server
    except pg_server.PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL test server unavailable: {exc}", pytrace=False)


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """A fresh, empty database per test, so tests never see each other's tables."""
    return pg_server.new_database(pg_server_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'responses' / 'store.db'}"
    return request.getfixturevalue("pg_url")


def make_record(
    i: int | str, *, variant: str = "a", shadow: bool = False, t: float | None = None, **kw: Any
) -> ResponseRecord:
    fields: dict[str, Any] = {
        "id": str(i) if isinstance(i, str) else f"req-{i}",
        "time": time.time() if t is None else t,
        "deployment": "dep",
        "variant": variant,
        "model_name": "iris",
        "model_version": "2" if shadow else "1",
        "shadow": shadow,
        "inputs": {"x1": [float(i) if isinstance(i, int) else 0.0], "x2": ["s"]},
        "outputs": {"y": [1]},
        "latency_ms": 1.5,
        "status": 200,
        "error": None,
    }
    fields.update(kw)
    return ResponseRecord(**fields)


def count_rows(url: str, shadow: bool | None = None) -> int:
    """Count logged records with plain SQL and pyarrow, independently of the code under test: rows of the
    first format plus, in each Parquet chunk, the rows that start a record (``_row == 0``)."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    total = 0
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            if "wolt_responses" in names:
                where = "" if shadow is None else ("WHERE shadow" if shadow else "WHERE NOT shadow")
                total += conn.exec_driver_sql(f"SELECT COUNT(*) FROM wolt_responses {where}").scalar_one()
            if "wolt_response_chunks" in names:
                from helpers import (
                    read_chunk,  # here: subprocesses import this module without tests/ on the path
                )

                for (data,) in conn.exec_driver_sql("SELECT data FROM wolt_response_chunks"):
                    t = read_chunk(data, ["_row", "shadow"]).to_pydict()
                    total += sum(
                        1
                        for r, s in zip(t["_row"], t["shadow"], strict=True)
                        if r == 0 and (shadow is None or s == shadow)
                    )
    finally:
        engine.dispose()
    return total


@contextlib.contextmanager
def writes_blocked(url: str) -> Iterator[Callable[[], None]]:
    """Hold a lock that stalls every insert into the log (a slow database); yields a release function."""
    from sqlalchemy import create_engine

    released = threading.Event()
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")

        def release() -> None:
            if not released.is_set():
                released.set()
                conn.execute("COMMIT")
                conn.close()

    else:
        engine = create_engine(url)
        sa_conn = engine.connect()
        tx = sa_conn.begin()
        sa_conn.exec_driver_sql("LOCK TABLE wolt_response_chunks IN ACCESS EXCLUSIVE MODE")

        def release() -> None:
            if not released.is_set():
                released.set()
                tx.commit()
                sa_conn.close()
                engine.dispose()

    try:
        yield release
    finally:
        release()


# helpers as fixtures: test modules then need no import of conftest (fragile without __init__.py files)
@pytest.fixture(name="make_record")
def _make_record_fixture() -> Callable[..., ResponseRecord]:
    return make_record


@pytest.fixture(name="count_rows")
def _count_rows_fixture() -> Callable[..., int]:
    return count_rows


@pytest.fixture(name="writes_blocked")
def _writes_blocked_fixture() -> Callable[[str], contextlib.AbstractContextManager[Callable[[], None]]]:
    return writes_blocked
