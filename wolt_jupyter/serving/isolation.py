"""Variant isolation: each live variant predicts in a thread of its own, behind a bounded queue.

A slow, hung or crashing variant must never delay another one, nor the event loop that answers health
checks. So the event loop never calls ``predict``: it appends a request to its variant's queue
(:meth:`VariantWorker.offer`, a deque append) and, once per loop iteration, wakes the variant's thread
(:meth:`VariantWorker.kick`). The thread takes every compatible request that has queued up (at most
``max_batch``: the micro-batch), runs one ``predict`` over them and hands the results back to the loop with
one ``call_soon_threadsafe``: one hop each way per micro-batch, not per request. Its next micro-batch starts
at the loop's next kick, so requests that arrive in one loop iteration are predicted together, as when the
loop predicted them itself.

Time limits and the watchdog run on the event loop, which is never blocked by a model now: every tick the
data plane calls :meth:`VariantWorker.expire`. A request waiting past its variant's timeout (queue and
predict together, ``variants[i].timeout``) is answered without waiting further (a challenger's is retried
on the champion, the champion's is a 504). A predict that runs longer than the timeout *abandons* its thread:
Python cannot stop a thread, so it is left to finish (or hang) on its own, its answers discarded, and a new
thread takes the queue. While :data:`MAX_HUNG` abandoned threads of a variant are still stuck, the variant is
*skipped*: its traffic goes to the champion (``wolt_variant_hung_threads``, ``wolt_variant_skipped``).

Threads, not worker processes. A previous attempt measured both and chose threads; measured again here
(2026-12-08, the 2-core development machine shared with other test runs, load average 5-6):

- one round trip loop -> worker -> loop for a 1-row micro-batch (uvloop, three rounds): 39-49 us through a
  thread (``SimpleQueue`` in, ``call_soon_threadsafe`` out) against 58-106 us through a worker process (a
  pipe and pickled arrays) on one pinned core; 21-45 against 63-104 us on two cores. A process also holds
  its own interpreter and model: 186 MB RSS once numpy, pandas and scikit-learn are imported, 242 MB with
  ``mlflow.pyfunc``, per variant;
- what a process would buy is freedom from the GIL, and the GIL is not what stalled main: a challenger that
  sleeps or waits releases it, one that computes in Python gives it up every switch interval. Main's p99
  beside a 0.3 s and beside a hung challenger, and the throughput cost of the hop, are in
  ``docs/architecture/serving.md`` (``benchmarks/isolation.py``, ``benchmarks/serving.py --before``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_HUNG = 4  # abandoned threads still stuck in predict before a variant is skipped
DEFAULT_QUEUE = 1024  # requests a variant may have waiting (not counting the micro-batch being predicted)
DEFAULT_TIMEOUT = 30.0  # seconds, when the spec gives a variant none


class _Thread:
    """One predict thread of a variant; ``batch``: the jobs it predicts now (None while it waits)."""

    __slots__ = ("abandoned", "batch", "started", "thread")

    def __init__(self) -> None:
        self.abandoned = False
        self.batch: list[Any] | None = None
        self.started = 0.0
        self.thread: threading.Thread | None = None


class VariantWorker:
    """One live variant's bounded queue and predict thread.

    ``predict(batch)`` runs in the thread and returns one result per job; ``deliver(batch, results, t0, t1)``
    is called in the thread after it (the data plane posts it to the event loop). ``compatible(a, b)`` says
    whether two jobs can share one predict. Jobs need ``deadline`` (perf_counter seconds). Every method but
    the thread's own is called on the event loop.
    """

    def __init__(
        self,
        variant: str,
        *,
        predict: Callable[[list[Any]], list[Any]],
        deliver: Callable[[list[Any], list[Any], float, float], None],
        compatible: Callable[[Any, Any], bool],
        capacity: int = DEFAULT_QUEUE,
        max_batch: int = 64,
    ) -> None:
        self.variant = variant
        self._predict, self._deliver, self._compatible = predict, deliver, compatible
        self.capacity, self.max_batch = capacity, max_batch
        self.queue: deque[Any] = deque()
        self._lock = threading.Lock()  # the queue's head, the running batch, the thread handover
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._idle = False  # the current thread waits on _wake
        self.current: _Thread | None = None
        self.hung: list[_Thread] = []  # abandoned threads whose predict has not returned
        self.abandoned_total = 0
        self.kick_pending = False  # a kick is scheduled on the loop for this iteration
        self.closing = False
        self.start_thread()

    # -- the event loop's side -------------------------------------------------------------------------------
    def depth(self) -> int:
        return len(self.queue)

    @property
    def skipped(self) -> bool:
        return len(self.hung) >= MAX_HUNG

    def offer(self, job: Any) -> bool:
        """Queue ``job``; False when the queue holds ``capacity`` jobs already (nothing queued)."""
        if len(self.queue) >= self.capacity:
            return False
        self.queue.append(job)  # atomic; the thread takes from the other end under the lock
        return True

    def kick(self) -> None:
        """Wake the thread if it waits (once per loop iteration: one hop per micro-batch). No lock: the
        thread re-checks the queue after saying it is idle, so a wake-up is never lost (at worst one too
        many, which finds the queue empty)."""
        self.kick_pending = False
        if self._idle:
            self._idle = False
            self._wake.put(None)

    def busy(self) -> bool:
        cur = self.current
        return bool(self.queue) or (cur is not None and cur.batch is not None)

    def expire(self, now: float, timeout: float) -> tuple[list[Any], bool]:
        """The jobs past their deadline (taken off the queue, or in the running micro-batch; the caller
        answers those not answered yet), and whether the running predict passed ``timeout`` and its thread
        was abandoned (all its jobs are then returned, and a new thread started unless the variant is now
        skipped)."""
        late: list[Any] = []
        abandoned = False
        with self._lock:
            q = self.queue
            while q and q[0].deadline <= now:
                late.append(q.popleft())
            cur = self.current
            batch = cur.batch if cur is not None else None
            if batch is not None and cur is not None:
                if now - cur.started > timeout:
                    cur.abandoned = True
                    self.hung.append(cur)
                    self.abandoned_total += 1
                    self.current = None
                    abandoned = True
                    late.extend(batch)
                else:
                    late.extend(j for j in batch if j.deadline <= now)
        if abandoned:
            log.error(
                "variant %s: a predict has run %.2f s, past its timeout of %g s; its thread is abandoned "
                "(%d still hung) and %s",
                self.variant, now - cur.started, timeout, len(self.hung),  # type: ignore[union-attr]
                "replaced" if not self.skipped else "the variant is skipped",
            )  # fmt: skip
            self.start_thread()
        return late, abandoned

    def start_thread(self) -> None:
        """A thread for the queue, if none runs, the variant is not skipped and not closing."""
        if self.current is not None or self.skipped or self.closing:
            return
        me = _Thread()
        me.thread = threading.Thread(
            target=self._run, args=(me,), name=f"wolt-predict[{self.variant}]", daemon=True
        )
        with self._lock:
            self.current = me
            self._idle = False
        me.thread.start()

    def close(self) -> None:
        """The thread predicts what is queued, then ends."""
        self.closing = True
        self._wake.put(None)  # if it waits; a busy thread finds the token later: harmless

    # -- the predict thread --------------------------------------------------------------------------------
    def _take(self, me: _Thread) -> list[Any]:
        """Under the lock: the next micro-batch, from the queue's head (order kept)."""
        q = self.queue
        if not q:
            return []
        first = q.popleft()
        batch = [first]
        while q and len(batch) < self.max_batch and self._compatible(first, q[0]):
            batch.append(q.popleft())
        me.batch, me.started = batch, time.perf_counter()
        return batch

    def _run(self, me: _Thread) -> None:
        wait = False
        while True:
            if wait:
                self._wake.get()
            with self._lock:
                if me.abandoned or self.current is not me:
                    return
                batch = self._take(me)
                if not batch:
                    if self.closing:
                        self.current = None
                        return
                    self._idle = wait = True
            if not batch:
                if self.queue and self._idle:  # queued after the check above, kicked before _idle was set
                    self._idle = wait = False
                continue
            t0 = me.started
            try:
                results = self._predict(batch)
            except BaseException as exc:  # the thread must survive anything a model does
                results = [(None, f"{type(exc).__name__}: {exc}", False)] * len(batch)
            t1 = time.perf_counter()
            with self._lock:
                if me.abandoned:  # the watchdog answered these already; a new thread has the queue
                    self.hung.remove(me)
                    log.warning(
                        "variant %s: an abandoned predict returned after %.2f s (%d still hung)",
                        self.variant, t1 - t0, len(self.hung),
                    )  # fmt: skip
                    return
                me.batch = None
                # the next micro-batch starts at the loop's kick after these results: what arrives meanwhile
                # (a loop iteration's requests) is predicted together, as when the loop predicted itself
                self._idle = wait = True
            try:
                self._deliver(batch, results, t0, t1)
            except Exception:  # e.g. the loop closed at shutdown
                log.debug("variant %s: results not delivered", self.variant, exc_info=True)
