"""Every byte a deployment's response log takes on disk: the database, SQLite's ``-wal`` and ``-shm`` files,
and the spool. What ``logging.retention.max_bytes`` bounds and what ``--info`` and the card show.

Why not the chunk bytes alone: they were all the log counted, while SQLite's write-ahead log next to a 1.6 MB
log was 65 MB (64 KiB pages x the default 1,000-page checkpoint). A SQLite file holding several deployments'
logs is shared out in proportion to their chunk bytes. PostgreSQL's files are the server's: there the chunk
bytes stand for the database, and the spool is counted as everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Footprint:
    """Bytes on disk of one deployment's log, by file. ``live_database`` and ``settled_wal`` are the sizes
    once SQLite has checkpointed and vacuumed: the pages retention freed are left out, so a pass sees at once
    what it removed, and the WAL counts as large as it gets (its budget), not as large as it is now."""

    records: int = 0  # the deployment's chunk bytes (the Parquet blobs)
    database: int = 0
    live_database: int = 0
    wal: int = 0
    settled_wal: int = 0
    shm: int = 0
    spool: int = 0

    @property
    def total(self) -> int:
        """What the log takes on disk now."""
        return self.database + self.wal + self.shm + self.spool

    @property
    def live_total(self) -> int:
        """What it takes once freed pages are given back and the WAL is checkpointed: what retention compares
        with ``max_bytes``."""
        return self.live_database + self.settled_wal + self.shm + self.spool

    def parts(self) -> str:
        """``database 1.2 MB, WAL 4.1 MB, spool 0 B``: the card's breakdown."""
        from wolt_jupyter.units import human_bytes

        named = [("database", self.database), ("WAL", self.wal + self.shm), ("spool", self.spool)]
        return ", ".join(f"{name} {human_bytes(n)}" for name, n in named)


def disk_bytes(path: Path) -> int:
    """Bytes a file takes on disk (allocated blocks; its size where the file system does not say), 0 if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    blocks = getattr(st, "st_blocks", None)
    return st.st_size if blocks is None else blocks * 512


def spool_bytes(directory: Path | None) -> int:
    """Bytes of the spool's segment files (records not yet settled in the database)."""
    if directory is None:
        return 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    return sum(disk_bytes(Path(e.path)) for e in entries if e.is_file(follow_symlinks=False))


def footprint(conn: Any, deployment: str, spool_dir: Path | None = None) -> Footprint:
    """The deployment's :class:`Footprint`, read on an open connection (index sums and pragmas: cheap)."""
    from sqlalchemy import func, inspect, select

    from wolt_jupyter.responses.store import CHUNKS_TABLE, WAL_BYTES, chunks_table, sqlite_path

    by_deployment: dict[str, int] = {}
    if CHUNKS_TABLE in inspect(conn).get_table_names():
        c = chunks_table()
        rows = conn.execute(select(c.c.deployment, func.sum(c.c.bytes)).group_by(c.c.deployment))
        by_deployment = {d: int(n or 0) for d, n in rows}
    out = Footprint(records=by_deployment.get(deployment, 0), spool=spool_bytes(spool_dir))
    path = sqlite_path(conn.engine.url) if conn.dialect.name == "sqlite" else None
    if path is None:  # PostgreSQL: the server's files are not ours to count; the log's bytes stand for them
        out.database = out.live_database = out.records
        return out
    # the WAL holds copies of pages until a checkpoint; then it is cut back to its budget (store.WAL_BYTES)
    others = sum(n for d, n in by_deployment.items() if d != deployment)
    share = 1.0 if not others else out.records / (out.records + others)
    cur = conn.connection.driver_connection
    page_size = cur.execute("PRAGMA page_size").fetchone()[0]
    live_pages = (
        cur.execute("PRAGMA page_count").fetchone()[0] - cur.execute("PRAGMA freelist_count").fetchone()[0]
    )
    for suffix, name in (("", "database"), ("-wal", "wal"), ("-shm", "shm")):
        setattr(out, name, round(disk_bytes(path.with_name(path.name + suffix)) * share))
    out.live_database = round(live_pages * page_size * share)
    out.settled_wal = round(WAL_BYTES * share)
    return out
