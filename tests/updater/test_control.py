"""The parts of steering a rollout that need no deployment: the command files (private, in the order asked,
each applied once), the rule that refuses what cannot apply, the policy fields, and the front ends' argument
checks. The rollouts themselves are steered on real deployments in test_steering_live.py."""

from __future__ import annotations

import stat
from dataclasses import asdict
from pathlib import Path

import pytest

from wolt_jupyter.errors import InvalidArgument, PolicyError
from wolt_jupyter.updater.commands import Commands, refusal
from wolt_jupyter.updater.control import steer
from wolt_jupyter.updater.decide import RolloutState
from wolt_jupyter.updater.policy import parse
from wolt_jupyter.updater.service import ServiceState


def test_commands_are_private_files_taken_in_the_order_asked(tmp_path: Path) -> None:
    commands = Commands(tmp_path / "commands")
    first = commands.put("pause", "alice via %wolt_autoupdate", now=100.0)
    second = commands.put("resume", "bob via the lab", now=101.0)
    assert [c.command for c in commands.pending()] == ["pause", "resume"] and commands.any_pending()
    files = list((tmp_path / "commands").glob("*.json"))
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE((tmp_path / "commands").stat().st_mode) == 0o700
    done = commands.done(first, "paused by hand (alice via %wolt_autoupdate)", 102.0)
    assert commands.outcome(first.id) == done and done.applied == 102.0
    assert [c.id for c in commands.pending()] == [second.id] and commands.outcome(second.id) is None
    commands.done(second, "resumed", 103.0)
    assert commands.pending() == [] and not commands.any_pending()


def in_flight(**over) -> ServiceState:
    rollout = RolloutState("2", "1", step=1, step_started=0.0)
    st = ServiceState(
        rollout=asdict(rollout), candidate={}, applied=1, labels=["shadow", "canary 5%", "canary 100%"]
    )
    for k, v in over.items():
        setattr(st, k, v)
    return st


@pytest.mark.parametrize(
    ("state", "command", "refused"),
    [
        (ServiceState(), "pause", "no rollout of 'eta' is in flight: nothing to pause"),
        (
            ServiceState(rollout=asdict(RolloutState("2", "1", 3, 0.0, outcome="rolled_back"))),
            "abort",
            "the last one, version 2, was rolled back",
        ),
        (in_flight(), "pause", None),
        (in_flight(), "abort", None),
        (in_flight(), "promote-now", None),
        (in_flight(), "resume", "is not paused (it is at canary 5%)"),
        (in_flight(), "approve", "is not waiting for approval (it is at canary 5%)"),
        (
            in_flight(paused={"reason": "paused by hand (alice)"}),
            "pause",
            "already paused at canary 5%: paused by",
        ),
        (in_flight(paused={"reason": "x"}), "resume", None),
        (in_flight(awaiting=2), "approve", None),
        (in_flight(awaiting=2), "resume", "waits for approval before canary 100%: --approve"),
        (in_flight(awaiting=2, approved=2), "approve", "is not waiting for approval"),
    ],
)
def test_what_cannot_apply_is_refused_saying_why(
    state: ServiceState, command: str, refused: str | None
) -> None:
    why = refusal(state, command, "eta")
    assert (why is None) if refused is None else (why is not None and refused in why), why


def test_the_policy_fields_of_steering() -> None:
    base = {"deployment": "eta", "watch": {"model": "eta"}}
    policy = parse(
        {
            **base,
            "rollout": {"canary": [{"weight": 10, "bake": 60}, {"weight": 100, "bake": 60, "approve": True}]},
        }
    )
    assert [(s.label, s.approve) for s in policy.steps()] == [
        ("shadow", False),
        ("canary 10%", False),
        ("canary 100%", True),
    ]
    assert (
        policy.rollout.on_manual_change == "pause"
    )  # the default: never undo a person, never give up silently
    assert parse({**base, "rollout": {"on_manual_change": "abort"}}).rollout.on_manual_change == "abort"
    with pytest.raises(PolicyError, match=r"rollout.on_manual_change.*'pause' or 'abort'; got 'ignore'"):
        parse({**base, "rollout": {"on_manual_change": "ignore"}})
    with pytest.raises(PolicyError, match=r"rollout.canary\[0\].approve.*true or false"):
        parse({**base, "rollout": {"canary": [{"weight": 100, "bake": 60, "approve": "yes"}]}})
    assert "pause" in parse({**base, "notify": {"webhook": "http://x"}}).notify.events  # told by default


def test_a_command_for_nothing_in_flight_is_refused_in_every_front_end(wolt_home, shell, capsys) -> None:
    from wolt_jupyter import cli
    from wolt_jupyter.deployments import revision_store
    from wolt_jupyter.revisions import DeploymentRecord

    with pytest.raises(InvalidArgument, match="unknown rollout command 'halt'; one of pause, resume"):
        steer("eta", "halt")
    with pytest.raises(Exception, match="no deployment named 'eta'"):
        steer("eta", "pause")
    revision_store().save_record(DeploymentRecord(name="eta", target="local"))
    with pytest.raises(InvalidArgument, match="no rollout of 'eta' is in flight: nothing to abort"):
        steer("eta", "abort")
    assert cli.main(["updater", "pause", "eta"]) == 1
    assert "no rollout of 'eta' is in flight: nothing to pause" in capsys.readouterr().err
    with pytest.raises(Exception, match="give one of --policy, --stop, --pause"):
        shell.run_line_magic("wolt_autoupdate", "eta --pause --abort")
    with pytest.raises(Exception, match="nothing to approve"):
        shell.run_line_magic("wolt_autoupdate", "eta --approve")
    assert not (
        wolt_home / "deployments" / "eta" / "updater" / "commands"
    ).exists()  # refused: nothing written
