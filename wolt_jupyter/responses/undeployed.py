"""Retention for the logs of undeployed deployments.

An undeployed deployment's log stays readable, but no writer of its own runs any more, so nothing trimmed it:
a log kept "14 days" was kept for ever. Every local runtime now also trims, every ``UNDEPLOYED_EVERY_S``, the
logs of the deployments of its state dir that are no longer deployed, by the retention of their last spec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

UNDEPLOYED_EVERY_S = 600.0  # nothing is written to these logs: only their age moves, slowly


def trim_undeployed(home: Path, now: float | None = None, skip: Collection[str] = ()) -> dict[str, int]:
    """Enforce retention on the log of every undeployed deployment under ``home`` (one whose record an undeploy
    set aside, and none since), but those in ``skip``; records removed by name."""
    from wolt_jupyter.responses.retention import Retention, enforce
    from wolt_jupyter.responses.store import default_store_url, make_engine, normalize_url, sqlite_path
    from wolt_jupyter.revisions import RevisionStore, deployments_root

    store = RevisionStore(home)
    root = deployments_root(home)
    removed: dict[str, int] = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        name = folder.name
        # deployed: its own runtime keeps its log; never deployed here (a runtime started by hand): not ours
        if name in skip or store.exists(name) or not (folder / "removed").is_dir():
            continue
        try:
            url = store.response_store(name) or default_store_url(name, home)
            path = sqlite_path(normalize_url(url))
            if path is not None and not path.is_file():
                continue
            revisions = store.revisions(name)
            spec = store.spec(name, revisions[-1]) if revisions else None
            retention = Retention.of(spec.logging.retention if spec else None)
            engine = make_engine(url, create_dir=False)
            try:
                removed[name] = enforce(engine, name, retention, now, spool_dir=folder / "spool").records
            finally:
                engine.dispose()
        except Exception as exc:  # one unreadable log must not keep the others from being trimmed
            log.warning("retention of the undeployed %s's response log failed: %s", name, exc)
    return removed


class UndeployedRetention:
    """Calls :func:`trim_undeployed` at most every ``every`` seconds (a writer's ``also_maintain``)."""

    def __init__(self, home: Path, skip: Collection[str] = (), every: float = UNDEPLOYED_EVERY_S) -> None:
        self.home, self.skip, self.every = Path(home), tuple(skip), every
        self._last: float | None = None

    def __call__(self, now: Any = None) -> None:
        if self._last is not None and time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        trim_undeployed(self.home, now, self.skip)
