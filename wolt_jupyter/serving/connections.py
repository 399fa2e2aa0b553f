"""The open connections of one listener, and which of them are idle, oldest idle first.

At the cap a new client is not refused while an idle keep-alive is open: the connection idle the longest is
closed for it (nginx does the same with its reusable connections). Only when every open connection is busy
(a request being read, or answers owed) is the new one refused. A connection just accepted counts as idle
until its first byte: a socket that never sends anything holds nothing anyone is waiting for.

Idle bookkeeping is two dict operations a request; the oldest idle connection is the first key of an
insertion-ordered dict.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger(__name__)
FD_RESERVE = 64  # descriptors kept for everything but client connections: models, logs, the response store


class Closable(Protocol):
    def close_idle(self) -> None: ...


class Connections:
    """Open connections (at most ``limit``) and the idle ones among them in the order they became idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[Closable] = set()
        self.idle: dict[Closable, None] = {}
        self.evicted = 0  # idle connections closed to admit a new client

    def __len__(self) -> int:
        return len(self.open)

    def __iter__(self) -> Iterator[Closable]:
        return iter(list(self.open))  # a copy: closing a connection changes the set

    def admit(self, conn: Closable) -> bool:
        """Take ``conn`` (idle until it sends); at the cap close the oldest idle one first. False: every open
        connection is busy, refuse ``conn``."""
        if len(self.open) >= self.limit:
            if not self.idle:
                return False
            oldest = next(iter(self.idle))
            self.discard(oldest)
            self.evicted += 1
            oldest.close_idle()
        self.open.add(conn)
        self.idle[conn] = None
        return True

    def busy(self, conn: Closable) -> None:
        """``conn`` is reading a request or owes answers: not to be closed for a newcomer."""
        self.idle.pop(conn, None)

    def rest(self, conn: Closable) -> None:
        """``conn`` has nothing in progress again: the newest idle connection."""
        if conn in self.open:
            self.idle.pop(conn, None)
            self.idle[conn] = None

    def discard(self, conn: Closable) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)


def fit_descriptors(max_connections: int) -> int:
    """Raise this process's open-file limit towards what ``max_connections`` needs (up to the hard limit);
    returns the connection cap the limit allows. A cap above the descriptors would make ``accept`` fail
    (EMFILE) before the cap is reached, and then no idle connection is ever closed for a new client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(1, soft - FD_RESERVE)
        log.warning(
            "open-file limit %d allows %d connections, not max_connections=%d", soft, fitted, max_connections
        )
        return fitted
    return max_connections
