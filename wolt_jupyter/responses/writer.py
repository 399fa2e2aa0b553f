"""The background writer: ``submit`` appends to an in-memory queue, a thread inserts batches.

Why this shape: ``submit`` runs on the serving event loop for every request, so it must not touch the
database, serialize JSON or take more than a few microseconds. A ``deque`` append is atomic under the GIL
and needs no lock; the writer thread wakes every ``flush_interval`` or as soon as a full batch is waiting,
serializes the payloads and inserts them with one ``executemany`` per batch.

Accounting invariant, checked by the tests: every record given to ``submit`` ends up in exactly one of
``written``, ``dropped`` (queue full, database failing after retries, or submitted after ``close``),
``sampled_out``, or is still ``queued``. Every drop is logged.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any, Literal

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.responses.record import ResponseRecord, sampled_in

log = logging.getLogger(__name__)

OnFull = Literal["wait", "drop"]
_CATCH_UP = 4  # batches per transaction while a backlog is waiting
_MAX_BACKOFF = 5.0  # seconds between retries of one batch, at most
_LIVE: weakref.WeakSet[ResponseWriter] = weakref.WeakSet()


class ResponseWriter:
    """Log :class:`ResponseRecord` objects to the store at ``url`` from a background thread.

    ``on_full="wait"`` blocks ``submit`` until the writer has made room (backpressure: nothing is lost; a wait
    longer than ``wait_timeout`` seconds, i.e. a stuck database, counts a logged drop instead of hanging the
    server). ``on_full="drop"`` returns False at once and counts the drop. ``sample`` keeps that fraction of
    request ids. A failing batch is retried ``retries`` times with exponential backoff from ``retry_backoff``
    seconds. ``engine_options`` go to ``sqlalchemy.create_engine``. A transaction holds up to ``batch_size``
    records, or up to four times that while a backlog is waiting.

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
    ) -> None:
        if on_full not in ("wait", "drop"):
            raise InvalidArgument(f"on_full must be 'wait' or 'drop', not {on_full!r}")
        if not 0.0 <= sample <= 1.0:
            raise InvalidArgument(f"sample must be a fraction between 0 and 1, not {sample!r}")
        if queue_size < 1 or batch_size < 1:
            raise InvalidArgument(f"queue_size and batch_size must be >= 1 (got {queue_size}, {batch_size})")
        if flush_interval <= 0 or retries < 0 or retry_backoff < 0 or wait_timeout < 0:
            raise InvalidArgument("flush_interval must be > 0; retries, retry_backoff, wait_timeout >= 0")
        from wolt_jupyter.responses.store import make_engine, normalize_url

        self.url = url
        self._masked_url = normalize_url(url).render_as_string(hide_password=True)
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

        self._queue: deque[ResponseRecord] = deque()
        self._wake = threading.Event()  # set: "a batch is ready" or "closing"
        self._room = threading.Condition()  # notified after each batch: waiting submitters re-check
        self._progress = threading.Condition()  # notified after each writer cycle: flush() re-checks
        self._counts_lock = threading.Lock()
        self._written = 0
        self._dropped = 0
        self._sampled_out = 0
        self._in_flight = 0  # records popped from the queue but not yet written or dropped
        self._busy = False
        self._closing = False
        self._drained = False  # set by close() once nothing more will be written
        self._close_lock = threading.Lock()
        self._schema_ready = False
        self._thread = threading.Thread(target=self._run, name=f"wolt-response-writer[{self._masked_url}]")
        self._thread.daemon = True  # an atexit hook flushes; a daemon never blocks interpreter exit
        self._thread.start()
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
        queue.append(record)
        if self._closing:  # close() began meanwhile: make sure the record is not stranded
            return self._late(record)
        if len(queue) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def _late(self, record: ResponseRecord) -> bool:
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
        """Counters: ``queued`` (waiting or being written), ``written``, ``dropped``, ``sampled_out``."""
        with self._counts_lock:
            return {
                "queued": len(self._queue) + self._in_flight,
                "written": self._written,
                "dropped": self._dropped,
                "sampled_out": self._sampled_out,
            }

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written (or dropped); True if that happened in time."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._queue or self._busy:
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
            closing = self._closing  # read before draining: whatever was queued before close() is written
            with self._progress:
                self._busy = True
            try:
                while queue:
                    # behind (more than a batch waiting): fewer, larger transactions catch up faster
                    limit = self.batch_size if len(queue) <= self.batch_size else self.batch_size * _CATCH_UP
                    batch = []
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
                with self._progress:
                    self._busy = False
                    self._progress.notify_all()
            if closing and not queue:
                return

    def _write_batch(self, batch: list[ResponseRecord]) -> None:
        from wolt_jupyter.responses.store import ensure_schema, insert_rows

        rows = self._rows(batch)
        attempt = 0
        while rows:
            try:
                if not self._schema_ready:
                    ensure_schema(self._engine)
                    self._schema_ready = True
                with self._engine.begin() as conn:
                    insert_rows(conn, rows)
            except Exception as exc:
                if attempt < self.retries:
                    delay = min(self.retry_backoff * (2**attempt), _MAX_BACKOFF)
                    attempt += 1
                    log.warning(
                        "response log %s: writing %d record(s) failed (%s); retry %d/%d in %.2fs",
                        self._masked_url,
                        len(rows),
                        _one_line(exc),
                        attempt,
                        self.retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                with self._counts_lock:
                    self._in_flight = 0
                self._drop(
                    len(rows), f"database error after {self.retries} retries: {_one_line(exc)}", logging.ERROR
                )
                return
            with self._counts_lock:
                self._written += len(rows)
                self._in_flight = 0
            return
        with self._counts_lock:
            self._in_flight = 0

    def _rows(self, batch: list[ResponseRecord]) -> list[dict[str, Any]]:
        """Serialize in the writer thread, not in submit; a malformed record is dropped alone, not its batch."""
        from wolt_jupyter.responses.store import to_json

        rows = []
        bad = 0
        for r in batch:
            try:
                rows.append(
                    {
                        "id": str(r.id),
                        "time": float(r.time),
                        "deployment": str(r.deployment),
                        "variant": str(r.variant),
                        "model_name": str(r.model_name),
                        "model_version": str(r.model_version),
                        "shadow": bool(r.shadow),
                        "inputs": to_json(r.inputs),
                        "outputs": to_json(r.outputs),
                        "latency_ms": float(r.latency_ms),
                        "status": int(r.status),
                        "error": None if r.error is None else str(r.error),
                    }
                )
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
        return rows


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@atexit.register
def _close_all() -> None:
    """Flush writers the owner forgot to close, so an interpreter exit does not lose the queue."""
    for writer in list(_LIVE):
        writer.close(timeout=10)
