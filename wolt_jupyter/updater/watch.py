"""Detecting candidates: the registry polled with a cursor that survives restarts.

The registry is the source of truth (a registry webhook may trigger an early :meth:`RegistryWatcher.poll`,
never replace it). One poll costs two calls: ``get_registered_model(name).aliases`` for the alias map (the
aliases that ``search_model_versions`` returns are empty) and
``search_model_versions("name='m' AND version_number > N", order_by=["version_number DESC"])`` for versions
newer than the cursor.

Exactly-once hand-over: a detected candidate is queued in the cursor file before :meth:`poll` returns it, and
leaves the queue only through :meth:`RegistryWatcher.done`, which the loop calls once it has recorded the
candidate's rollout state. A crash between the two returns the candidate again (nothing missed); after
``done`` it is never returned again, even if an alias moves back to it (never acted on twice).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wolt_jupyter._mlflow import configure, mlflow_client, translated_errors
from wolt_jupyter.errors import ConfigError
from wolt_jupyter.registry import quote_filter_value
from wolt_jupyter.revisions import write_atomic
from wolt_jupyter.updater.policy import Watch

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from wolt_jupyter.config import Settings

CURSOR_FILE = "cursor.json"
_RECHECK = 50  # in tag mode, versions seen without the tag are re-read (the tag may come later), newest 50


@dataclass
class Candidate:
    """A version to evaluate, and why it is one."""

    model: str
    version: str
    why: str
    run_id: str | None = None
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    created: float | None = None  # epoch seconds of registration

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


@dataclass
class Cursor:
    """What the watcher has seen: the newest version number, the alias map, the queue and what was handled."""

    model: str
    last_version: int = 0
    aliases: dict[str, str] = field(default_factory=dict)
    queue: list[dict[str, Any]] = field(default_factory=list)  # Candidate dicts, oldest first
    handled: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # not READY yet, or (tag mode) not tagged yet
    polls: int = 0
    last_poll: float | None = None

    @classmethod
    def read(cls, path: Path, model: str) -> Cursor | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            cursor = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"update cursor {path} is unreadable ({exc}); move it away to start afresh"
            ) from None
        if cursor.model != model:
            raise ConfigError(
                f"update cursor {path} follows model {cursor.model!r}, the policy watches {model!r}; "
                "move the file away to start afresh"
            )
        return cursor

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1, sort_keys=True), mode=0o600)


class RegistryWatcher:
    """Polls the registry for the candidates ``watch`` describes; the cursor lives at ``path``.

    On the very first poll (no cursor file yet) versions up to ``start_after`` are history, not candidates;
    ``start_after=None`` takes the newest version at that moment (only what is registered from now on counts).
    The service passes the deployed champion's version, so a challenger registered before it started is found.
    """

    def __init__(
        self,
        watch: Watch,
        path: str | Path,
        *,
        start_after: int | None = None,
        mlflow_client: MlflowClient | None = None,
    ) -> None:
        self.watch = watch
        self.path = Path(path)
        self.start_after = start_after
        self._client = mlflow_client
        self._settings: Settings | None = None

    def _c(self) -> MlflowClient:
        if self._client is None:
            self._settings = configure()
            self._client = mlflow_client(self._settings)
        return self._client

    @property
    def cursor(self) -> Cursor | None:
        return Cursor.read(self.path, self.watch.model)

    def poll(self) -> list[Candidate]:
        """Ask the registry; return every candidate not yet :meth:`done`, oldest first."""
        c = self._c()
        name = self.watch.model
        with translated_errors(self._settings):
            aliases = {k: str(v) for k, v in (c.get_registered_model(name).aliases or {}).items()}
            cursor = Cursor.read(self.path, name)
            if cursor is None:
                start = self.start_after if self.start_after is not None else self._newest(c)
                cursor = Cursor(model=name, last_version=start)
                if self.start_after is None:
                    cursor.aliases = dict(aliases)  # existing alias targets are history too
            floor = cursor.last_version
            if cursor.waiting:  # not READY (or not tagged) last time: list them again in the same call
                floor = min(floor, min(int(v) for v in cursor.waiting) - 1)
            listed = list(
                c.search_model_versions(
                    f"name='{quote_filter_value(name)}' AND version_number > {floor}",
                    order_by=["version_number DESC"],
                )
            )
            versions = {str(mv.version): mv for mv in listed}
            newer = [mv for mv in listed if int(mv.version) > cursor.last_version]
            if self.watch.alias is not None:
                target = aliases.get(self.watch.alias)
                if (
                    target is not None
                    and target != cursor.aliases.get(self.watch.alias)
                    and target not in versions
                ):
                    versions[target] = c.get_model_version(name, target)
        queued = {q["version"] for q in cursor.queue}
        handled = set(cursor.handled)
        waiting: list[str] = []
        found: list[Candidate] = []
        for v in sorted(versions, key=int):
            mv = versions[v]
            if v in handled or v in queued:
                continue
            status = str(mv.status or "")
            if status == "FAILED_REGISTRATION":
                continue
            why = self._why(mv, aliases, cursor)
            if status != "READY":
                if why is not None or self.watch.alias is None:
                    waiting.append(v)
                continue
            if why is None:
                if self.watch.tag is not None and int(v) > cursor.last_version - _RECHECK:
                    waiting.append(v)  # the tag may be set later
                continue
            found.append(
                Candidate(
                    model=name,
                    version=v,
                    why=why,
                    run_id=mv.run_id,
                    source=mv.source or "",
                    tags=dict(mv.tags or {}),
                    created=(mv.creation_timestamp or 0) / 1000.0 or None,
                )
            )
        if newer:
            cursor.last_version = max(cursor.last_version, *(int(mv.version) for mv in newer))
        cursor.aliases = aliases
        cursor.queue.extend(asdict(f) for f in found)
        cursor.waiting = sorted(set(waiting), key=int)[-_RECHECK:]
        cursor.polls += 1
        cursor.last_poll = time.time()
        cursor.write(self.path)  # every poll: the poll count and time tell that the watcher is alive
        return [Candidate(**q) for q in cursor.queue]

    def _why(self, mv: Any, aliases: dict[str, str], cursor: Cursor) -> str | None:
        """Why ``mv`` is a candidate under the watch rule, or None if it is not (yet) one."""
        w = self.watch
        v = str(mv.version)
        if w.alias is not None:
            if aliases.get(w.alias) != v:
                return None
            return f"alias {w.alias!r} now points to version {v}"
        if w.tag is not None:
            return f"version {v} carries tag {w.tag!r}" if w.tag_match(dict(mv.tags or {})) else None
        return f"new version {v}" if int(v) > cursor.last_version or v in cursor.waiting else None

    def done(self, version: str | int) -> None:
        """The loop has taken ``version`` over (its rollout state is recorded): never hand it out again."""
        cursor = Cursor.read(self.path, self.watch.model) or Cursor(model=self.watch.model)
        v = str(version)
        cursor.queue = [q for q in cursor.queue if q["version"] != v]
        if v not in cursor.handled:
            cursor.handled.append(v)
        cursor.write(self.path)

    def _newest(self, c: MlflowClient) -> int:
        name = quote_filter_value(self.watch.model)
        page = c.search_model_versions(f"name='{name}'", max_results=1, order_by=["version_number DESC"])
        return int(page[0].version) if page else 0
