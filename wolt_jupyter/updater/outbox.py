"""Webhook messages after the fact: a durable outbox beside the history, and the sender that empties it.

The loop queues a decision's message in ``updater/outbox.jsonl`` (0600; each change one appended line, flushed
to disk) before it carries the decision out; the :class:`Sender` — a thread of the service, or called
synchronously — posts it afterwards, so a slow or failing webhook never delays a step or a rollback.

What a receiver can rely on:

- Every message carries its decision's id, the same on every attempt: the ``Idempotency-Key`` header and ``id``
  in the body (which is byte-for-byte the same on every attempt; only a signature's timestamp is the send time).
  The same decision made again after a restart has the same id and is not queued twice.
- A message is marked ``sent`` (durably) on a 2xx answer and is never posted again.
- A failed attempt — no connection, a timeout, 5xx, 408, 425, 429 — is tried again ``notify.retries`` times
  after ``notify.backoff`` seconds, doubling (at most :data:`MAX_BACKOFF` apart); any other 4xx at once is final.
  Then it is marked ``failed`` with the last error: in the outbox, the log (an error), the history's
  ``notified`` and the history card's count. Nothing is dropped silently.
- Delivery is at least once: a message whose POST was under way when the service stopped (killed, crashed,
  stopped mid-send) or whose answer came after ``notify.timeout`` is posted again, with the same key. A
  receiver that must see each decision once keeps the keys it has seen.

One writer: the service (one per deployment) holds the outbox; anyone may read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import one_line
from wolt_jupyter.private import private_dir
from wolt_jupyter.revisions import write_atomic
from wolt_jupyter.updater.notify import Message, Notifier, Sent

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.jsonl"
MAX_BACKOFF = 600.0  # seconds between two attempts at most
KEEP_FINISHED = 1000  # finished messages kept when the file is compacted at open
FINISHED = ("sent", "failed", "rate_limited")
_MESSAGE_FIELDS = {f.name for f in fields(Message)}


class Outbox:
    """The messages of one deployment's service, folded from ``path``'s lines. Thread-safe."""

    def __init__(self, path: str | Path, *, writer: bool = True) -> None:
        """``writer``: the service's own (tidies the file when opened); a reader (a notebook) changes nothing."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._messages: dict[str, Message] = {}
        raw = self.path.read_bytes() if self.path.is_file() else b""
        for line in raw.splitlines():
            try:
                self._apply(json.loads(line))
            except (ValueError, TypeError, KeyError):
                continue  # a torn last line after a crash: the lines before it stand
        if writer and raw:
            self._tidy(raw)

    # -- the file ---------------------------------------------------------------------------------------------
    def _tidy(self, raw: bytes) -> None:
        finished = [m for m in self._messages.values() if m.status in FINISHED]
        if len(finished) > 2 * KEEP_FINISHED:
            self._compact(finished)
        elif raw and not raw.endswith(b"\n"):
            self._write_line(b"\n")  # end the torn line, so the next one starts clean
        for m in self._messages.values():
            if m.in_flight:
                log.warning("webhook message %s (%s) was being sent when the service stopped: it goes again "
                            "with the same Idempotency-Key", m.id, m.event)  # fmt: skip

    def _compact(self, finished: list[Message]) -> None:
        """Keep every unfinished message and the newest finished ones, as one line each (written atomically)."""
        drop = {m.id for m in sorted(finished, key=lambda m: m.time)[:-KEEP_FINISHED]}
        self._messages = {k: m for k, m in self._messages.items() if k not in drop}
        lines = [json.dumps({"op": "add", **asdict(m)}, sort_keys=True) for m in self._messages.values()]
        write_atomic(self.path, "".join(f"{line}\n" for line in lines), mode=0o600)

    def _apply(self, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind == "add":
            m = Message(**{k: v for k, v in op.items() if k in _MESSAGE_FIELDS})
            self._messages.setdefault(m.id, m)
            return
        m = self._messages[op["id"]]
        if kind == "attempt":
            m.attempts, m.in_flight = op["n"], True
        elif kind == "retry":
            m.in_flight, m.next_at = False, op["next"]
            m.detail, m.http_status = op["detail"], op.get("status")
        elif kind in ("sent", "failed"):
            m.status, m.in_flight, m.detail, m.http_status = kind, False, op["detail"], op.get("status")

    def _write_line(self, data: bytes) -> None:
        private_dir(self.path.parent, tighten=False)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)  # on disk before the caller goes on (the action, the POST, "sent")
        finally:
            os.close(fd)

    def _record(self, op: dict[str, Any]) -> None:
        """Append ``op`` durably, then apply it (caller holds the lock)."""
        self._write_line((json.dumps(op, sort_keys=True, default=str) + "\n").encode())
        self._apply(op)

    # -- what the loop and the sender do ------------------------------------------------------------------------
    def add(self, message: Message) -> Message:
        """Queue ``message`` unless one with its id is there already (the same decision made again after a
        restart); returns the one kept."""
        with self._lock:
            if message.id not in self._messages:
                self._record({"op": "add", **asdict(message)})
            return self._copy(message.id)

    def begin(self, message_id: str) -> Message:
        """Note that an attempt starts now (so a crash during it counts it and sends again)."""
        with self._lock:
            self._record({"op": "attempt", "id": message_id, "n": self._messages[message_id].attempts + 1})
            return self._copy(message_id)

    def end(self, message_id: str, result: Sent, next_at: float | None) -> Message:
        """Record an attempt's ``result``: ``sent``, ``failed`` for good, or (with ``next_at``) tried again then."""
        with self._lock:
            op: dict[str, Any] = {"id": message_id, "detail": result.detail, "status": result.status}
            if result.outcome == "sent":
                op["op"] = "sent"
            elif next_at is not None:
                op.update(op="retry", next=next_at)
            else:
                op["op"] = "failed"
            self._record(op)
            return self._copy(message_id)

    # -- reading ----------------------------------------------------------------------------------------------
    def _copy(self, message_id: str) -> Message:
        return Message(**asdict(self._messages[message_id]))

    def get(self, message_id: str) -> Message | None:
        with self._lock:
            return self._copy(message_id) if message_id in self._messages else None

    def messages(self) -> list[Message]:
        """Every message kept, oldest first."""
        with self._lock:
            return sorted((self._copy(k) for k in self._messages), key=lambda m: m.time)

    def due(self, now: float) -> list[Message]:
        """Pending messages whose back-off has passed, oldest first."""
        return [m for m in self.messages() if m.status == "pending" and m.next_at <= now]

    def next_due(self) -> float | None:
        pending = [m.next_at for m in self.messages() if m.status == "pending"]
        return min(pending) if pending else None

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "sent": 0, "failed": 0, "rate_limited": 0}
        for m in self.messages():
            out[m.status] = out.get(m.status, 0) + 1
        return out


class Sender:
    """Delivers the outbox's due messages through ``notifier``, oldest first, one at a time: as a thread
    (:meth:`start`/:meth:`stop`, :meth:`wake` when one was queued) or synchronously (:meth:`deliver_due`,
    :meth:`drain`). ``gate`` is held by the loop while it looks and acts: messages are picked only between
    looks, so each goes after its decision was carried out. ``on_outcome`` hears of each message that finished."""

    def __init__(
        self,
        outbox: Outbox,
        notifier: Notifier,
        *,
        on_outcome: Callable[[Message], None] | None = None,
        gate: threading.Lock | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.notifier = notifier
        self.on_outcome = on_outcome
        self.gate = gate or threading.Lock()
        self.clock = clock
        self._one = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_until = 0.0

    # -- synchronous ------------------------------------------------------------------------------------------
    def deliver_due(self, until: float | None = None) -> int:
        """One attempt at each message due now (none begun after ``until``, a ``time.monotonic`` deadline, nor
        after a stop's flush time); returns the number of attempts."""
        with self._one:  # one deliverer at a time: a message is never posted twice at once
            with self.gate:
                due = self.outbox.due(self.clock())
            tried = 0
            for m in due:
                now = time.monotonic()
                if (until is not None and now >= until) or (self._stop.is_set() and now >= self._flush_until):
                    break
                self._attempt(m)
                tried += 1
            return tried

    def drain(self, timeout: float = 60.0) -> bool:
        """Deliver until nothing is pending (waiting out back-offs) or ``timeout`` passes; True if none is left."""
        deadline = time.monotonic() + timeout
        while True:
            self.deliver_due(until=deadline)
            next_at = self.outbox.next_due()
            if next_at is None:
                return True
            wait = next_at - self.clock()
            if time.monotonic() + max(wait, 0.0) >= deadline:
                return False
            if wait > 0:
                time.sleep(wait)

    def _attempt(self, message: Message) -> None:
        n = self.notifier.notify
        m = self.outbox.begin(message.id)
        result = self.notifier.deliver(m)
        retry = result.outcome == "failed" and result.retry and m.attempts <= n.retries
        next_at = self.clock() + min(n.backoff * 2 ** (m.attempts - 1), MAX_BACKOFF) if retry else None
        m = self.outbox.end(m.id, result, next_at)
        if m.status == "pending":
            log.warning("webhook %s (%s): %s; attempt %d of %d, next in %.0fs", m.event, m.id, result.detail,
                        m.attempts, n.retries + 1, (next_at or 0) - self.clock())  # fmt: skip
            return
        if m.status == "failed":
            log.error("webhook %s (%s) not delivered after %d attempt%s: %s", m.event, m.id, m.attempts,
                      "s" if m.attempts > 1 else "", result.detail)  # fmt: skip
        if self.on_outcome is not None:
            try:
                self.on_outcome(m)
            except Exception as exc:  # the message went (or failed for good) either way
                log.warning("recording the webhook outcome of %s failed: %s", m.id, one_line(exc))

    # -- the thread -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wolt-webhook-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, flush: float = 5.0) -> None:
        """Stop the thread; for ``flush`` seconds it still begins attempts at what is due (the rest goes when
        a sender starts again). Waits for an attempt under way (at most ``notify.timeout`` more)."""
        thread = self._thread
        if thread is None:
            return
        self._flush_until = time.monotonic() + flush
        self._stop.set()
        self._wake.set()
        thread.join(flush + self.notifier.notify.timeout + 5.0)
        self._thread = None

    @contextlib.contextmanager
    def running(self, flush: float = 5.0) -> Iterator[Sender]:
        self.start()
        try:
            yield self
        finally:
            self.stop(flush)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            pause = 0.0
            try:
                self.deliver_due()
            except Exception as exc:  # a full disk or a bug must not end the thread; the outbox keeps all
                log.error("webhook sender: %s", one_line(exc))
                pause = 1.0  # not a busy loop while it lasts
            if stopping:
                return
            next_at = self.outbox.next_due()
            wait = 5.0 if next_at is None else min(max(next_at - self.clock(), pause), 5.0)
            self._wake.wait(wait)
            self._wake.clear()
