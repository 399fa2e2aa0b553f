"""Steering a rollout by hand: ``pause``, ``resume``, ``promote-now``, ``abort`` and ``approve``.

A person's command is a small file under the deployment's updater dir (``commands/``, 0600), written by any
front end (the magic, the CLI, the lab) from any process — or, for a service running in a pod, a key of its
ConfigMap ``NAME-updater-control`` (:class:`ClusterCommands`). The service applies it at its next look, under the
deployment's lock, and keeps it in the history like any decision (:meth:`UpdateService.tick`). A file, not a
call into the service: the service may run in the background process, in a notebook's thread or in a
terminal, and a command survives a restart of either side. When no service runs, :func:`steer` applies the
command itself with the policy the background service last ran with (the same code path), else it waits for
the service's next start. Each applied command leaves its outcome under ``commands/done/`` for the asker.
"""

from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from wolt_jupyter._display import Card
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.revisions import write_atomic
from wolt_jupyter.untrusted import shown_value

COMMANDS = ("pause", "resume", "promote-now", "abort", "approve")
COMMANDS_DIR = "commands"
KEEP_DONE = 50  # outcomes kept for askers to read; older ones are removed
WAIT_S = 10.0  # how long :func:`steer` waits for the service to apply a command


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


# -- asking ----------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class Steered(Card, title="Rollout", css_class="wolt-steer"):
    """What became of a command: applied (with the service's words), or queued for the service's next look."""

    deployment: str
    command: str
    by: str
    outcome: str | None
    applied_by: str  # "the running service", "this process (no service runs)", or "" while queued
    id: str

    @property
    def message(self) -> str:
        if self.outcome is not None:
            return f"{self.deployment}: {self.outcome}"
        return (
            f"{self.deployment}: {self.command} asked; the update service applies it at its next look "
            f"({self.applied_by or 'none runs now: at its next start'})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "applied": self.outcome is not None, "message": self.message}

    def _title(self) -> str:
        return f"Rollout of {self.deployment}"

    def _rows(self) -> list[tuple[str, Any]]:
        return [("command", self.command), ("asked by", self.by), ("outcome", self.outcome or self.message)]


def asker(via: str) -> str:
    """Who asks, for the history: the OS user and the front end (``alice via %wolt_autoupdate``)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a container without one: the uid says enough
        user = f"uid {os.getuid()}"
    return f"{user} via {via}"


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


def steer(name: str, command: str, *, by: str | None = None, wait: float = WAIT_S) -> Steered:
    """Ask the update service of deployment ``name`` to ``pause``, ``resume``, ``promote-now``, ``abort`` or
    ``approve`` its rollout. Refused at once (:class:`InvalidArgument`) when it cannot apply; else written for
    the service, and waited for up to ``wait`` seconds. With no service running, applied here with the policy
    the background service last ran with."""
    from wolt_jupyter import deployments
    from wolt_jupyter.updater.history import updater_dir
    from wolt_jupyter.updater.service import STATE_FILE, ServiceState

    if command not in COMMANDS:
        raise InvalidArgument(f"unknown rollout command {shown_value(command)}; one of {', '.join(COMMANDS)}")
    deployments.revision_store().record(name)  # NotFound first
    by = by or asker("Python")
    found = ClusterCommands.find(name)
    if found is not None:  # the service runs in a pod: the same command through its ConfigMap
        return _steer_remote(*found, name, command, by, wait)
    why = refusal(ServiceState.read(updater_dir(name) / STATE_FILE), command, name)
    if why is not None:
        raise InvalidArgument(why)
    commands = commands_of(name)
    cmd = commands.put(command, by)
    holder = service_holder(name)
    if holder is None and _apply_here(name):
        done = commands.outcome(cmd.id)
        return Steered(
            name, command, by, done.outcome if done else None, "this process (no service runs)", cmd.id
        )
    queued = f"running: {holder}" if holder else ""
    return _awaited(commands, cmd, name, wait, "the running service", queued, poll=0.1)


def _awaited(
    channel: Commands | ClusterCommands, cmd: Command, name: str, wait: float, by_whom: str, queued: str,
    poll: float,
) -> Steered:  # fmt: skip
    """What became of ``cmd`` within ``wait`` seconds: its outcome, applied ``by_whom``, else still ``queued``."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        done = channel.outcome(cmd.id)
        if done is not None:
            return Steered(name, cmd.command, cmd.by, done.outcome, by_whom, cmd.id)
        time.sleep(poll)
    return Steered(name, cmd.command, cmd.by, None, queued, cmd.id)


def _steer_remote(
    remote: ClusterCommands, published: dict[str, Any] | None, name: str, command: str, by: str, wait: float
) -> Steered:
    from wolt_jupyter.updater.service import ServiceState

    why = refusal(ServiceState(**published) if published else ServiceState(), command, name)
    if why is not None:
        raise InvalidArgument(why)
    cmd = remote.put(command, by)
    queued = f"in the cluster, through ConfigMap {remote.name}"
    return _awaited(remote, cmd, name, wait, "the service in the cluster", queued, poll=0.25)


def service_holder(name: str) -> str | None:
    """Who runs the service of ``name`` (the holder of its service lock), None when no service runs. Read, not
    tried: a try, even brief, could make a service starting just then give up (its own try waits for nothing)."""
    from wolt_jupyter.locking import HOLDER_FILE
    from wolt_jupyter.serving.supervisor import process_gone
    from wolt_jupyter.updater.history import updater_dir

    try:
        info = json.loads((updater_dir(name) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or process_gone(pid):  # a holder killed with -9 leaves its file behind
        return None
    return f"pid {pid} ({info.get('operation')})"


def _apply_here(name: str) -> bool:
    """Apply the pending commands in this process when no service runs, with the policy kept by the last
    background service; False when there is none, or a service started meanwhile (it applies them)."""
    from wolt_jupyter.errors import DeploymentBusy
    from wolt_jupyter.locking import deployment_lock
    from wolt_jupyter.updater.history import updater_dir
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import DeploymentActions, policy_path
    from wolt_jupyter.updater.service import UpdateService

    path = policy_path(name)
    try:
        policy = Policy.load(str(path))
    except Exception:  # none kept, or unreadable here (a secret_env not set): the service applies it
        return False
    try:
        with deployment_lock(updater_dir(name), name, "rollout command", timeout=0):
            from wolt_jupyter import deployments

            with deployments.lock(name, "rollout command"):
                service = UpdateService(policy, DeploymentActions(policy))
                service.steer()
            service.deliver(timeout=5.0)  # its messages; what is not sent goes at the service's next start
    except DeploymentBusy:
        return False
    return True


def rollout_status(name: str) -> dict[str, Any] | None:
    """The rollout as the lab shows it: the candidate, its step, why it is paused or which step waits for
    approval, and the commands that apply now; None before a first candidate."""
    from wolt_jupyter.updater.history import updater_dir
    from wolt_jupyter.updater.service import STATE_FILE, ServiceState

    found = ClusterCommands.find(name)
    published = found[1] if found is not None else None
    st = ServiceState(**published) if published else ServiceState.read(updater_dir(name) / STATE_FILE)
    rollout = st.state
    if rollout is None:
        return None
    return {
        "candidate": rollout.candidate,
        "champion": rollout.champion,
        "step": st.label(rollout.step),
        "outcome": rollout.outcome,
        "paused": st.paused["reason"] if st.paused else None,
        "waiting_for": st.waiting_for,
        "commands": [c for c in COMMANDS if refusal(st, c, name) is None],
    }
