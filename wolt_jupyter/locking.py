"""One owner per deployment: an OS file lock in the deployment's state dir, held by every state change.

Why a ``flock`` on a file: the kernel releases it when the holder dies (``kill -9``, a crashed kernel, a
reboot), so a lock can never be left stale, and it works across every process on the machine (two notebooks,
a terminal, the update service). Beside the lock the holder writes who it is, so a waiter that gives up can
name it.

The lock is re-entrant inside one process: the update service holds it for a whole step and calls
``deploy``/``traffic`` inside, which take it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from wolt_jupyter.errors import DeploymentBusy

LOCK_FILE = "lock"
HOLDER_FILE = "lock.holder"
DEFAULT_TIMEOUT_S = 60.0

_held: dict[tuple[str, int], int] = {}  # (lock path, thread) -> depth
_held_guard = threading.RLock()


def _holder(lock_dir: Path) -> str:
    try:
        info = json.loads((lock_dir / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('operation')}, since {since})"


@contextlib.contextmanager
def deployment_lock(
    lock_dir: Path, name: str, operation: str, timeout: float | None = None
) -> Iterator[None]:
    """Hold the exclusive lock of deployment ``name`` (its state dir ``lock_dir``) for ``operation``.

    Waits up to ``timeout`` seconds (``WOLT_LOCK_TIMEOUT``, default 60) and then raises :class:`DeploymentBusy`
    naming the holder. Re-entrant for the thread that holds it; other threads wait like
    other processes (a flock belongs to its open file, not to the process).
    """
    import fcntl

    if timeout is None:
        timeout = float(os.environ.get("WOLT_LOCK_TIMEOUT", DEFAULT_TIMEOUT_S))
    from wolt_jupyter.private import private_dir

    private_dir(lock_dir)
    path = str(lock_dir / LOCK_FILE)
    key = (path, threading.get_ident())
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DeploymentBusy(
                        f"deployment {name!r} is being changed by {_holder(lock_dir)}; waited {timeout:.0f} s "
                        "— try again when it is done (WOLT_LOCK_TIMEOUT sets the wait)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "operation": operation,
            "since": time.time(),
        }
        holder_path = lock_dir / HOLDER_FILE
        with contextlib.suppress(OSError):
            from wolt_jupyter.revisions import write_atomic

            write_atomic(holder_path, json.dumps(holder))  # 0600
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            with contextlib.suppress(OSError):
                holder_path.unlink()
    finally:
        os.close(fd)  # closing the descriptor releases the flock
