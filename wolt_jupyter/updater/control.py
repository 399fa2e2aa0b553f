"""Steering a rollout by hand: ``pause``, ``resume``, ``promote-now``, ``abort`` and ``approve``.

A person's command (:mod:`.commands`) is a small file under the deployment's updater dir (``commands/``, 0600), written by any
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
from dataclasses import asdict, dataclass
from typing import Any

from wolt_jupyter._display import Card
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.untrusted import shown_value
from wolt_jupyter.updater.commands import (
    COMMANDS,
    ClusterCommands,
    Command,
    Commands,
    commands_of,
    refusal,
)

WAIT_S = 10.0  # how long :func:`steer` waits for the service to apply a command


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
    from wolt_jupyter.processes import process_gone
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
