"""What the undeploy card reports, counted over every process a deployment ran in, not only the last.

``shutdown.json`` in the deployment's state dir holds the totals: rows written, dropped, sampled out and
replayed by the response log, shadow copies discarded. A runtime reads what earlier processes of the
deployment counted when it starts (after a crash the supervisor restarted, an ``up`` after a reboot), adds its
own and rewrites the file every few seconds and at shutdown; a crash loses at most that interval. The local
backend reads the file once the undeploy has stopped the runtime, then removes it, so a later deployment of
the same name counts from zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wolt_jupyter.revisions import deployment_dir, write_atomic

FILE = "shutdown.json"
EVERY_S = 5.0  # how often a running runtime saves its counts
# counts that add up over processes; the others (``deferred``: rows left in the spool) are the last process's
SUMMED = ("written", "dropped", "unlogged", "sampled_out", "replayed", "removed", "shadow_discarded")


def tally_path(state_dir: Path, name: str) -> Path:
    return deployment_dir(state_dir, name) / FILE


def read_tally(path: Path) -> dict[str, Any]:
    """The counts saved at ``path``; {} when there are none (or they are unreadable)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class Tally:
    """This process's counts on top of what earlier processes of the deployment saved."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.path = tally_path(state_dir, name)
        self.before = read_tally(self.path)

    def totals(self, now: dict[str, Any]) -> dict[str, Any]:
        out = dict(now)
        for key in SUMMED:
            out[key] = int(self.before.get(key) or 0) + int(now.get(key) or 0)
        return out

    def save(self, now: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(self.totals(now)))  # 0600, never half-written


def counts(plane: Any) -> dict[str, Any]:
    """A data plane's counts so far, in the shape its ``close()`` returns."""
    return {
        "shadow_discarded": plane.shadow_backlog_discarded,
        **(plane.writer.stats() if plane.writer else {}),
    }
