"""Steering a rollout by hand: ``pause``, ``resume``, ``promote-now``, ``abort`` and ``approve``.

A person's command is a small file under the deployment's updater dir (``commands/``, 0600), written by any
front end (the magic, the CLI, the lab) from any process. The service applies it at its next look, under the
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wolt_jupyter._display import Card
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.revisions import write_atomic

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


class Commands:
    """The command files of one deployment's service: pending ones in ``folder``, applied ones in ``done/``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def done_dir(self) -> Path:
        return self.folder / "done"

    def put(self, command: str, by: str, now: float | None = None) -> Command:
        asked = time.time() if now is None else now
        # the name sorts in the order asked: commands are applied as they were given
        cmd = Command(f"{int(asked * 1e6):017d}-{uuid.uuid4().hex[:8]}", command, by, asked)
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
        finished = Command(cmd.id, cmd.command, cmd.by, cmd.asked, outcome, now)
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
        raise InvalidArgument(f"unknown rollout command {command!r}; one of {', '.join(COMMANDS)}")
    deployments.revision_store().record(name)  # NotFound first
    why = refusal(ServiceState.read(updater_dir(name) / STATE_FILE), command, name)
    if why is not None:
        raise InvalidArgument(why)
    by = by or asker("Python")
    commands = commands_of(name)
    cmd = commands.put(command, by)
    holder = service_holder(name)
    if holder is None and _apply_here(name):
        done = commands.outcome(cmd.id)
        return Steered(
            name, command, by, done.outcome if done else None, "this process (no service runs)", cmd.id
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        done = commands.outcome(cmd.id)
        if done is not None:
            return Steered(name, command, by, done.outcome, "the running service", cmd.id)
        time.sleep(0.1)
    return Steered(name, command, by, None, f"running: {holder}" if holder else "", cmd.id)


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

    st = ServiceState.read(updater_dir(name) / STATE_FILE)
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
