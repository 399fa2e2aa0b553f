"""How big a deployment's response log is, what retention removed, and whether the disk under it is filling.

Read from the chunk index, the retention counters and the sizes of the log's files (no payload is decoded),
so the deployment card and ``%wolt_deployments`` can show it for every deployment at the cost of a few index
sums. A running runtime adds what only it knows: the requests it answered without a record, or refused,
while the disk was full (:meth:`LogSummary.add_runtime`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wolt_jupyter._display import Card
from wolt_jupyter.errors import ResponseStoreError

DISK_WARN_FRACTION = 0.05  # the writer's threshold too: warn before writes fail


@dataclass(repr=False)
class LogSummary(Card, title="Response log", css_class="wolt-response-log-card"):
    """One deployment's response log at a glance; its card is the ``%wolt_responses --info`` card."""

    deployment: str
    url: str
    records: int = 0
    bytes: int = 0
    oldest: float | None = None
    newest: float | None = None
    removed_records: int = 0
    removed_by_age: int = 0
    removed_by_size: int = 0
    retention: str | None = None
    disk_path: str | None = None
    disk_free: int | None = None
    disk_total: int | None = None
    on_disk: int | None = None  # every byte the log takes: database, WAL, spool (footprint.py)
    on_disk_parts: str | None = None
    on_full: str | None = None  # logging.on_full of the running runtime: serve or refuse
    unlogged: int | None = None  # requests it answered without their record (the disk was full)
    refused: int | None = None  # requests it refused (503) because their record could not be kept
    full_warning: str | None = None  # the runtime's own line while its log cannot write
    export: dict[str, Any] | None = None  # set by --export: what was written where

    @property
    def warning(self) -> str | None:
        """A readable line when the disk under the log is full (the runtime's) or nearly full."""
        from wolt_jupyter.units import human_bytes

        if self.full_warning:
            return self.full_warning
        if self.disk_free is None or not self.disk_total:
            return None
        if self.disk_free >= DISK_WARN_FRACTION * self.disk_total:
            return None
        return (
            f"the disk under {self.disk_path} is nearly full ({human_bytes(self.disk_free)} free of "
            f"{human_bytes(self.disk_total)}): the response log drops records (counted) once it is full; free "
            "space or lower logging.retention.max_bytes"
        )

    def short(self) -> str:
        """``12,345 rows, 3.2 MB (48 B/row), 100 removed``: the deployment card's and list's cell."""
        from wolt_jupyter.units import human_bytes

        text = f"{self.records:,} rows, {human_bytes(self.bytes)}"
        if self.records:
            text += f" ({self.bytes / self.records:.0f} B/row)"
        if self.on_disk is not None:
            text += f", {human_bytes(self.on_disk)} on disk"
        if self.unlogged:
            text += f", {self.unlogged:,} answered without a record"
        if self.refused:
            text += f", {self.refused:,} refused (disk full)"
        if self.removed_records:
            text += f", {self.removed_records:,} removed by retention"
        return text

    def _rows(self) -> list[tuple[str, Any]]:
        from wolt_jupyter.config import mask_url
        from wolt_jupyter.units import human_bytes

        def when(t: float | None) -> str | None:
            return None if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

        rows: list[tuple[str, Any]] = [
            ("store", mask_url(self.url)),
            ("rows", f"{self.records:,}"),
            (
                "size",
                f"{human_bytes(self.bytes)}"
                + (f" ({self.bytes / self.records:.0f} B/row)" if self.records else ""),
            ),
            (
                "on disk",
                None if self.on_disk is None else f"{human_bytes(self.on_disk)} ({self.on_disk_parts})",
            ),
            ("oldest", when(self.oldest)),
            ("newest", when(self.newest)),
            ("retention", self.retention),
            (
                "removed by retention",
                f"{self.removed_records:,} ({self.removed_by_age:,} by age, {self.removed_by_size:,} by size)",
            ),
        ]
        if self.on_full is not None:
            rows.append(
                (
                    "disk full",
                    f"logging.on_full: {self.on_full}; {self.unlogged or 0:,} answered without a record, "
                    f"{self.refused or 0:,} refused (since the runtime started)",
                )
            )
        if self.disk_free is not None and self.disk_total:
            rows.append(
                (
                    "disk free",
                    f"{human_bytes(self.disk_free)} of {human_bytes(self.disk_total)} ({self.disk_path})",
                )
            )
        if self.warning:
            rows.append(("warning", self.warning))
        if self.export:
            rows.append(
                (
                    "exported",
                    f"{self.export['rows']:,} rows to {self.export['path']} ({human_bytes(self.export['bytes'])})",
                )
            )
        return rows

    def _title(self) -> str:
        return f"Response log of {self.deployment}"

    def add_runtime(self, state: dict[str, Any]) -> None:
        """What a running runtime says of its log (``GET /admin/log``): its full-disk counters and warning."""
        self.on_full = state.get("on_full")
        self.unlogged = int(state.get("unlogged") or 0)
        self.refused = int(state.get("refused") or 0)
        self.full_warning = state.get("warning") if state.get("full") else None


_READ_ATTEMPTS = 5
_NEARLY_FULL = 64 * 2**20  # bytes free under which a read error may be the full disk's, and is tried again


def summary(
    deployment: str, url: str | None = None, retention: Any = None, spool_dir: Path | None = None
) -> LogSummary:
    """The log's size (its records, and every byte on disk with ``spool_dir``, by default the deployment's
    under the state dir), retention counters and disk space; an unreachable store raises ResponseStoreError."""
    from sqlalchemy import inspect

    from wolt_jupyter.config import settings
    from wolt_jupyter.responses.footprint import footprint
    from wolt_jupyter.responses.retention import log_size
    from wolt_jupyter.responses.store import (
        make_engine,
        normalize_url,
        sqlite_path,
        store_url,
        translate_errors,
    )

    cfg = settings()
    if url is None:
        url = store_url(deployment, cfg)
    if spool_dir is None:
        spool_dir = _spool_dir(Path(cfg.home), deployment)
    out = LogSummary(deployment=deployment, url=url)
    if retention is not None:
        out.retention = retention.describe()
    path = sqlite_path(normalize_url(url))
    disk = path.parent if path is not None else Path(cfg.home)
    while not disk.exists() and disk != disk.parent:
        disk = disk.parent
    try:
        usage = shutil.disk_usage(disk)
        out.disk_path, out.disk_free, out.disk_total = str(disk), usage.free, usage.total
    except OSError:
        pass
    if path is not None and not path.is_file():
        return out
    engine = make_engine(url, create_dir=False)
    try:
        for attempt in range(_READ_ATTEMPTS):
            try:
                with translate_errors(url, "read"), engine.connect() as conn:
                    if not inspect(conn).get_table_names():
                        return out
                    size = log_size(conn, deployment)
                    fp = footprint(conn, deployment, spool_dir)
                break
            except ResponseStoreError:
                # on a full disk SQLite cannot always rebuild its WAL index for a new reader while the
                # writer resets the WAL ("disk I/O error", seen once in CI): that passes; a lasting failure
                # is raised
                if (
                    attempt == _READ_ATTEMPTS - 1
                    or path is None
                    or out.disk_free is None
                    or out.disk_free > _NEARLY_FULL
                ):
                    raise
                time.sleep(0.2 * (attempt + 1))
                engine.dispose()
    finally:
        engine.dispose()
    out.records, out.bytes = size["records"], size["bytes"]
    out.oldest, out.newest = size["oldest"], size["newest"]
    out.removed_records = size["removed_records"]
    out.removed_by_age, out.removed_by_size = size["removed_by_age"], size["removed_by_size"]
    out.on_disk, out.on_disk_parts = fp.total, fp.parts()
    return out


def _spool_dir(home: Path, deployment: str) -> Path | None:
    """The deployment's spool under the state dir (None for a name no deployment can have)."""
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.revisions import deployment_dir

    try:
        return deployment_dir(home, deployment) / "spool"
    except InvalidArgument:
        return None
