"""A supervised process's log file (``runtime.log``, the update service's log), rotated by size.

The supervisor makes the file the process's stdout and stderr and names it in :data:`LOG_ENV`. The process
then calls :func:`rotate_by_size` once logging is set up: before a record is written, a file past the limit
becomes ``<log>.1`` (the previous ``.1`` is dropped) and output goes on in a fresh file. The new file replaces
descriptors 1 and 2 themselves, so tracebacks, ``print`` and native libraries' output follow it too. At most
twice the limit stays on disk, whatever a client makes the process log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

LOG_ENV = "WOLT_LOG_FILE"  # the file stdout and stderr are (set by the supervisor)
MAX_BYTES_ENV = "WOLT_LOG_MAX_BYTES"
DEFAULT_MAX_BYTES = 10 * 2**20


class SizeRotation(logging.Filter):
    """A filter that passes every record and rotates the log file first when it is past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__()
        self.path, self.max_bytes = path, max_bytes
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if os.fstat(2).st_size >= self.max_bytes:
                self.rotate()
        except OSError:  # a full disk or a vanished file must not stop the process logging
            pass
        return True

    def rotate(self) -> None:
        with self._lock:
            if os.fstat(2).st_size < self.max_bytes:  # another thread rotated meanwhile
                return
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.dup2(fd, 1)
                os.dup2(fd, 2)
            finally:
                os.close(fd)


def rotate_by_size() -> SizeRotation | None:
    """Rotate the log named in :data:`LOG_ENV` by size (:data:`MAX_BYTES_ENV`, default 10 MiB) from now on;
    None (nothing done) when stderr is not that file."""
    name = os.environ.get(LOG_ENV)
    if not name:
        return None
    path = Path(name)
    try:
        ours = os.fstat(2)
        theirs = path.stat()
        max_bytes = int(os.environ.get(MAX_BYTES_ENV) or DEFAULT_MAX_BYTES)
    except (OSError, ValueError):
        return None
    if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino) or max_bytes <= 0:
        return None
    rotation = SizeRotation(path, max_bytes)
    for handler in logging.getLogger().handlers:
        handler.addFilter(rotation)
    return rotation
