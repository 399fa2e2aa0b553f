"""Keeping the response log bounded: a maximum age and a maximum size per deployment, and what was removed.

Why one cut: both limits reduce to "remove every record older than T" (for the size limit, T is where the
oldest chunks add up to the excess), so only the oldest rows ever go and a read never sees a hole. Whole
chunks before T are deleted; the one chunk that straddles T is rewritten without its old rows. Counts of
what went (records, bytes, by age and by size) are kept in the store itself, so a notebook shows them
whichever process removed them. The per-second rollup the panel reads keeps its own, longer age.

The size limit counts every byte the log takes on disk (:mod:`.footprint`: its database pages, SQLite's WAL
at its budget, the spool), not only the records' own bytes: the WAL alone was 40 times the records once.

Runs in the writer's maintenance thread (:class:`wolt_jupyter.responses.writer.ResponseWriter`), never on
the request path; each pass is a few short transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wolt_jupyter.spec import check_retention
from wolt_jupyter.units import human_age, human_bytes, parse_age, parse_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """Limits for one deployment's log; None means unbounded. ``rollup_max_age`` bounds the panel's rollup."""

    max_age: float | None = None
    max_bytes: int | None = None
    rollup_max_age: float | None = None

    @classmethod
    def of(cls, spec_retention: Mapping[str, Any] | None = None, settings: Any = None) -> Retention:
        """The spec's ``logging.retention`` over the settings' defaults (``response_max_age``/``_bytes``)."""
        if settings is None:
            from wolt_jupyter.config import settings as current

            settings = current()
        doc = dict(spec_retention or {})
        check_retention(doc)
        age = doc.get("max_age", getattr(settings, "response_max_age", None))
        size = doc.get("max_bytes", getattr(settings, "response_max_bytes", None))
        rollup = getattr(settings, "response_rollup_max_age", None)
        max_age = None if age in (None, "", "none", 0) else parse_age(age, "logging.retention.max_age")
        rollup_age = None if rollup in (None, "", "none", 0) else parse_age(rollup, "response_rollup_max_age")
        if max_age is not None and rollup_age is not None:
            rollup_age = max(rollup_age, max_age)  # the panel's series never end before the log does
        return cls(
            max_age=max_age,
            max_bytes=None
            if size in (None, "", "none", 0)
            else parse_bytes(size, "logging.retention.max_bytes"),
            rollup_max_age=rollup_age,
        )

    def describe(self) -> str:
        age = "no age limit" if self.max_age is None else f"max age {human_age(self.max_age)}"
        size = "no size limit" if self.max_bytes is None else f"max {human_bytes(self.max_bytes)}"
        return f"{age}, {size}"


@dataclass
class Removed:
    """What one retention pass removed (records are logged requests x variants)."""

    records: int = 0
    bytes: int = 0
    by_age: int = 0
    by_size: int = 0
    cutoff: float | None = None


def log_size(conn: Any, deployment: str) -> dict[str, Any]:
    """Records, stored bytes, oldest and newest time of a deployment's log (from the chunk index: cheap)."""
    from sqlalchemy import func, inspect, select

    from wolt_jupyter.responses.store import (
        CHUNKS_TABLE,
        RETENTION_TABLE,
        chunks_table,
        retention_table,
        tables,
    )

    present = set(inspect(conn).get_table_names())
    out: dict[str, Any] = {"records": 0, "bytes": 0, "oldest": None, "newest": None}
    if CHUNKS_TABLE in present:
        c = chunks_table()
        n, size, lo, hi = conn.execute(
            select(
                func.sum(c.c.records), func.sum(c.c.bytes), func.min(c.c.t_min), func.max(c.c.t_max)
            ).where(c.c.deployment == deployment)
        ).one()
        out.update(records=int(n or 0), bytes=int(size or 0), oldest=lo, newest=hi)
    legacy = tables()[0]
    if legacy.name in present:
        n, lo, hi, size = conn.execute(
            select(
                func.count(),
                func.min(legacy.c.time),
                func.max(legacy.c.time),
                func.sum(func.length(legacy.c.inputs) + func.length(legacy.c.outputs) + 100),
            ).where(legacy.c.deployment == deployment)
        ).one()
        if n:
            out["records"] += int(n)
            out["bytes"] += int(size or 0)
            out["oldest"] = lo if out["oldest"] is None else min(lo, out["oldest"])
            out["newest"] = hi if out["newest"] is None else max(hi, out["newest"])
    out["removed_records"] = out["removed_bytes"] = out["removed_by_age"] = out["removed_by_size"] = 0
    if RETENTION_TABLE in present:
        r = retention_table()
        row = conn.execute(select(r).where(r.c.deployment == deployment)).first()
        if row is not None:
            out.update(
                removed_records=int(row.removed_rows),
                removed_bytes=int(row.removed_bytes),
                removed_by_age=int(row.by_age),
                removed_by_size=int(row.by_size),
            )
    return out


def enforce(
    engine: Any,
    deployment: str,
    retention: Retention,
    now: float | None = None,
    spool_dir: Any = None,
) -> Removed:
    """Remove what is older than the age limit, then the oldest rows until the log fits the size limit on
    disk (its database share, WAL and ``spool_dir`` included)."""
    now = time.time() if now is None else now
    removed = Removed()
    if retention.max_age is not None:
        _cut(engine, deployment, now - retention.max_age, removed, "age")
    if retention.max_bytes is not None:
        # each round frees the excess in record bytes, then looks again: the file shrinks by what its pages
        # held (a little more or less), and a rewritten chunk keeps some fixed overhead
        for _ in range(8):
            cut = _size_cut(engine, deployment, _excess(engine, deployment, retention.max_bytes, spool_dir))
            if cut is None:
                break
            _cut(engine, deployment, cut, removed, "size")
    if retention.rollup_max_age is not None:
        _cut_rollup(engine, deployment, now - retention.rollup_max_age)
    if removed.records:
        _count(engine, deployment, removed, now)
        from wolt_jupyter.responses.store import release_free_pages

        release_free_pages(engine)
        log.info(
            "response log of %s: retention removed %d record(s) (%s) older than %s",
            deployment,
            removed.records,
            human_bytes(removed.bytes),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(removed.cutoff or now)),
        )
    return removed


def _excess(engine: Any, deployment: str, max_bytes: int, spool_dir: Any) -> int:
    """Bytes the log takes on disk beyond ``max_bytes`` (pages retention already freed not counted)."""
    from wolt_jupyter.responses.footprint import footprint

    with engine.connect() as conn:
        return footprint(conn, deployment, spool_dir).live_total - max_bytes


def _size_cut(engine: Any, deployment: str, excess: int) -> float | None:
    """The time before which records must go to free ``excess`` bytes: past the oldest chunks that make it
    up, and inside the last one in proportion to the bytes still to free."""
    import math

    from sqlalchemy import select

    from wolt_jupyter.responses.columnar import decode
    from wolt_jupyter.responses.store import chunks_table

    if excess <= 0:
        return None
    c = chunks_table()
    with engine.connect() as conn:
        index = conn.execute(
            select(c.c.chunk, c.c.t_max, c.c.bytes)
            .where(c.c.deployment == deployment)
            .order_by(c.c.t_max, c.c.chunk)
        ).all()
        for chunk, t_max, size in index:
            if excess >= size:
                excess -= size
                if excess == 0:
                    return math.nextafter(t_max, math.inf)
                continue
            (data,) = conn.execute(select(c.c.data).where(c.c.chunk == chunk)).one()
            table = decode(data, ["time", "_row"])
            times = sorted(
                t for t, r in zip(table["time"].to_pylist(), table["_row"].to_pylist(), strict=True) if r == 0
            )
            # a rewritten chunk keeps some fixed overhead: free a little more than the plain share
            k = min(len(times) - 1, math.ceil(len(times) * min(1.0, excess / size * 1.1)))
            return math.nextafter(times[k - 1], math.inf) if k > 0 else times[0]
    if not index:
        return None
    log.warning(
        "response log of %s: logging.retention.max_bytes leaves no room for records: the database's own "
        "pages, the WAL and the spool take %s more than it; every record goes",
        deployment,
        human_bytes(excess),
    )
    return math.nextafter(index[-1].t_max, math.inf)


def _cut(engine: Any, deployment: str, cutoff: float, removed: Removed, why: str) -> None:
    """Delete every record with ``time < cutoff``: whole chunks, and the rows of the chunk across it."""
    import pyarrow.compute as pc
    from sqlalchemy import delete, select

    from wolt_jupyter.responses.columnar import decode
    from wolt_jupyter.responses.store import chunk_of, chunks_table, tables

    c = chunks_table()
    n = size = 0
    with engine.begin() as conn:
        old = conn.execute(
            select(c.c.chunk, c.c.records, c.c.bytes)
            .where(c.c.deployment == deployment, c.c.t_max < cutoff)
            .with_for_update()  # PostgreSQL: two replicas' passes never count the same chunk twice
        ).all()
        if old:
            ids = [r.chunk for r in old]
            for start in range(0, len(ids), 500):
                conn.execute(delete(c).where(c.c.chunk.in_(ids[start : start + 500])))
            n += sum(r.records for r in old)
            size += sum(r.bytes for r in old)
        across = conn.execute(
            select(c.c.chunk, c.c.records, c.c.bytes, c.c.data)
            .where(c.c.deployment == deployment, c.c.t_min < cutoff, c.c.t_max >= cutoff)
            .with_for_update()
        ).all()
        for chunk in across:
            table = decode(chunk.data)
            kept = table.filter(pc.greater_equal(table["time"], cutoff))
            conn.execute(delete(c).where(c.c.chunk == chunk.chunk))
            row = chunk_of(deployment, kept)
            conn.execute(c.insert(), [row])
            n += chunk.records - row["records"]
            size += max(0, chunk.bytes - row["bytes"])
        legacy = tables()[0]
        from sqlalchemy import inspect

        if legacy.name in inspect(conn).get_table_names():
            gone = conn.execute(
                delete(legacy).where(legacy.c.deployment == deployment, legacy.c.time < cutoff)
            ).rowcount
            n += max(0, gone or 0)
    removed.records += n
    removed.bytes += size
    if why == "age":
        removed.by_age += n
    else:
        removed.by_size += n
    if n:
        removed.cutoff = cutoff if removed.cutoff is None else max(removed.cutoff, cutoff)


def _cut_rollup(engine: Any, deployment: str, cutoff: float) -> None:
    from sqlalchemy import delete

    from wolt_jupyter.responses.store import rollup_table

    r = rollup_table()
    with engine.begin() as conn:
        conn.execute(delete(r).where(r.c.deployment == deployment, r.c.second < int(cutoff)))


def _count(engine: Any, deployment: str, removed: Removed, now: float) -> None:
    """Add a pass's removals to the deployment's running totals (an upsert both dialects spell alike)."""
    from wolt_jupyter.responses.store import retention_table

    r = retention_table()
    insert: Callable[..., Any]  # either dialect's: both spell the upsert the same way
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(r).values(
        deployment=deployment,
        removed_rows=removed.records,
        removed_bytes=removed.bytes,
        by_age=removed.by_age,
        by_size=removed.by_size,
        cutoff=removed.cutoff,
        last_run=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[r.c.deployment],
        set_={
            "removed_rows": r.c.removed_rows + stmt.excluded.removed_rows,
            "removed_bytes": r.c.removed_bytes + stmt.excluded.removed_bytes,
            "by_age": r.c.by_age + stmt.excluded.by_age,
            "by_size": r.c.by_size + stmt.excluded.by_size,
            "cutoff": stmt.excluded.cutoff,
            "last_run": stmt.excluded.last_run,
        },
    )
    with engine.begin() as conn:
        conn.execute(stmt)
