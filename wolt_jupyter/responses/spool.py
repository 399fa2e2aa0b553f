"""The spool: response-log records made durable in the OS before their response is sent.

Why: the database writer batches in memory, so a ``kill -9`` used to lose the last fraction of a second of
acknowledged requests. Now the runtime appends each micro-batch's records to a segment file with one
``write`` (O_APPEND) before it answers; once ``write`` returns the bytes are in the kernel's page cache and
survive the process. The writer thread ``fsync``s once a second (a power cut loses at most that interval) and
inserts the same records from memory; a segment whose records are all in the database is deleted. Segments
left behind by a process that died, or holding records the writer could not insert, are replayed into the
database idempotently: a row already there (same id, variant, shadow flag and time) is not inserted twice.

Segment files, ``<instance>-<seq>.spool`` in a private (0700) directory, hold one record after another: a
JSON line, then, when the line says ``"wolt.bytes": N``, N raw bytes: the numeric numpy arrays of its
payloads, each replaced in the line by ``{"wolt.ndarray": dtype, "shape": [..], "nbytes": n}``. Printing 2,000
floats as JSON cost ~50 µs a request on the serving thread; copying their bytes costs a few. Files of the
older form (``.jsonl``, JSON lines only) read the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from wolt_jupyter.responses._json import json_default, to_json

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
FSYNC_INTERVAL_S = 1.0  # what a power cut can lose; a process crash loses nothing (negative: never fsync)
SUFFIX = ".spool"
SUFFIXES = (SUFFIX, ".jsonl")  # .jsonl: segments written before raw array bytes (replayed all the same)


@dataclass(eq=False)
class Segment:
    path: Path
    fd: int
    size: int = 0
    appended: int = 0  # records written to the file
    settled: int = 0  # records in the database (or dropped as unstorable): nothing left to replay for them
    pending: int = 0  # records taken for the memory queue, not yet settled or deferred
    dirty: bool = False  # some record was not queued for the database: replay the file
    closed: bool = False

    @property
    def done(self) -> bool:
        return self.closed and not self.dirty and self.settled >= self.appended


class Spool:
    """Segment files of one runtime process under ``directory``; safe to append from any thread."""

    def __init__(
        self, directory: Path, segment_bytes: int = SEGMENT_BYTES, fsync_interval: float | None = None
    ) -> None:
        from wolt_jupyter.private import private_dir

        self.dir = private_dir(Path(directory))
        self.segment_bytes = segment_bytes
        # an fsync lets a write to the page under writeback stall the event loop: once a second is the trade-off
        if fsync_interval is None:
            fsync_interval = float(os.environ.get("WOLT_SPOOL_FSYNC_S", FSYNC_INTERVAL_S))
        self.fsync_interval = fsync_interval
        self._synced_at = time.monotonic()
        self.instance = f"{_instance_ms():013x}-{os.getpid()}"
        self._lock = threading.Lock()
        self._seq = 0
        self._unsynced = False
        # held while this process lives: a process sharing the directory (replicas on one volume) never takes
        # this one's segments for leftovers; the OS releases it if the process dies
        self._owner_fd = _hold(self.dir / f"{self.instance}{LOCK_SUFFIX}")
        # segments of processes that are gone, claimed (renamed to this instance) so no other process replays
        # them too: replayed by the writer before anything is deleted
        self.leftovers = self._claim_leftovers()
        self._closed_segments: list[Segment] = []
        self._to_close: list[int] = []
        self.current = self._open()

    def _claim_leftovers(self) -> list[Path]:
        claimed = []
        for path in sorted(self.dir.iterdir()):
            if path.suffix not in SUFFIXES or path.name.startswith(self.instance):
                continue
            owner = _OWNER.match(path.name)
            if owner and _alive(self.dir / f"{owner[1]}{LOCK_SUFFIX}"):
                continue  # a live process's segment: it writes and settles it itself
            target = path.with_name(f"{self.instance}-replay-{path.name}")
            try:
                os.rename(path, target)  # atomic: of two processes claiming one file, one wins
            except FileNotFoundError:
                continue
            claimed.append(target)
        for lock in self.dir.glob(f"*{LOCK_SUFFIX}"):  # locks of processes that are gone
            if lock.name != f"{self.instance}{LOCK_SUFFIX}" and not _alive(lock):
                lock.unlink(missing_ok=True)
        return claimed

    def _open(self) -> Segment:
        self._seq += 1
        path = self.dir / f"{self.instance}-{self._seq:06d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return Segment(path, fd)

    def append(self, data: bytes, n: int) -> Segment:
        """Write ``n`` records (``data``: their JSON lines) in one ``write``; the segment they went to.

        All or nothing: a write the disk cannot take (ENOSPC after part of it) is cut off again, so the next
        record does not follow half a one (the reader would lose both) and none of these is replayed."""
        with self._lock:
            seg = self.current
            view = memoryview(data)
            try:
                while view:  # a regular file takes it all at once, or part of it when the disk fills
                    written = os.write(seg.fd, view)
                    view = view[written:]
            except OSError:
                self._cut_back(seg)
                raise
            seg.size += len(data)
            seg.appended += n
            seg.pending += n  # counted at once: no replay may take the file before they are queued
            self._unsynced = True
            if seg.size >= self.segment_bytes:
                self._rotate()
            return seg

    def _cut_back(self, seg: Segment) -> None:
        """Truncate ``seg`` to its last whole record; if even that fails, write on in a new segment."""
        try:
            os.ftruncate(seg.fd, seg.size)
        except OSError:  # shrinking a file needs no space: all but unheard of
            with contextlib.suppress(OSError):
                self._rotate()

    def _rotate(self) -> None:
        old = self.current
        self.current = self._open()
        old.closed = True
        self._closed_segments.append(old)
        self._to_close.append(old.fd)  # fsync and close in the writer thread, never on the request path

    def sync(self) -> None:
        """fsync what was appended since the last call (the writer thread, every cycle), and close rotated files."""
        now = time.monotonic()
        with self._lock:
            to_close, self._to_close = self._to_close, []
            due = self.fsync_interval >= 0 and now - self._synced_at >= self.fsync_interval
            fd = None if not (due and self._unsynced) or self.current.closed else self.current.fd
            if fd is not None:
                self._unsynced = False
                self._synced_at = now
        for old in to_close:
            with contextlib.suppress(OSError):
                os.fsync(old)
            with contextlib.suppress(OSError):
                os.close(old)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def settle(self, seg: Segment, n: int) -> None:
        """``n`` queued records of ``seg`` are in the database: delete the file once all of it is."""
        with self._lock:
            seg.settled += n
            seg.pending -= n
            self._collect()

    def defer(self, seg: Segment, n: int) -> None:
        """``n`` records of ``seg`` are not (or no longer) queued: the file is replayed for them instead."""
        with self._lock:
            seg.pending -= n
            seg.dirty = True

    def _collect(self) -> None:
        keep = []
        for seg in self._closed_segments:
            if seg.done:
                seg.path.unlink(missing_ok=True)
            else:
                keep.append(seg)
        self._closed_segments = keep

    def has_dirty(self) -> bool:
        """Some segment holds records the database may miss."""
        with self._lock:
            return self.current.dirty or any(s.dirty for s in self._closed_segments)

    def to_replay(self) -> list[Path]:
        """Closed files the database may miss records of (dirty segments); the caller replays and deletes.

        The open segment is closed first when it is dirty: its records the database refused (a full disk)
        are replayed once the database takes writes again, not only at the next rotation or restart.
        A dirty file waits while some of its records are still queued in memory: the writer inserts those,
        and a replay meanwhile would insert them twice."""
        with self._lock:
            if self.current.dirty and not self.current.closed:
                with contextlib.suppress(OSError):  # no new file either: the next call tries again
                    self._rotate()
            ready = [s for s in self._closed_segments if s.dirty and s.pending <= 0]
            self._closed_segments = [s for s in self._closed_segments if s not in ready]
        return [s.path for s in ready]

    def close(self) -> list[Path]:
        """Close the open segment; delete what is settled; return the files still to replay."""
        self.sync()
        with self._lock:
            seg = self.current
            if not seg.closed:
                with contextlib.suppress(OSError):
                    os.fsync(seg.fd)
                os.close(seg.fd)
                seg.closed = True
                self._closed_segments.append(seg)
            self._collect()
            rest = [s.path for s in self._closed_segments]
            self._closed_segments = []
        return rest

    def release(self) -> None:
        """Give up the ownership lock (after :meth:`close` and the replay): what is left is a leftover."""
        if self._owner_fd is not None:
            if not any(p.name.startswith(self.instance) for p in self.dir.iterdir() if p.suffix in SUFFIXES):
                (self.dir / f"{self.instance}{LOCK_SUFFIX}").unlink(missing_ok=True)
            os.close(self._owner_fd)
            self._owner_fd = None


LOCK_SUFFIX = ".owner"
_last_ms = 0
_ms_lock = threading.Lock()


def _instance_ms() -> int:
    """The creation time in ms, unique within the process: two spools made in one millisecond would share an
    instance name, and each would take the other's segments for its own."""
    global _last_ms
    with _ms_lock:
        _last_ms = max(int(time.time() * 1000), _last_ms + 1)
        return _last_ms
_OWNER = re.compile(r"^([0-9a-f]{13}-\d+)-")


def _hold(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` (created 0600), held until the fd is closed; None if unsupported."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _alive(lock: Path) -> bool:
    """True while the process that made ``lock`` holds it (a second flock on it fails)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False  # no lock file: its process is gone (or predates the lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


ARRAY_KEY = "wolt.ndarray"
BYTES_KEY = "wolt.bytes"


def spool_record(row: dict[str, Any]) -> bytes:
    """A row as the spool stores it: one JSON line (orjson; numpy values, bytes and dates converted), then
    the raw bytes of its numeric arrays (see the module's docstring)."""
    raw: list[Any] = []
    for key in ("inputs", "outputs"):
        payload = row.get(key)
        if isinstance(payload, dict) and any(_packable(v) for v in payload.values()):
            row = {**row, key: {k: _pack(v, raw) if _packable(v) else v for k, v in payload.items()}}
    if raw:
        row = {**row, BYTES_KEY: sum(len(b) for b in raw)}
    try:
        line = orjson.dumps(row, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits: the stdlib encoder copes
        line = to_json(row).encode()
    return b"".join((line, b"\n", *raw)) if raw else line + b"\n"


def _packable(value: Any) -> bool:
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind is not None and kind in "biuf" and getattr(value, "ndim", 0) >= 1


def _pack(array: Any, raw: list[Any]) -> dict[str, Any]:
    """The array's place in the line; its bytes are appended to ``raw``."""
    import numpy as np

    array = np.ascontiguousarray(array)
    data = array.data.cast("B")
    raw.append(data)
    return {ARRAY_KEY: array.dtype.str, "shape": list(array.shape), "nbytes": len(data)}


def _unpack(payload: Any, data: bytes, pos: int) -> tuple[Any, int]:
    """A payload read back: its arrays (their bytes from ``data`` at ``pos``) as numpy arrays again; the
    position after them."""
    if not isinstance(payload, dict) or not any(
        isinstance(v, dict) and ARRAY_KEY in v for v in payload.values()
    ):
        return payload, pos
    import numpy as np

    out = {}
    for k, v in payload.items():
        if isinstance(v, dict) and ARRAY_KEY in v:
            n = int(v["nbytes"])
            if pos + n > len(data):
                raise ValueError("array bytes cut short")
            dtype = np.dtype(v[ARRAY_KEY])
            v = np.frombuffer(data, dtype=dtype, count=n // dtype.itemsize, offset=pos).reshape(v["shape"])
            pos += n
        out[k] = v
    return out, pos


def read_segment(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of a segment file and how many records were unreadable (a torn last one after a power cut)."""
    rows, bad = [], 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    pos, end = 0, len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        line = data[pos : end if nl < 0 else nl]
        pos = end if nl < 0 else nl + 1
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(row, dict):
            bad += 1
            continue
        raw = row.pop(BYTES_KEY, 0)
        try:
            start = pos
            if not isinstance(raw, int) or raw < 0 or pos + raw > end:
                raise ValueError("array bytes cut short")
            for key in ("inputs", "outputs"):
                if key in row:
                    row[key], start = _unpack(row[key], data, start)
            if start != pos + raw:
                raise ValueError("array bytes do not add up")
        except (ValueError, TypeError, KeyError):  # a torn record, or arrays that do not decode
            bad += 1
            pos = min(end, pos + raw) if isinstance(raw, int) and raw > 0 else pos
            continue
        pos += raw
        rows.append(row)
    return rows, bad


def missing_rows(conn: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows not yet in the log (matched by deployment, id, variant, shadow and time), looking in the
    chunks overlapping their time range and in rows of the first format."""
    from sqlalchemy import and_, inspect, select

    from wolt_jupyter.responses.columnar import decode
    from wolt_jupyter.responses.store import CHUNKS_TABLE, chunks_table, tables

    if not rows:
        return []
    t, c = tables()[0], chunks_table()
    present = set(inspect(conn).get_table_names())
    have: set[tuple[Any, ...]] = set()
    by_deployment: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_deployment.setdefault(r["deployment"], []).append(r)
    for deployment, group in by_deployment.items():
        lo = min(r["time"] for r in group)
        hi = max(r["time"] for r in group)
        if t.name in present:
            q = select(t.c.id, t.c.variant, t.c.shadow, t.c.time).where(
                and_(t.c.deployment == deployment, t.c.time >= lo, t.c.time <= hi)
            )
            have.update((deployment, i, v, bool(s), float(tm)) for i, v, s, tm in conn.execute(q))
        if CHUNKS_TABLE in present:
            q = select(c.c.data).where(c.c.deployment == deployment, c.c.t_max >= lo, c.c.t_min <= hi)
            for (data,) in conn.execute(q):
                keys = decode(data, ["id", "variant", "shadow", "time", "_row"]).to_pydict()
                have.update(
                    (deployment, i, v, bool(s), float(tm))
                    for i, v, s, tm, row in zip(
                        keys["id"], keys["variant"], keys["shadow"], keys["time"], keys["_row"], strict=True
                    )
                    if row == 0
                )
    return [
        r
        for r in rows
        if (r["deployment"], r["id"], r["variant"], bool(r["shadow"]), float(r["time"])) not in have
    ]
