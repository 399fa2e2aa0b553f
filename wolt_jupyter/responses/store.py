"""Where the response log lives: URLs, engines and the two tables, through SQLAlchemy Core.

The same code serves SQLite (one file per deployment, the default) and PostgreSQL (one shared database for
every deployment, selected by URL). SQLAlchemy is imported only when a store is actually opened, so importing
the package stays cheap.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument, ResponseStoreError
from wolt_jupyter.responses._json import from_json

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Engine, Table

RESPONSES_TABLE = "wolt_responses"  # the first format: one row a record, JSON payloads (still read; migrated)
CHUNKS_TABLE = "wolt_response_chunks"  # the current format: Parquet blobs of many records, indexed by time
RETENTION_TABLE = "wolt_response_retention"  # what retention removed, per deployment
ROLLUP_TABLE = "wolt_response_rollup"
FEEDBACK_TABLE = "wolt_feedback"

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def default_store_url(deployment: str, home: Path) -> str:
    """``sqlite:///<home>/responses/<deployment>.db``: one file per deployment under the state dir.

    Characters that are unsafe in a file name are replaced by ``_`` so any deployment name maps to one file.
    """
    if not deployment:
        raise InvalidArgument("deployment name is empty; pass the name the model was deployed under")
    name = _UNSAFE_FILENAME.sub("_", deployment)
    return f"sqlite:///{Path(home).expanduser().resolve() / 'responses' / f'{name}.db'}"


def store_url(deployment: str, settings: Any = None) -> str:
    """The one place that picks the store of ``deployment``'s response log, for every reader and the deploy:
    the store its deployment record names (what its runtimes write to, a cluster's PostgreSQL included; also
    after an undeploy), else the settings' ``response_store_url``, else :func:`default_store_url`."""
    if settings is None:
        from wolt_jupyter.config import settings as current

        settings = current()
    from wolt_jupyter.revisions import RevisionStore

    try:
        recorded = RevisionStore(settings.home).response_store(deployment)
    except InvalidArgument:  # not a deployment name (a store-level read of any name): no record
        recorded = None
    return recorded or configured_store_url(deployment, settings)


def configured_store_url(deployment: str, settings: Any) -> str:
    """The store a new deployment of ``deployment`` writes to (and its record names): the settings'
    ``response_store_url``, else :func:`default_store_url`."""
    return settings.response_store_url or default_store_url(deployment, settings.home)


def normalize_url(url: str) -> Any:
    """Parse a store URL; bare ``postgresql://``/``postgres://`` mean psycopg 3, the driver we depend on."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        from wolt_jupyter.config import mask_url

        raise InvalidArgument(
            f"bad response store URL {mask_url(str(url))!r} ({mask_url(str(exc))}); use sqlite:///path/file.db or "
            "postgresql+psycopg://user:password@host:5432/db"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(url: Any) -> Path | None:
    """The file behind a SQLite URL, or None for another backend or an in-memory database."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def make_engine(url: str, options: dict[str, Any] | None = None, *, create_dir: bool = True) -> Engine:
    """An engine for the store; SQLite connections get WAL and ``synchronous=NORMAL``.

    WAL lets the notebook read while the server writes; NORMAL skips an fsync per commit, which costs at most
    the last few batches on a power cut, never corruption.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import NoSuchModuleError

    parsed = normalize_url(url)
    opts: dict[str, Any] = {}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        path = sqlite_path(parsed)
        if path is not None and create_dir:
            from wolt_jupyter.private import private_file

            private_file(path)  # every input and output: 0600 (SQLite gives -wal/-shm the same mode)
        opts["connect_args"] = {"timeout": 30.0}
    elif parsed.get_backend_name() == "postgresql":
        # no pool_pre_ping (a round trip per batch): a dropped connection fails the batch, SQLAlchemy discards
        # it and the retry reconnects. An unreachable host must fail and be retried, not hang the writer.
        opts["connect_args"] = {"connect_timeout": 10}
    for key, value in (options or {}).items():
        if key == "connect_args":
            opts["connect_args"] = {**opts.get("connect_args", {}), **value}
        else:
            opts[key] = value
    try:
        engine = create_engine(parsed, **opts)
    except (NoSuchModuleError, ImportError) as exc:
        hint = " (pip install 'psycopg[binary]')" if parsed.get_backend_name() == "postgresql" else ""
        raise InvalidArgument(f"no database driver for {parsed.drivername!r}{hint}: {exc}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


WAL_BYTES = 4 * 1024 * 1024  # SQLite's write-ahead log: a checkpoint every this many bytes, and its size after


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        # only on a new file: on an existing one these change nothing but still write the header (16 ms and
        # an fsync a read). 64 KiB pages first (the next pragma fixes the page size): a chunk is a blob of a few
        # MB, and writing it through 4 KiB overflow pages, then again at the WAL checkpoint, cost 4x the CPU
        # (measured: 17 vs 4 ms per 4 MB chunk; ~80 us per 100-row request at full rate); auto_vacuum returns
        # the space retention frees to the OS (an existing file reuses it)
        if cur.execute("PRAGMA page_count").fetchone()[0] == 0:
            cur.execute("PRAGMA page_size=65536")
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        # the WAL bounded in bytes, not pages: the default 1,000-page checkpoint is 64 MB with 64 KiB pages,
        # and the file kept that size (65 MB beside a 1.6 MB log filled a small disk in 3 s). After a
        # checkpoint the WAL is cut back to the limit, not to 0: writing from its start again needs no new
        # space, so retention can still delete on a full disk
        page_size = cur.execute("PRAGMA page_size").fetchone()[0]
        cur.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_BYTES // page_size)}")
        cur.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")
    finally:
        cur.close()


def release_free_pages(engine: Engine) -> None:
    """Give the pages retention and compaction freed back to the OS (SQLite files made with auto_vacuum).

    Through ``executescript``: ``execute`` steps the pragma once, and each step frees one page (a pass that
    freed 5 MB gave back 64 KB; the file kept its high-water mark). The file shrinks at the next checkpoint."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        sqlite_conn = conn.connection.driver_connection
        assert sqlite_conn is not None  # a checked-out connection has its DBAPI connection
        sqlite_conn.executescript("PRAGMA incremental_vacuum;")


@lru_cache(maxsize=1)
def tables() -> tuple[Table, Table]:
    """The responses and feedback tables (built once, on first use)."""
    from sqlalchemy import (
        BigInteger,
        Boolean,
        Column,
        Double,
        Index,
        Integer,
        LargeBinary,
        MetaData,
        String,
        Table,
        Text,
    )

    meta = MetaData()
    responses = Table(
        RESPONSES_TABLE,
        meta,
        # a surrogate key keeps insertion order and lets SQLite use its rowid
        Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("id", String(255), nullable=False),
        Column("time", Double, nullable=False),
        Column("deployment", String(255), nullable=False),
        Column("variant", String(255), nullable=False),
        Column("model_name", String(255), nullable=False),
        Column("model_version", String(255), nullable=False),
        Column("shadow", Boolean, nullable=False),
        Column("inputs", Text, nullable=False),  # the first format kept payloads as JSON text
        Column("outputs", Text, nullable=False),
        Column("latency_ms", Double, nullable=False),
        Column("status", Integer, nullable=False),
        Column("error", Text, nullable=True),
        Index(f"ix_{RESPONSES_TABLE}_deployment_time", "deployment", "time"),
        Index(f"ix_{RESPONSES_TABLE}_id", "id"),
    )
    feedback = Table(
        FEEDBACK_TABLE,
        meta,
        Column("id", String(255), primary_key=True),
        Column("time", Double, nullable=False),
        Column("ground_truth", Text, nullable=False),
    )
    Table(
        CHUNKS_TABLE,
        meta,
        # one row per written batch (or per compacted run of them): the records as one Parquet blob
        # (wolt_jupyter.responses.columnar), with what reads and retention prune on
        Column("chunk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("deployment", String(255), nullable=False),
        Column("t_min", Double, nullable=False),
        Column("t_max", Double, nullable=False),
        Column("records", Integer, nullable=False),  # logged requests x variants
        Column("rows", Integer, nullable=False),  # spread rows (one per input row)
        Column("rev_min", Integer, nullable=True),
        Column("rev_max", Integer, nullable=True),
        Column("variants", Text, nullable=False),  # JSON list of the variant names inside
        Column("bytes", BigInteger, nullable=False),
        Column("data", LargeBinary, nullable=False),
        Index(f"ix_{CHUNKS_TABLE}_deployment_t_min", "deployment", "t_min"),
        Index(f"ix_{CHUNKS_TABLE}_deployment_t_max", "deployment", "t_max"),
    )
    Table(
        RETENTION_TABLE,
        meta,
        Column("deployment", String(255), primary_key=True),
        Column("removed_rows", BigInteger, nullable=False),  # logged records removed so far
        Column("removed_bytes", BigInteger, nullable=False),
        Column("by_age", BigInteger, nullable=False),
        Column("by_size", BigInteger, nullable=False),
        Column("cutoff", Double, nullable=True),  # rows older than this were removed by the last pass
        Column("last_run", Double, nullable=True),
    )
    Table(
        ROLLUP_TABLE,
        meta,
        # per-second counts by latency bin, kept by the writer, so monitoring reads O(window) rows, not O(log)
        Column("deployment", String(255), primary_key=True),
        Column("second", BigInteger, primary_key=True),
        Column("variant", String(255), primary_key=True),
        Column("shadow", Boolean, primary_key=True),
        Column("lbin", Integer, primary_key=True),
        Column("n", BigInteger, nullable=False),
        Column("errors", BigInteger, nullable=False),
    )
    return responses, feedback


def chunks_table() -> Table:
    """The compact log: Parquet blobs of records, one index row each (time range, revisions, variants)."""
    return tables()[0].metadata.tables[CHUNKS_TABLE]


def retention_table() -> Table:
    """Per deployment: records and bytes retention removed, by age and by size."""
    return tables()[0].metadata.tables[RETENTION_TABLE]


def rollup_table() -> Table:
    """Per-second request counts by (variant, shadow, log-latency bin): what the monitoring panel reads."""
    return tables()[0].metadata.tables[ROLLUP_TABLE]


# log-latency bins: LAT_BINS_PER_E per factor of e (about 13% wide); quantiles interpolate inside a bin
LAT_BINS_PER_E = 8
MIN_LATENCY_MS = 1e-3


def latency_bin(latency_ms: float) -> int:
    return math.floor(math.log(max(latency_ms, MIN_LATENCY_MS)) * LAT_BINS_PER_E)


def rollup_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate a batch of response rows into rollup rows (one per second, variant, shadow, latency bin)."""
    counts: dict[tuple[str, int, str, bool, int], list[int]] = {}
    for r in rows:
        key = (
            r["deployment"],
            math.floor(r["time"]),
            r["variant"],
            bool(r["shadow"]),
            latency_bin(r["latency_ms"]),
        )
        slot = counts.get(key)
        if slot is None:
            slot = counts[key] = [0, 0]
        slot[0] += 1
        slot[1] += r["status"] >= 500
    # in key order: writers of one deployment (replicas) upserting the same rows lock them in one order,
    # so two transactions never wait on each other in a cycle (a deadlock PostgreSQL would abort)
    return [
        {"deployment": d, "second": sec, "variant": v, "shadow": sh, "lbin": lb, "n": n, "errors": e}
        for (d, sec, v, sh, lb), (n, e) in sorted(counts.items())
    ]


def add_to_rollup(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Upsert a batch's rollup rows (adding to counts already there), in the caller's transaction."""
    if not rows:
        return
    table = rollup_table()
    insert: Callable[..., Any]  # either dialect's: both spell the upsert the same way
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key.columns],
        set_={"n": table.c.n + stmt.excluded.n, "errors": table.c.errors + stmt.excluded.errors},
    )
    conn.execute(stmt, rows)


def chunk_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chunk table rows (one per deployment) holding ``rows`` (the writer's dicts), encoded."""
    from wolt_jupyter.responses.columnar import spread

    by_deployment: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_deployment.setdefault(r["deployment"], []).append(r)
    out = []
    for deployment, group in by_deployment.items():
        group.sort(key=lambda r: r["time"])  # stable: insertion order within one time
        out.append(chunk_of(deployment, spread(group, shared=True), quick=True))
    return out


def chunk_of(deployment: str, table: Any, quick: bool = False) -> dict[str, Any]:
    """The index row of a spread Arrow table (already in time order) and its bytes (``quick``: the writer's
    cheap form, see :func:`~wolt_jupyter.responses.columnar.encode`)."""
    import pyarrow.compute as pc

    from wolt_jupyter.responses.columnar import encode

    data = encode(table, quick=quick)
    revs = pc.min_max(table["revision"]).as_py()
    times = table["time"]
    return {
        "deployment": deployment,
        "t_min": float(pc.min(times).as_py()),
        "t_max": float(pc.max(times).as_py()),
        "records": int(pc.sum(pc.equal(table["_row"], 0)).as_py() or 0),
        "rows": table.num_rows,
        "rev_min": revs["min"],
        "rev_max": revs["max"],
        "variants": json.dumps(sorted(set(pc.unique(table["variant"]).to_pylist()))),
        "bytes": len(data),
        "data": data,
    }


def fetch_blobs(conn: Any, query: Any) -> list[bytes]:
    """The chunk blobs ``query`` (a select of ``chunks_table().c.data``, filtered and ordered) names, as bytes,
    by each database's fastest way: SQLite's incremental blob reads (a row fetch of a multi-MB blob walks its
    overflow pages 5x slower), PostgreSQL's binary protocol (the default text one sends ``bytea`` as hex: twice
    the bytes, and decoding it cost 4x the fetch)."""
    name = conn.dialect.name
    raw = conn.connection.driver_connection
    if name == "sqlite" and hasattr(raw, "blobopen"):  # Python >= 3.11
        return _sqlite_blobs(conn, raw, query)
    if name == "postgresql":
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        with raw.cursor(binary=True) as cur:
            cur.execute(str(compiled), compiled.params)
            return [row[0] for row in cur.fetchall()]
    return [row[0] for row in conn.execute(query)]


def _sqlite_blobs(conn: Any, raw: Any, query: Any) -> list[bytes]:
    """The chunk ids first, then each blob read whole; one read transaction around both, so a compaction or
    retention pass committing in between cannot take a chunk away (WAL: the snapshot stays readable)."""
    c = chunks_table()
    own = not raw.in_transaction
    if own:
        raw.execute("BEGIN")
    try:
        ids = [row[0] for row in conn.execute(query.with_only_columns(c.c.chunk))]
        blobs = []
        for chunk in ids:
            with raw.blobopen(CHUNKS_TABLE, "data", chunk, readonly=True) as blob:
                blobs.append(blob.read())
        return blobs
    finally:
        if own:
            raw.execute("COMMIT")


def insert_rows(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Insert response rows (as one compact chunk) and add them to the rollup, in the caller's transaction
    (together or not at all)."""
    conn.execute(chunks_table().insert(), chunk_rows(rows))
    add_to_rollup(conn, rollup_rows(rows))


COMPACT_ROWS = 50_000  # spread rows a compacted chunk grows to (a few MB of Parquet for 20 numbers a row)
SMALL_CHUNK_ROWS = 5_000  # chunks below this are merged with their neighbours once settled
SETTLE_S = 10.0  # chunks newer than this may still get company from the writer: not compacted yet


def compact(engine: Engine, deployment: str, now: float | None = None) -> int:
    """Merge runs of small settled chunks into larger ones (fewer, better-compressed blobs); chunks merged.

    A quiet deployment writes a chunk per flush with a handful of records; Parquet's per-file overhead then
    dominates. Merging keeps bytes/row at the batch rate's level whatever the traffic."""
    import time as _time

    from sqlalchemy import delete, select

    from wolt_jupyter.responses.columnar import JSON_MARK, concat, decode

    now = _time.time() if now is None else now
    c = chunks_table()
    with engine.connect() as conn:
        small = conn.execute(
            select(c.c.chunk, c.c.rows)
            .where(c.c.deployment == deployment, c.c.rows < SMALL_CHUNK_ROWS, c.c.t_max < now - SETTLE_S)
            .order_by(c.c.t_min, c.c.chunk)
        ).all()
    runs: list[list[int]] = []
    size = 0
    for chunk, rows in small:
        if not runs or size + rows > COMPACT_ROWS:
            runs.append([])
            size = 0
        runs[-1].append(chunk)
        size += rows
    merged = 0
    for run in runs:
        if len(run) < 2:
            continue
        with (
            engine.connect() as conn
        ):  # decode and encode outside the write transaction: the writer waits less
            datas = conn.execute(
                select(c.c.data).where(c.c.chunk.in_(run)).order_by(c.c.t_min, c.c.chunk)
            ).all()
        if len(datas) != len(run):  # retention or another compactor got there first
            continue
        import numpy as np

        parts = [decode(d) for (d,) in datas]
        json_cols = {f.name for p in parts for f in p.schema if f.metadata and JSON_MARK in f.metadata}
        table = concat(parts, json_cols)
        table = table.take(np.argsort(table["time"].to_numpy(), kind="stable"))
        row = chunk_of(deployment, table)
        with engine.begin() as conn:
            # FOR UPDATE (PostgreSQL): a second replica compacting the same run waits, then finds it gone
            still = conn.execute(select(c.c.chunk).where(c.c.chunk.in_(run)).with_for_update()).all()
            if len(still) != len(run):
                continue
            conn.execute(delete(c).where(c.c.chunk.in_(run)))
            conn.execute(c.insert(), [row])
        merged += len(run)
    return merged


def migrate_legacy(engine: Engine, batch: int = 20_000) -> int:
    """Move rows of the first format (JSON text per row) into chunks, oldest first; records moved.

    Runs once per store, in the background, a batch per transaction: a store written by an older version
    reads throughout (the reader takes both forms) and ends up in the compact one."""
    from sqlalchemy import delete, inspect, select

    from wolt_jupyter.responses.columnar import spread

    t = tables()[0]
    with engine.connect() as conn:
        if t.name not in inspect(conn).get_table_names():
            return 0
    moved = 0
    while True:
        with engine.begin() as conn:
            query = select(t).order_by(t.c.seq).limit(batch)
            if conn.dialect.name == "postgresql":  # replicas migrating at once take disjoint batches
                query = query.with_for_update(skip_locked=True)
            rows = [dict(r._mapping) for r in conn.execute(query)]
            if not rows:
                return moved
            seqs = [r.pop("seq") for r in rows]
            for r in rows:
                r["inputs"], r["outputs"] = from_json(r["inputs"]), from_json(r["outputs"])
                r.setdefault("revision", None)
            by_deployment: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_deployment.setdefault(r["deployment"], []).append(r)
            for deployment, group in by_deployment.items():
                group.sort(key=lambda r: r["time"])
                conn.execute(chunks_table().insert(), [chunk_of(deployment, spread(group))])
            # exactly the rows moved: another writer may hold some in between
            conn.execute(delete(t).where(t.c.seq.in_(seqs)))
        moved += len(rows)


def ensure_schema(engine: Engine) -> None:
    """Create the tables and their indexes if missing (idempotent; safe to race: the loser retries)."""
    from sqlalchemy.exc import DatabaseError

    responses, _ = tables()
    # each lost race means another process or thread (the writer, a feedback request) created a table between
    # the check and the CREATE: the next pass sees it and creates only what is still missing. Every loss is
    # someone's progress, so one pass per table (and one more) always ends it, however many race.
    passes = len(responses.metadata.tables) + 1
    for attempt in range(passes):
        try:
            responses.metadata.create_all(engine, checkfirst=True)
            return
        except DatabaseError:
            if attempt == passes - 1:
                raise


class translate_errors:
    """Context manager: a driver error becomes one readable :class:`ResponseStoreError` line."""

    def __init__(self, url: str, action: str) -> None:
        self.url, self.action = url, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> None:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if exc is not None and isinstance(exc, (DBAPIError, OperationalError)):
            from wolt_jupyter.config import mask_url

            shown = mask_url(self.url)
            first = (str(getattr(exc, "orig", exc)) or type(exc).__name__).strip().splitlines()[0]
            raise ResponseStoreError(f"cannot {self.action} response store {shown}: {first}") from exc
