"""Whether the response log can write for lack of space, and the one line that says so.

The writer tells it about every write that failed for a full disk and every one that went through; it keeps
two flags (the spool cannot take records: answers have no durable record; the database cannot: records wait
in the spool) and a warning for logs, cards and ``--info``: said once when an episode starts, once when it ends.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_FULL_TEXT = (
    "disk is full",
    "no space left",
    "could not extend file",
    "disk full",
    "database or disk is full",
)


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC, SQLite's SQLITE_FULL and PostgreSQL's "could not extend file" (wrapped or not)."""
    seen: BaseException | None = exc
    for _ in range(4):  # SQLAlchemy wraps the driver's error in .orig
        if seen is None:
            break
        if getattr(seen, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    text = str(exc).lower()
    return any(s in text for s in _FULL_TEXT)


class DiskWatch:
    """The state of the disk under one log (``where``: the SQLite file's folder or the spool's)."""

    def __init__(self, where: Path | None, name: str, warn_fraction: float, has_spool: bool) -> None:
        self.where = where
        self.has_spool = has_spool  # without one, a record the database cannot take is lost
        self.name = name  # the masked store URL, for log lines
        self.warn_fraction = warn_fraction
        self.policy = "serve"  # logging.on_full, for the wording: "serve" answers, "refuse" says 503
        self.spool_full = False
        self.database_full = False
        self.since: float | None = None  # when the current episode began (time.time())
        self.episodes = 0
        self.warning: str | None = None

    @property
    def full(self) -> bool:
        """The log cannot write a record for lack of space (spool or database)."""
        return self.spool_full or self.database_full

    def usage(self) -> dict[str, Any]:
        """Free and total bytes of the file system under the log, and the warning."""
        out: dict[str, Any] = {"path": None, "free": None, "total": None, "warning": self.warning}
        if self.where is None:
            return out
        out["path"] = str(self.where)
        try:
            usage = shutil.disk_usage(self.where)
        except OSError:
            return out
        out.update(free=usage.free, total=usage.total)
        return out

    def failed(self, part: str) -> None:
        """A write to ``part`` ("spool" or "database") failed for a full disk."""
        if getattr(self, f"{part}_full"):  # known: a refused request stays cheap while the disk is full
            return
        if not self.full:
            self.since = time.time()
            self.episodes += 1
        setattr(self, f"{part}_full", True)
        self.check()

    def succeeded(self, part: str) -> None:
        """A write to ``part`` went through: that part is no longer full."""
        if not getattr(self, f"{part}_full"):
            return
        setattr(self, f"{part}_full", False)
        if not self.full and self.since is not None:
            log.warning(
                "response log %s: space under %s is back, the log writes again (full for %.1f s)",
                self.name,
                self.where or "the response store",
                time.time() - self.since,
            )
            self.since = None
        self.check()

    def check(self) -> None:
        """Set the warning (full, nearly full, or none) and log it when it changes."""
        from wolt_jupyter.units import human_bytes

        d = self.usage()
        where = d["path"] or "the response store"
        if self.full:
            message = f"the disk under {where} is full: {self._consequence()}; free space or lower logging.retention.max_bytes"
        elif d["free"] is not None and d["total"] and d["free"] < self.warn_fraction * d["total"]:
            what = (
                "refuse requests (503)"
                if self.policy == "refuse"
                else "answer requests without their records (counted)"
            )
            message = (
                f"the disk under {where} is nearly full ({human_bytes(d['free'])} free of {human_bytes(d['total'])}); "
                f"the response log will {what} when it is full: free space or lower logging.retention.max_bytes"
            )
        else:
            message = None
        if message != self.warning and message is not None and (self.warning is None or self.full):
            log.warning("response log %s: %s", self.name, message)
        self.warning = message

    def _consequence(self) -> str:
        if self.spool_full or not self.has_spool:
            if self.policy == "refuse":
                return "requests are refused with 503 and Retry-After until their records can be written (wolt_response_log_refused_total)"
            return "requests are answered without their response-log records, each one counted (wolt_response_log_unlogged_total)"
        return "records wait in the spool (on disk, not lost) and are written when space returns"
