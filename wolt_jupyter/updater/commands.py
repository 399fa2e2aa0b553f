"""The channel between people and the update service: rollout commands and their outcomes.

A command is a small file under the deployment's updater dir (``commands/``, 0600), written by any front end
from any process, or, for a service running in a pod, a key of its ConfigMap ``NAME-updater-control``
(:class:`ClusterCommands`). The service reads them at its next look (:meth:`UpdateService.tick`) and leaves each
outcome for the asker. Asking lives in :mod:`.control`; this module is what both sides share.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.revisions import write_atomic

COMMANDS = ("pause", "resume", "promote-now", "abort", "approve")
COMMANDS_DIR = "commands"
KEEP_DONE = 50  # outcomes kept for askers to read; older ones are removed


@dataclass(frozen=True)
class Command:
    """One request of a person: what, who asked and through what (``by``), when; ``outcome`` once applied."""

    id: str
    command: str
    by: str
    asked: float
    outcome: str | None = None
    applied: float | None = None


def _asked(command: str, by: str, now: float | None) -> Command:
    asked = time.time() if now is None else now
    # the id sorts in the order asked: commands are applied as they were given
    return Command(f"{int(asked * 1e6):017d}-{uuid.uuid4().hex[:8]}", command, by, asked)


class Commands:
    """The command files of one deployment's service: pending ones in ``folder``, applied ones in ``done/``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def done_dir(self) -> Path:
        return self.folder / "done"

    def put(self, command: str, by: str, now: float | None = None) -> Command:
        cmd = _asked(command, by, now)
        write_atomic(self.folder / f"{cmd.id}.json", json.dumps(asdict(cmd)), mode=0o600)
        return cmd

    def pending(self) -> list[Command]:
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                out.append(Command(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)  # not a command of ours (a torn write is never renamed in)
        return out

    def any_pending(self) -> bool:
        """Cheap enough for every tenth of a second of the service's sleep."""
        try:
            return any(e.name.endswith(".json") for e in os.scandir(self.folder))
        except OSError:
            return False

    def done(self, cmd: Command, outcome: str, now: float) -> Command:
        """Keep the outcome for the asker, then drop the pending file (a crash in between applies it again,
        which each command tolerates: a second pause finds the rollout paused)."""
        finished = replace(cmd, outcome=outcome, applied=now)
        write_atomic(self.done_dir / f"{cmd.id}.json", json.dumps(asdict(finished)), mode=0o600)
        (self.folder / f"{cmd.id}.json").unlink(missing_ok=True)
        for old in sorted(self.done_dir.glob("*.json"))[:-KEEP_DONE]:
            old.unlink(missing_ok=True)
        return finished

    def outcome(self, cmd_id: str) -> Command | None:
        try:
            return Command(**json.loads((self.done_dir / f"{cmd_id}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


CONTROL_SUFFIX = "-updater-control"  # the ConfigMap between askers and a service in a pod
CONTROL_ENV = "WOLT_UPDATER_CONTROL"  # set in the service's pod: take commands from that ConfigMap
_POLL_S = 1.0  # how often a service in a pod asks the API whether a command came


class ClusterCommands:
    """The same channel for a service in a pod, whose state dir nobody else reaches: the ConfigMap
    ``NAME-updater-control`` (rendered with the service). A pending command is the key ``cmd.<id>``; the
    service swaps it for ``done.<id>`` in one merge patch, and keeps its state (what refusals and the lab read)
    in ``state`` after each look. Merge patches, so an asker and the service writing at once lose nothing."""

    def __init__(self, cluster: Any, namespace: str, deployment: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.name = f"{deployment}{CONTROL_SUFFIX}"
        self._published: str | None = None
        self._polled = (-1.0, False)  # (when, whether a command was pending)

    @classmethod
    def find(cls, deployment: str) -> tuple[ClusterCommands, dict[str, Any] | None] | None:
        """The channel of ``deployment``'s service and the state it last published, if the service runs in the
        cluster (its ConfigMap exists); None otherwise. One read of the ConfigMap for both."""
        from wolt_jupyter import deployments

        where = deployments.cluster_of(deployment)
        if where is None:
            return None
        channel = cls(where[0], where[1], deployment)
        obj = channel._object()
        return (channel, _state_of(obj.get("data") or {})) if obj is not None else None

    def _object(self) -> dict[str, Any] | None:
        return self.cluster.get("v1", "ConfigMap", self.name, namespace=self.namespace)

    def _data(self) -> dict[str, str]:
        obj = self._object()
        if obj is None:
            raise InvalidArgument(f"ConfigMap {self.name} is gone from namespace {self.namespace}: apply the "
                                  "update service's manifests again (`wolt-jupyter updater render`)")  # fmt: skip
        return obj.get("data") or {}

    def _patch(self, data: dict[str, str | None]) -> None:
        self.cluster.merge_patch("v1", "ConfigMap", self.name, {"data": data}, namespace=self.namespace)

    def put(self, command: str, by: str, now: float | None = None) -> Command:
        cmd = _asked(command, by, now)
        self._patch({f"cmd.{cmd.id}": json.dumps(asdict(cmd))})
        return cmd

    def pending(self) -> list[Command]:
        data = self._data()
        out = []
        for key in sorted(k for k in data if k.startswith("cmd.")):
            try:
                out.append(Command(**json.loads(data[key])))
            except (ValueError, TypeError):
                self._patch({key: None})  # not a command of ours
        return out

    def any_pending(self) -> bool:
        """Asked every tenth of a second of the service's sleep: the API is asked once a second."""
        when, pending = self._polled
        if time.monotonic() - when >= _POLL_S:
            try:
                pending = any(k.startswith("cmd.") for k in self._data())
            except Exception:  # the API away: the next look says so
                pending = False
            self._polled = (time.monotonic(), pending)
        return pending

    def done(self, cmd: Command, outcome: str, now: float) -> Command:
        finished = replace(cmd, outcome=outcome, applied=now)
        old = sorted(k for k in self._data() if k.startswith("done."))[: -(KEEP_DONE - 1) or None]
        self._patch({f"cmd.{cmd.id}": None, f"done.{cmd.id}": json.dumps(asdict(finished)),
                     **dict.fromkeys(old)})  # fmt: skip
        self._polled = (-1.0, False)
        return finished

    def outcome(self, cmd_id: str) -> Command | None:
        raw = self._data().get(f"done.{cmd_id}")
        try:
            return Command(**json.loads(raw)) if raw else None
        except (ValueError, TypeError):
            return None

    def publish(self, state: dict[str, Any]) -> None:
        """The service's state for askers elsewhere, when it changed."""
        text = json.dumps(state, sort_keys=True)
        if text != self._published:
            self._patch({"state": text})
            self._published = text


def _state_of(data: dict[str, str]) -> dict[str, Any] | None:
    """The service's state as it published it in its ConfigMap's ``data``."""
    raw = data.get("state")
    return json.loads(raw) if raw else None


def commands_of(deployment: str, home: Path | None = None) -> Commands:
    from wolt_jupyter.updater.history import updater_dir

    return Commands(updater_dir(deployment, home) / COMMANDS_DIR)


def refusal(st: Any, command: str, deployment: str) -> str | None:
    """Why ``command`` cannot apply to the service state ``st`` (a :class:`ServiceState`), with what can; None
    when it can. One rule for the asker (refused at once) and the service (the state may have moved since)."""
    rollout = st.state
    if rollout is None or rollout.outcome is not None:
        last = (
            f" (the last one, version {rollout.candidate}, was {rollout.outcome.replace('_', ' ')})"
            if rollout
            else ""
        )
        return f"no rollout of {deployment!r} is in flight{last}: nothing to {command}"
    at = st.label(rollout.step)
    if command == "pause" and st.paused:
        return f"the rollout of {deployment!r} is already paused at {at}: {st.paused['reason']}"
    if command == "resume" and not st.paused:
        waiting = st.waiting_for
        extra = f"; it waits for approval before {waiting}: --approve" if waiting else ""
        return f"the rollout of {deployment!r} is not paused (it is at {at}){extra}"
    if command == "approve" and not st.waiting_for:
        return f"the rollout of {deployment!r} is not waiting for approval (it is at {at})"
    return None
