"""The background writer: ``submit`` appends to an in-memory queue, a thread inserts batches.

Why this shape: ``submit`` runs on the serving event loop for every request, so it must not touch the
database, serialize JSON or take more than a few microseconds. A ``deque`` append is atomic under the GIL
and needs no lock; the writer thread wakes every ``flush_interval`` or as soon as a full batch is waiting,
serializes the payloads and inserts them with one ``executemany`` per batch.

Accounting invariant, checked by the tests: every record given to ``submit`` ends up in exactly one of
``written``, ``dropped`` (queue full, database failing after retries, unstorable, or submitted after
``close``), ``sampled_out``, ``deferred`` (in the spool but not queued in memory: replayed later), or is still
``queued``. Every drop is logged. ``unlogged`` counts the drops of records whose answer went out anyway (the
spool could not take them); ``submit_many(..., strict=True)`` raises :class:`~wolt_jupyter.errors.LogFull`
instead, and those records count nowhere: their requests were refused.

With a ``spool_dir`` (the serving runtime), :meth:`submit_many` first appends the records to the spool
(:mod:`wolt_jupyter.responses.spool`) in one write, so they survive a crash of the process; see there.
One bad record never costs another: a batch the database refuses for its data is split until the bad row is
alone, and only that row is dropped (counted, logged with its id).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Literal

from wolt_jupyter.config import mask_url
from wolt_jupyter.errors import InvalidArgument, LogFull
from wolt_jupyter.responses.diskwatch import DiskWatch, is_disk_full
from wolt_jupyter.responses.record import ResponseRecord, sampled_in
from wolt_jupyter.responses.retention import Retention
from wolt_jupyter.responses.spool import Spool, missing_rows, read_segment, spool_record
from wolt_jupyter.responses.summary import DISK_WARN_FRACTION  # one threshold for the writer and the card

log = logging.getLogger(__name__)

OnFull = Literal["wait", "drop"]
_CATCH_UP = 4  # batches per transaction while a backlog is waiting
_MAX_BACKOFF = 5.0  # seconds between retries of one batch, at most
_LIVE: weakref.WeakSet[ResponseWriter] = weakref.WeakSet()
MAINTENANCE_INTERVAL_S = 60.0  # retention and compaction passes; a full disk triggers one at once
REPLAY_AFTER_S = 5.0  # a replay the database refused is tried again after this long (a full disk: until space returns)


class ResponseWriter:
    """Log :class:`ResponseRecord` objects to the store at ``url`` from a background thread.

    ``on_full="wait"`` blocks ``submit`` until the writer has made room (backpressure: nothing is lost; a wait
    longer than ``wait_timeout`` seconds, i.e. a stuck database, counts a logged drop instead of hanging the
    server). ``on_full="drop"`` returns False at once and counts the drop. ``sample`` keeps that fraction of
    request ids. A failing batch is retried ``retries`` times with exponential backoff from ``retry_backoff``
    seconds. ``engine_options`` go to ``sqlalchemy.create_engine``. A transaction holds up to ``batch_size``
    records, or up to four times that while a backlog is waiting.

    A second thread keeps the log bounded and compact every ``maintenance_interval`` seconds
    (:meth:`maintain`): ``retention`` (default: the settings' ``response_max_age``/``response_max_bytes``),
    merging of small chunks, migration of rows of the first format, and a check of the disk under the log
    (:attr:`warning` below ``disk_warn_fraction`` free); ``also_maintain(now)``, if given, runs after each
    pass (the runtime trims the logs of undeployed deployments there). A full disk never raises: a record the
    spool cannot take is dropped and counted (``unlogged``), one the database cannot take waits in the spool,
    :attr:`full` says so and :attr:`warning` says where and what to do; writes resume by themselves when
    space returns.

    ``submit`` is safe from any number of threads and costs well under a microsecond (a deque append; no lock
    unless sampling out or dropping). The length check before the append is not atomic with it, so the queue
    may exceed ``queue_size`` by at most the number of threads submitting at the same instant.
    """

    def __init__(
        self,
        url: str,
        queue_size: int = 10000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        on_full: OnFull = "wait",
        sample: float = 1.0,
        *,
        retries: int = 4,
        retry_backoff: float = 0.1,
        wait_timeout: float = 10.0,
        engine_options: dict[str, Any] | None = None,
        spool_dir: Path | None = None,
        retention: Retention | None = None,
        maintenance_interval: float = MAINTENANCE_INTERVAL_S,
        disk_warn_fraction: float = DISK_WARN_FRACTION,
        also_maintain: Any = None,
    ) -> None:
        if on_full not in ("wait", "drop"):
            raise InvalidArgument(f"on_full must be 'wait' or 'drop', not {on_full!r}")
        if not 0.0 <= sample <= 1.0:
            raise InvalidArgument(f"sample must be a fraction between 0 and 1, not {sample!r}")
        if queue_size < 1 or batch_size < 1:
            raise InvalidArgument(f"queue_size and batch_size must be >= 1 (got {queue_size}, {batch_size})")
        if flush_interval <= 0 or retries < 0 or retry_backoff < 0 or wait_timeout < 0:
            raise InvalidArgument("flush_interval must be > 0; retries, retry_backoff, wait_timeout >= 0")
        from wolt_jupyter.responses.store import make_engine

        self.url = url
        self._masked_url = mask_url(url)
        # creating the engine does not connect; it does fail fast on a bad URL or a missing driver
        self._engine = make_engine(url, engine_options)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_full = on_full
        self.sample = float(sample)
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.wait_timeout = wait_timeout

        # entries: (spool segment or None, a ResponseRecord serialized by the writer, or a row already serialized)
        self._queue: deque[tuple[Any, Any]] = deque()
        self._wake = threading.Event()  # set: "a batch is ready" or "closing"
        self._room = threading.Condition()  # notified after each batch: waiting submitters re-check
        self._progress = threading.Condition()  # notified after each writer cycle: flush() re-checks
        self._counts_lock = threading.Lock()
        self._written = 0
        self._dropped = 0
        self._sampled_out = 0
        self._deferred = 0
        self._replayed = 0
        self._unlogged = 0
        self._spool = None
        self._replay: list[Path] = []
        self._replay_after = 0.0
        if spool_dir is not None:
            self._spool = Spool(Path(spool_dir))
            self._replay = list(self._spool.leftovers)
        self._in_flight = 0  # records popped from the queue but not yet written or dropped
        self._busy = False
        self._cycles = 0  # writer cycles done (flush waits for whole ones)
        self._closing = False
        self._drained = False  # set by close() once nothing more will be written
        self._close_lock = threading.Lock()
        self._schema_ready = False
        self.retention = retention if retention is not None else Retention.of(None)
        self.maintenance_interval = maintenance_interval
        self.disk_warn_fraction = disk_warn_fraction
        self._removed = 0
        self.also_maintain = also_maintain
        self.disk_watch = DiskWatch(self._disk_dir(), self._masked_url, disk_warn_fraction, self._spool is not None)
        self.bytes_on_disk: int | None = None  # the log's footprint at the last maintenance pass
        self._deployments: set[str] = set()  # written by this writer: the ones its maintenance looks after
        self._maintain_now = threading.Event()
        self._maintenance_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"wolt-response-writer[{self._masked_url}]")
        self._thread.daemon = True  # an atexit hook flushes; a daemon never blocks interpreter exit
        self._thread.start()
        # retention, compaction and the disk check run beside the writer, never in its way
        self._maintainer = threading.Thread(
            target=self._maintain_loop, name=f"wolt-response-maintenance[{self._masked_url}]", daemon=True
        )
        self._maintainer.start()
        _LIVE.add(self)

    # -- hot path -------------------------------------------------------------------------------------------

    def submit(self, record: ResponseRecord) -> bool:
        """Queue one record; True if it will be written, False if sampled out or dropped (counted, logged)."""
        if self.sample < 1.0 and not sampled_in(record.id, self.sample):
            with self._counts_lock:
                self._sampled_out += 1
            return False
        queue = self._queue
        if self._closing:
            self._drop(1, "submitted after close()")
            return False
        if len(queue) >= self.queue_size and not self._wait_for_room():
            return False
        entry = (None, record)
        queue.append(entry)
        if self._closing:  # close() began meanwhile: make sure the record is not stranded
            return self._late(entry)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def submit_many(self, records: list[ResponseRecord], strict: bool = False) -> int:
        """Queue records that must survive a crash: with a spool they are in the OS (one ``write``) when this
        returns. Never blocks on the database; returns how many will be written (now or by a replay).

        ``strict`` (``logging.on_full: refuse``): raise :class:`~wolt_jupyter.errors.LogFull` instead of
        dropping records that cannot be kept (the spool's disk is full, or without a spool the database's or
        the queue), so the caller refuses their requests rather than answer them without a record."""
        if self.sample < 1.0:
            kept = [r for r in records if sampled_in(r.id, self.sample)]
            if len(kept) < len(records):
                with self._counts_lock:
                    self._sampled_out += len(records) - len(kept)
            records = kept
        if not records:
            return 0
        if self._closing:
            self._drop(len(records), "submitted after close()")
            return 0
        rows = []
        for r in records:
            try:
                rows.append(to_row(r))
            except Exception as exc:
                self._drop(1, f"cannot serialize record {getattr(r, 'id', r)!r}: {exc}", logging.ERROR)
        seg = None
        if self._spool is not None and rows:
            try:
                seg = self._spool.append(b"".join(spool_record(row) for row in rows), len(rows))
            except (OSError, ValueError) as exc:  # disk full, or the spool closed under us
                full = is_disk_full(exc)
                if full:
                    self._disk_full("spool")
                if strict:
                    raise LogFull(f"the response log cannot keep these records: {_one_line(exc)}") from None
                with self._counts_lock:
                    self._unlogged += len(rows)
                self._drop(
                    len(rows),
                    f"spool write failed: {self.disk_watch.warning if full else _one_line(exc)}",
                    logging.DEBUG if full else logging.ERROR,
                )
                return 0
            if self.disk_watch.spool_full:  # the hot path pays one attribute read
                self.disk_watch.succeeded("spool")
        elif strict and rows and self.disk_watch.database_full:  # no spool: the database is the only keeper
            raise LogFull("the response log cannot keep these records: the disk under its database is full")
        queue = self._queue
        if len(queue) + len(rows) > self.queue_size:
            if seg is not None:  # durable in the spool: the writer replays the segment instead
                assert self._spool is not None  # seg came from it
                self._spool.defer(seg, len(rows))
                with self._counts_lock:
                    self._deferred += len(rows)
                return len(rows)
            if strict:
                raise LogFull(f"the response log's queue is full ({self.queue_size} records)")
            self._drop(len(rows), f"queue full ({self.queue_size} records)", level=logging.DEBUG)
            return 0
        queue.extend((seg, row) for row in rows)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return len(rows)

    def _disk_full(self, part: str) -> None:
        if not self.disk_watch.full:
            self._maintain_now.set()  # retention may make room: a pass now, once an episode
        self.disk_watch.failed(part)

    def _late(self, record: tuple[Any, Any]) -> bool:
        """A record appended while close() ran: still written if close() has not drained yet, else dropped."""
        with self._close_lock:
            if not self._drained:
                return True  # the writer thread or close() will write it
            for i, queued in enumerate(self._queue):
                if queued is record:
                    del self._queue[i]
                    break
            else:
                return True  # already written
        self._drop(1, "submitted after close()")
        return False

    def _wait_for_room(self) -> bool:
        """Queue is full: drop, or block until the writer frees space (False once a drop was counted)."""
        if self.on_full == "drop":
            self._drop(1, f"queue full ({self.queue_size} records)", level=logging.DEBUG)
            return False
        deadline = time.monotonic() + self.wait_timeout
        self._wake.set()
        with self._room:
            while len(self._queue) >= self.queue_size and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._drop(1, f"queue stayed full for {self.wait_timeout}s")
                    return False
                self._room.wait(min(left, 0.05))
        if self._closing:
            self._drop(1, "submitted after close()")
            return False
        return True

    def _drop(self, n: int, why: str, level: int = logging.WARNING) -> None:
        with self._counts_lock:
            self._dropped += n
            total = self._dropped
        # full-queue drops can come by the thousand: log the first and then every 1000th at WARNING
        if level < logging.WARNING and (total == n or total // 1000 != (total - n) // 1000):
            level = logging.WARNING
        log.log(
            level,
            "response log %s: dropped %d record(s): %s (%d dropped so far)",
            self._masked_url,
            n,
            why,
            total,
        )

    # -- introspection and lifecycle ------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters: ``queued`` (waiting or being written), ``written``, ``dropped``, ``sampled_out``,
        ``deferred`` (in the spool, left for a replay), ``replayed`` (rows a replay inserted), ``removed``
        (records retention removed while this writer ran), ``unlogged`` (of the dropped: records whose answer
        went out without them, as the spool could not take them)."""
        with self._counts_lock:
            return {
                "queued": len(self._queue) + self._in_flight,
                "written": self._written,
                "dropped": self._dropped,
                "sampled_out": self._sampled_out,
                "deferred": self._deferred,
                "replayed": self._replayed,
                "removed": self._removed,
                "unlogged": self._unlogged,
            }

    @property
    def full(self) -> bool:
        """The log cannot write for lack of space now (its spool, or its database)."""
        return self.disk_watch.full

    @property
    def warning(self) -> str | None:
        """One readable line while the disk under the log is full or nearly full, for cards and logs."""
        return self.disk_watch.warning

    # -- maintenance: retention, compaction, migration, disk space ---------------------------------------------

    def maintain(self, now: float | None = None) -> dict[str, int]:
        """One pass (the background thread runs one every ``maintenance_interval`` seconds): migrate rows of
        the first format, merge small chunks, enforce retention, check the disk. Returns what it did; never
        raises (a failing pass is logged and retried on the next one)."""
        from wolt_jupyter.responses.retention import enforce
        from wolt_jupyter.responses.store import compact, ensure_schema, migrate_legacy, release_free_pages

        done = {"migrated": 0, "compacted": 0, "removed": 0}
        spool_dir = self._spool.dir if self._spool is not None else None
        with self._maintenance_lock:
            self.disk_watch.check()
            try:
                if not self._schema_ready:
                    ensure_schema(self._engine)
                    self._schema_ready = True
                # retention first: on a full disk it is what makes room, and compaction needs room to work
                for deployment in sorted(self._deployments):
                    removed = enforce(self._engine, deployment, self.retention, now, spool_dir=spool_dir)
                    done["removed"] += removed.records
                done["migrated"] = migrate_legacy(self._engine)
                for deployment in sorted(self._deployments):
                    done["compacted"] += compact(self._engine, deployment, now)
                if done["compacted"] or done["migrated"]:
                    release_free_pages(self._engine)  # merged chunks' old pages go back to the OS
                self._measure(spool_dir)
            except Exception as exc:
                log.warning("response log %s: maintenance pass failed: %s", self._masked_url, _one_line(exc))
            if self.also_maintain is not None:
                try:
                    self.also_maintain(now)
                except Exception as exc:
                    log.warning("response log %s: maintenance pass failed: %s", self._masked_url, _one_line(exc))
            with self._counts_lock:
                self._removed += done["removed"]
            self.disk_watch.check()
        return done

    def _measure(self, spool_dir: Path | None) -> None:
        """Remember the log's bytes on disk (database, WAL, spool) for the metric: read once a pass, not per scrape."""
        from wolt_jupyter.responses.footprint import footprint

        if len(self._deployments) != 1:
            return
        (deployment,) = self._deployments
        with self._engine.connect() as conn:
            self.bytes_on_disk = footprint(conn, deployment, spool_dir).total

    def _maintain_loop(self) -> None:
        while not self._closing:
            self._maintain_now.wait(self.maintenance_interval)
            self._maintain_now.clear()
            if self._closing:
                return
            self.maintain()

    def _disk_dir(self) -> Path | None:
        from wolt_jupyter.responses.store import normalize_url, sqlite_path

        path = sqlite_path(normalize_url(self.url))
        if path is not None:
            return path.parent
        return self._spool.dir if self._spool is not None else None

    def disk(self) -> dict[str, Any]:
        """Free and total bytes of the file system under the log (SQLite file or spool), and the warning."""
        return self.disk_watch.usage()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written (or dropped); True if that happened in time.

        Records waiting in the spool for a replay (the database refused them) are tried once more now, and
        that try is waited for: a read right after a full disk cleared sees them."""
        deadline = time.monotonic() + timeout
        self._replay_after = 0.0
        with self._progress:
            start = self._cycles
            while self._queue or self._busy or (self._cycles < start + 2 and self._replay_waiting()):
                if not self._thread.is_alive():
                    return False
                self._wake.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> dict[str, int]:
        """Write everything still queued, then stop the thread. Idempotent; returns the final :meth:`stats`."""
        self._closing = True
        self._maintain_now.set()
        self._wake.set()
        with self._room:
            self._room.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "response log %s: close() timed out after %ss with %d record(s) still queued; "
                "the writer keeps going in the background",
                self._masked_url,
                timeout,
                self.stats()["queued"],
            )
        else:
            # a submit that raced with close() may have appended after the thread's last look: write it here
            with self._close_lock:
                leftover = []
                while self._queue:
                    leftover.append(self._queue.popleft())
                if leftover:
                    with self._counts_lock:
                        self._in_flight = len(leftover)
                    self._write_batch(leftover)
                self._drained = True
            if self._spool is not None:
                self._replay.extend(self._spool.close())
                self._replay_pending(force=True)
                self._spool.release()
            self._maintainer.join(max(0.1, timeout))  # a pass in progress finishes its transaction
            self._engine.dispose()
        _LIVE.discard(self)
        return self.stats()

    @property
    def closed(self) -> bool:
        return self._closing and not self._thread.is_alive()

    def __enter__(self) -> ResponseWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseWriter({self._masked_url!r}, {self.stats()})"

    # -- writer thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._spool is not None:
                self._spool.sync()  # what a power cut can lose: at most one flush interval
            closing = self._closing  # read before draining: whatever was queued before close() is written
            with self._progress:
                self._busy = True
            try:
                while queue:
                    # behind (more than a batch waiting): fewer, larger transactions catch up faster
                    limit = self.batch_size if len(queue) <= self.batch_size else self.batch_size * _CATCH_UP
                    batch: list[tuple[Any, Any]] = []
                    while queue and len(batch) < limit:
                        batch.append(queue.popleft())
                    with self._counts_lock:
                        self._in_flight = len(batch)
                    with self._room:
                        self._room.notify_all()
                    self._write_batch(batch)
            except Exception:  # never let the thread die: a dead writer would silently lose everything
                log.exception("response log %s: unexpected error in the writer thread", self._masked_url)
                with self._counts_lock:
                    lost, self._in_flight = self._in_flight, 0
                if lost:
                    self._drop(lost, "unexpected writer error", logging.ERROR)
            finally:
                if self._spool is not None and not queue:
                    self._replay.extend(self._spool.to_replay())
                    self._replay_pending()
                with self._progress:
                    self._busy = False
                    self._cycles += 1
                    self._progress.notify_all()
            if closing and not queue:
                return

    def _write_batch(self, batch: list[tuple[Any, Any]]) -> None:
        self._store(self._rows(batch))

    def _store(self, pairs: list[tuple[Any, dict[str, Any]]], replay: bool = False) -> None:
        """Insert ``pairs`` (spool segment, row) in one transaction; on a data error split until the bad row is
        alone; on another error retry with backoff, then leave spooled rows to a replay and drop the rest
        (``replay``: rows read from a spool file, which stays for a later replay: raises :class:`_Postponed`)."""
        from wolt_jupyter.responses.store import ensure_schema, insert_rows

        attempt = 0
        while pairs:
            try:
                if not self._schema_ready:
                    ensure_schema(self._engine)
                    self._schema_ready = True
                with self._engine.begin() as conn:
                    insert_rows(conn, [row for _, row in pairs])
            except Exception as exc:
                if _is_data_error(exc):
                    if len(pairs) > 1:  # one bad record must not cost the others
                        mid = len(pairs) // 2
                        self._store(pairs[:mid], replay)
                        self._store(pairs[mid:], replay)
                        return
                    self._settle(pairs, written=False)
                    self._drop(
                        1,
                        f"record {pairs[0][1].get('id')!r} cannot be stored: {_one_line(exc)}",
                        logging.ERROR,
                    )
                    return
                full = is_disk_full(exc)
                if full:  # retrying cannot help until space returns: spooled rows wait for a replay
                    self._disk_full("database")
                if attempt < self.retries and not full:
                    delay = min(self.retry_backoff * (2**attempt), _MAX_BACKOFF)
                    attempt += 1
                    log.warning(
                        "response log %s: writing %d record(s) failed (%s); retry %d/%d in %.2fs",
                        self._masked_url,
                        len(pairs),
                        _one_line(exc),
                        attempt,
                        self.retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                if replay:  # still in their spool file: counted when first deferred, replayed later
                    with self._counts_lock:
                        self._in_flight -= len(pairs)
                    raise _Postponed(_one_line(exc)) from exc
                spooled = [p for p in pairs if p[0] is not None]
                lost = len(pairs) - len(spooled)
                per_segment: dict[Any, int] = {}
                for seg, _ in spooled:
                    per_segment[seg] = per_segment.get(seg, 0) + 1
                for seg, n in per_segment.items():
                    assert self._spool is not None  # a segment came from it
                    self._spool.defer(seg, n)
                with self._counts_lock:
                    self._in_flight -= len(pairs)
                    self._deferred += len(spooled)
                if spooled:
                    log.log(
                        logging.DEBUG if full else logging.ERROR,  # a full disk is said once, by the watch
                        "response log %s: %d record(s) left in the spool for a later replay: %s",
                        self._masked_url,
                        len(spooled),
                        _one_line(exc),
                    )
                if lost:
                    why = self.disk_watch.warning if full else f"after {self.retries} retries: {_one_line(exc)}"
                    self._drop(lost, f"database error {why}", logging.DEBUG if full else logging.ERROR)
                return
            if self.disk_watch.database_full:  # space is back: what waits in the spool goes in now
                self._replay_after = 0.0
            self.disk_watch.succeeded("database")
            self._settle(pairs, written=True)
            self._deployments.update(row["deployment"] for _, row in pairs)
            return

    def _replay_waiting(self) -> bool:
        """Some records wait in spool files for a replay into the database."""
        return bool(self._replay) or (self._spool is not None and self._spool.has_dirty())

    def _settle(self, pairs: list[tuple[Any, dict[str, Any]]], written: bool) -> None:
        with self._counts_lock:
            self._in_flight -= len(pairs)
            if written:
                self._written += len(pairs)
        if self._spool is not None:
            counts: dict[Any, int] = {}
            for seg, _ in pairs:
                if seg is not None:
                    counts[seg] = counts.get(seg, 0) + 1
            for seg, n in counts.items():
                self._spool.settle(seg, n)

    def _replay_pending(self, force: bool = False) -> None:
        """Insert what the database misses from spool files (earlier processes', or dirty segments)."""
        from wolt_jupyter.responses.store import ensure_schema

        if not self._replay or (not force and time.monotonic() < self._replay_after):
            return
        while self._replay:
            path = self._replay[0]
            rows, bad = read_segment(path)
            try:
                if not self._schema_ready:
                    ensure_schema(self._engine)
                    self._schema_ready = True
                with self._engine.connect() as conn:
                    missing = missing_rows(conn, rows)
            except Exception as exc:
                self._replay_after = time.monotonic() + REPLAY_AFTER_S
                log.warning(
                    "response log %s: replay of %s postponed: %s", self._masked_url, path.name, _one_line(exc)
                )
                return
            with self._counts_lock:
                self._in_flight += len(missing)
                before = self._written
            try:
                self._store([(None, row) for row in missing], replay=True)
            except _Postponed as exc:
                with (
                    self._counts_lock
                ):  # a part may be in (a data error split the batch): it counts as replayed
                    self._replayed += self._written - before
                    self._written = before
                self._replay_after = time.monotonic() + REPLAY_AFTER_S
                log.log(
                    logging.DEBUG if self.disk_watch.database_full else logging.WARNING,
                    "response log %s: replay of %s postponed: %s",
                    self._masked_url,
                    path.name,
                    exc,
                )
                return
            with self._counts_lock:
                inserted = self._written - before
                self._written = (
                    before  # replayed rows were counted when first submitted (or by another process)
                )
                self._replayed += inserted
            if bad:
                log.warning("response log %s: %s had %d unreadable line(s)", self._masked_url, path.name, bad)
            if inserted or missing:
                log.info(
                    "response log %s: replayed %d record(s) from %s (%d already stored)",
                    self._masked_url,
                    inserted,
                    path.name,
                    len(rows) - len(missing),
                )
            path.unlink(missing_ok=True)
            self._replay.pop(0)

    def _rows(self, batch: list[tuple[Any, Any]]) -> list[tuple[Any, dict[str, Any]]]:
        """Serialize in the writer thread, not in submit; a malformed record is dropped alone, not its batch."""
        pairs = []
        bad = 0
        for seg, r in batch:
            if isinstance(r, dict):
                pairs.append((seg, r))
                continue
            try:
                pairs.append((seg, to_row(r)))
            except Exception as exc:
                bad += 1
                log.error(
                    "response log %s: cannot serialize record %r: %s",
                    self._masked_url,
                    getattr(r, "id", r),
                    exc,
                )
        if bad:
            with self._counts_lock:
                self._in_flight -= bad
            self._drop(bad, "malformed record(s)", logging.ERROR)
        return pairs


def to_row(r: ResponseRecord) -> dict[str, Any]:
    """The stored fields of a record; payloads stay Python objects until the chunk encodes them."""
    revision = getattr(r, "revision", None)
    return {
        "id": str(r.id),
        "time": float(r.time),
        "deployment": str(r.deployment),
        "variant": str(r.variant),
        "model_name": str(r.model_name),
        "model_version": str(r.model_version),
        "shadow": bool(r.shadow),
        "inputs": r.inputs,
        "outputs": r.outputs,
        "latency_ms": float(r.latency_ms),
        "status": int(r.status),
        "error": None if r.error is None else str(r.error),
        "revision": None if revision is None else int(revision),
    }


class _Postponed(Exception):
    """A replay's rows could not be written (after retries): their spool file stays for the next try."""


def _is_data_error(exc: BaseException) -> bool:
    """The database refuses the data itself (too long, wrong type, constraint), or encoding it failed:
    retrying cannot help."""
    from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if not isinstance(exc, (SQLAlchemyError, OSError)):
        return True  # raised while encoding the chunk, before the database saw it
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@atexit.register
def _close_all() -> None:
    """Flush writers the owner forgot to close, so an interpreter exit does not lose the queue."""
    for writer in list(_LIVE):
        writer.close(timeout=10)
