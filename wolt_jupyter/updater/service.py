"""The update loop: detect, measure, decide, record, tell, act, persist. All I/O, no judgement.

Everything the loop does to a deployment goes through :class:`Actions`, so it can be bound to
``wolt_jupyter.deployments`` (under the deployment lock) for local and cluster targets alike. One
:meth:`UpdateService.tick` is one look; its state (``<deployment>/updater/state.json``, 0600) is written after
every change, so a service killed at any point resumes at the step it was in:

- a candidate is recorded in the state before the watcher is told it was taken over (never lost, never twice);
- a live step's traffic is applied, then the step is marked applied (re-applying is idempotent);
- a decision is appended to the history before it is carried out; the state moves on only after it succeeded;
- its webhook message is queued in the outbox before the action and posted after it, by the sender thread
  (:mod:`wolt_jupyter.updater.outbox`): a slow webhook never delays a step, a crash never posts it twice.

People steer a rollout (:mod:`.control`): the commands they leave are applied first at each look. The spec the
service last applied is kept in its state; a deployment found changed since (a person's traffic change,
promotion, rollback or redeploy) pauses the rollout, or gives it up (``rollout.on_manual_change``), and is never
undone by the service unless a person resumes it. A step marked ``approve`` waits for a person's approval.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from wolt_jupyter.errors import one_line
from wolt_jupyter.revisions import write_atomic
from wolt_jupyter.updater.commands import COMMANDS_DIR, Command, Commands, refusal
from wolt_jupyter.updater.decide import (
    Action,
    Check,
    Decision,
    LiveWindow,
    Observations,
    RolloutState,
    decide,
    start,
    transition,
)
from wolt_jupyter.updater.history import (
    DecisionRecord,
    History,
    decision_id,
    record_in_mlflow,
    updater_dir,
    write_health,
)
from wolt_jupyter.updater.notify import Message, Notifier
from wolt_jupyter.updater.outbox import OUTBOX_FILE, Outbox, Sender
from wolt_jupyter.updater.policy import Policy, Step
from wolt_jupyter.updater.retrain import ChampionHealth, RetrainRunner
from wolt_jupyter.updater.watch import Candidate, RegistryWatcher

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
HOLD_RECORD_INTERVAL = 60.0  # a hold is written to the history at most this often per step
FAILURE_LIMIT = 3  # consecutive failed looks (a gate raising, a step not applied) before a final decision


class Actions(Protocol):
    """What the service asks of the deployment. Each call is idempotent and returns once it has taken effect."""

    def champion(self) -> str | None:
        """The version the deployment serves as champion now (None before a first deployment)."""

    def shadow(self, version: str) -> None:
        """Mirror live traffic to ``version`` (answers nobody)."""

    def canary(self, version: str, weight: int) -> None:
        """Serve ``weight`` percent of live traffic from ``version``, the rest from the champion."""

    def promote(self, version: str) -> None:
        """``version`` becomes the champion: the alias moves, the deployment's spec becomes the new revision."""

    def rollback(self, version: str) -> None:
        """Take ``version`` out (no shadow, no canary); the champion serves everything."""

    def observe(
        self, version: str, step: Step, since: float, started: float | None = None
    ) -> LiveWindow | None:
        """Candidate vs champion since ``since`` (see :func:`wolt_jupyter.updater.observe.observe`), and the
        champion's baseline before ``started``, the rollout's start, when a guard compares with it."""

    def champion_health(self, since: float) -> ChampionHealth:
        """The champion's input drift and live metric since ``since`` (only asked with a retrain policy)."""

    def spec_id(self) -> SpecId | None:
        """What the deployment runs now, to tell a change by hand from the service's own. Optional: without
        it (None, or not defined) no change by hand is detected."""


@dataclass(frozen=True)
class SpecId:
    """A deployment's current spec: its revision, a digest of the spec, and its variants in a few words."""

    revision: int
    digest: str
    summary: str


@dataclass
class ServiceState:
    rollout: dict[str, Any] | None = None  # RolloutState as a dict
    candidate: dict[str, Any] | None = None  # Candidate as a dict
    applied: int = -1  # index of the live step whose traffic is in place
    last_hold_recorded: float = 0.0
    failures: int = 0  # consecutive looks that failed (cleared by one that did not)
    spec: dict[str, Any] | None = None  # SpecId of what the service last applied (or found, at the start)
    acting: bool = False  # on disk while the service changes the deployment (a crash then: no change by hand)
    paused: dict[str, Any] | None = None  # {reason, by, since, manual}: no step taken until resumed
    awaiting: int = -1  # the step waiting for a person's approval (recorded once)
    approved: int = -1  # the last step a person approved
    labels: list[str] = field(default_factory=list)  # the steps' labels, for the messages of the askers

    @classmethod
    def read(cls, path: Path) -> ServiceState:
        if not path.is_file():
            return cls()
        return cls(**json.loads(path.read_text()))

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1, sort_keys=True), mode=0o600)

    @property
    def state(self) -> RolloutState | None:
        return RolloutState(**self.rollout) if self.rollout else None

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"step {index}"

    @property
    def waiting_for(self) -> str | None:
        """The label of the step waiting for approval, None when none is."""
        return self.label(self.awaiting) if self.awaiting > self.approved else None


@dataclass
class UpdateService:
    """The loop for one deployment. ``clock`` is injectable so a test can move time; ``mlflow`` records each
    decision in MLflow too (a failure there is logged, never stops the loop)."""

    policy: Policy
    actions: Actions
    home: Path | None = None
    clock: Callable[[], float] = time.time
    mlflow: bool = True
    notifier: Notifier | None = None
    retrain_cwd: Path | None = None  # where the retraining command runs (the policy file's folder)
    _dir: Path = field(init=False)
    _retrainer: RetrainRunner | None = field(init=False, default=None)
    _last_health_check: float = field(init=False, default=-math.inf)
    _outbox: Outbox | None = field(init=False, default=None)
    _sender: Sender | None = field(init=False, default=None)
    _acting: threading.Lock = field(init=False, default_factory=threading.Lock)  # held while a look acts
    commands: Commands = field(init=False)  # what people ask (pause, resume, …), applied first at each look
    _errors: int = field(
        init=False, default=-1
    )  # looks in a row that raised outside any decision (-1: none yet)
    _failing_since: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._dir = updater_dir(self.policy.deployment, self.home)
        self.commands = Commands(self._dir / COMMANDS_DIR)
        if self.notifier is None and self.policy.notify is not None:
            self.notifier = Notifier(self.policy.notify, self._dir / "notify.json", clock=self.clock)
        if self.notifier is not None:
            self._outbox = Outbox(self._dir / OUTBOX_FILE)
            self._sender = Sender(self._outbox, self.notifier, on_outcome=self._notified, gate=self._acting)
        if self.policy.retrain is not None:
            self._retrainer = RetrainRunner(
                self.policy.retrain, self._dir, cwd=self.retrain_cwd, clock=self.clock
            )

    @property
    def state_path(self) -> Path:
        return self._dir / STATE_FILE

    @property
    def history(self) -> History:
        return History(self._dir / "history.jsonl")

    def watcher(self, start_after: int | None) -> RegistryWatcher:
        return RegistryWatcher(self.policy.watch, self._dir / "cursor.json", start_after=start_after)

    # -- one look -------------------------------------------------------------------------------------------
    def next_look(self) -> float:
        """Seconds until the next look: ``rollout.analysis_interval`` while a candidate is in flight (a breach
        is acted on that fast whatever the polling), ``watch.poll_seconds`` while waiting for one."""
        rollout = ServiceState.read(self.state_path).state
        if rollout is not None and rollout.outcome is None:
            return self.policy.rollout.analysis_interval
        return self.policy.watch.poll_seconds

    def tick(self) -> Decision | None:
        """Detect a candidate if none is in flight, make sure its step is in place, decide, act. None when there
        is nothing to do."""
        self._report_retrain_end()
        st = ServiceState.read(self.state_path)
        steered = self._steer(st)  # a person's commands first: a pause or an abort acts at once
        if steered is not None and steered.final:
            return steered
        rollout = st.state
        if rollout is None or rollout.outcome is not None:
            picked = self._next_candidate(st)
            if picked is None:
                self._watch_champion()
                return None
            st = picked
            rollout = st.state
            assert rollout is not None
        assert st.candidate is not None
        candidate = Candidate(**st.candidate)
        steps = self.policy.steps()
        step = steps[rollout.step]
        now = self.clock()
        held = self._held(st, candidate, rollout, step, now)
        if held is not None:
            st.write(self.state_path)
            return held
        try:
            if step.live and st.applied < rollout.step:
                self._act(st, self._apply, step, candidate.version)
                rollout = replace(rollout, step_started=self.clock())  # the window starts with the traffic
                st.rollout, st.applied = asdict(rollout), rollout.step
                st.write(self.state_path)
                now = self.clock()
            obs = self._observe(step, candidate, rollout, now)
        except Exception as exc:  # every failure is a decision: held, then final with the reason
            decision = self._failed_look(step, rollout, exc, st)
        else:
            st.failures = 0
            decision = decide(self.policy, rollout, obs)
        following = rollout.step + 1
        if decision.action == "advance" and step.live and self._needs_approval(st, following):
            # the step in place goes on being judged while it waits: a breach still rolls back
            waiting = self._wait_for_approval(st, candidate, rollout, following, now)
            st.write(self.state_path)
            return waiting
        record = self._record(decision, candidate, rollout, now, st)
        if decision.action == "promote":
            self._act(st, self.actions.promote, candidate.version)
        elif decision.action == "rollback":
            self._act(st, self.actions.rollback, candidate.version)
        if record is not None:
            self._to_mlflow(record)  # after the action: a slow tracking server never delays a rollback
        st.rollout = asdict(transition(self.policy, rollout, decision, now))
        if decision.action != "hold":
            st.last_hold_recorded = 0.0  # the next step's first hold is written
        st.write(self.state_path)
        return decision

    def _failed_look(self, step: Step, rollout: RolloutState, exc: Exception, st: ServiceState) -> Decision:
        """A look that raised: held ``FAILURE_LIMIT - 1`` times (a registry or log hiccup passes), then final
        — a gate that cannot judge rejects, a live step that cannot be applied or observed rolls back."""
        st.failures += 1
        why = one_line(exc)
        log.warning("%s: %s failed (%d of %d): %s", self.policy.deployment, step.label, st.failures,
                    FAILURE_LIMIT, why)  # fmt: skip
        what = "could not be applied or observed" if step.live else "gate could not judge the candidate"
        check = Check(f"{step.label} look", "fail" if st.failures >= FAILURE_LIMIT else "wait", why,
                      value=st.failures, threshold=FAILURE_LIMIT)  # fmt: skip
        if st.failures < FAILURE_LIMIT:
            st.last_hold_recorded = 0.0  # every failed look is written
            reason = f"{step.label} {what} ({st.failures} of {FAILURE_LIMIT} tries): {why}"
            return Decision("hold", reason, rollout.step, step.label, (check,))
        st.failures = 0
        action: Action = "rollback" if step.live else "reject"
        reason = f"{step.label} {what} {FAILURE_LIMIT} times in a row: {why}"
        return Decision(action, reason, rollout.step, step.label, (check,))

    def _next_candidate(self, st: ServiceState) -> ServiceState | None:
        champion = self.actions.champion()
        watcher = self.watcher(int(champion) if champion and champion.isdigit() else None)
        found = watcher.poll()
        finished = st.candidate["version"] if st.candidate else None
        for c in found:
            if c.version == finished or c.version == champion:  # crashed before done(), or already serving
                watcher.done(c.version)
        found = [c for c in found if c.version not in (finished, champion)]
        if not found:
            return None
        candidate = found[0]
        rollout = start(self.policy, candidate.version, champion, self.clock())
        st = ServiceState(rollout=asdict(rollout), candidate=asdict(candidate), spec=self._spec_id(),
                          labels=[s.label for s in self.policy.steps()])  # fmt: skip
        st.write(self.state_path)  # recorded first: a crash now resumes this candidate ...
        watcher.done(candidate.version)  # ... and only then is it no longer handed out
        return st

    # -- people: commands, changes by hand, approvals --------------------------------------------------------
    def steer(self) -> Decision | None:
        """Apply the commands people left and nothing else: what each look does first, and what a front end runs
        itself when no service runs (:func:`wolt_jupyter.updater.control.steer`). Call it under the lock."""
        return self._steer(ServiceState.read(self.state_path))

    def _steer(self, st: ServiceState) -> Decision | None:
        last = None
        for cmd in self.commands.pending():
            try:
                outcome, decision = self._command(st, cmd)
            except Exception as exc:  # a promote-now or abort whose action failed: the asker is told
                outcome, decision = f"{cmd.command} failed: {one_line(exc)}", None
                log.error("%s: %s (%s)", self.policy.deployment, outcome, cmd.by)
            st.write(self.state_path)  # the state first: a crash before done() applies the command again
            self.commands.done(cmd, outcome, self.clock())
            log.info("%s: %s", self.policy.deployment, outcome)
            last = decision or last
        return last

    def _command(self, st: ServiceState, cmd: Command) -> tuple[str, Decision | None]:
        """One command: the outcome in words for the asker, and the decision it made (None: not applied)."""
        why = refusal(st, cmd.command, self.policy.deployment)  # the state may have moved since it was asked
        if why is not None:
            return f"{cmd.command} not applied: {why}", None
        rollout, candidate = st.state, Candidate(**(st.candidate or {}))
        assert rollout is not None
        steps = self.policy.steps()
        step, now = steps[rollout.step], self.clock()
        if cmd.command in ("promote-now", "abort"):
            act: Callable[[str], None] | None
            if cmd.command == "promote-now":
                decision = Decision("promote", f"promoted by hand ({cmd.by}) at {step.label}, before the rollout's end",
                                    rollout.step, step.label)  # fmt: skip
                act = self.actions.promote
            else:
                out = "the champion serves alone" if st.applied >= 0 else "the candidate never took traffic"
                decision = Decision("reject", f"aborted by hand ({cmd.by}) at {step.label}: {out}", rollout.step,
                                    step.label)  # fmt: skip
                act = self.actions.rollback if st.applied >= 0 else None
            record = self._record(decision, candidate, rollout, now, st)
            if act is not None:
                self._act(st, act, candidate.version)
            st.rollout = asdict(transition(self.policy, rollout, decision, now))
            st.paused, st.last_hold_recorded = None, 0.0
            if record is not None:
                self._to_mlflow(record)
            return decision.reason, decision
        if cmd.command == "pause":
            reason = f"paused by hand ({cmd.by}) at {step.label}: no step is taken until it is resumed"
            st.paused = {"reason": reason, "by": cmd.by, "since": now, "manual": False}
            return reason, self._note("pause", reason, candidate, rollout, now)
        if cmd.command == "approve":
            granted = st.label(st.awaiting)
            st.approved = st.awaiting
            reason = f"approved by hand ({cmd.by}): {granted} goes ahead"
            return reason, self._note("approve", reason, candidate, rollout, now)
        reason = f"resumed by hand ({cmd.by}): {self._resume(st, candidate, rollout, step, now)}"
        return reason, self._note("resume", reason, candidate, rollout, now)

    def _resume(
        self, st: ServiceState, candidate: Candidate, rollout: RolloutState, step: Step, now: float
    ) -> str:
        """Clear the pause; the step's traffic is applied again if a person changed it, and its window starts
        anew either way (what was served while paused is not judged). What was done, in words."""
        changed = self._changed_by_hand(st)
        if step.live and st.applied >= rollout.step:
            if changed is not None:
                self._act(st, self._apply, step, candidate.version)
            st.rollout = asdict(replace(rollout, step_started=self.clock()))
            what = (
                f"{step.label} applied again, undoing the change by hand"
                if changed
                else f"{step.label} judged anew"
            )
        else:  # no traffic of the service's is in place: the deployment as it is now is what it builds on
            st.spec = self._spec_id()
            what = f"{step.label} goes on" + (" from the deployment as changed by hand" if changed else "")
        st.paused = None
        return what

    def _held(
        self, st: ServiceState, candidate: Candidate, rollout: RolloutState, step: Step, now: float
    ) -> Decision | None:
        """A look that takes no step: the rollout is paused, the deployment was changed by hand since the
        service's last change (it pauses, or gives up: ``rollout.on_manual_change``), or the step waits for a
        person's approval. None when the look goes on."""
        if not st.labels:
            st.labels = [s.label for s in self.policy.steps()]
        # the last look died while acting (what runs is the service's own), or there is no baseline yet
        if st.acting or st.spec is None:
            st.acting, st.spec = False, self._spec_id()
        if st.paused:
            return Decision("hold", f"paused: {st.paused['reason']}", rollout.step, step.label)
        changed = self._changed_by_hand(st)
        if changed is not None:
            return self._on_manual_change(changed, st, candidate, rollout, step, now)
        if step.live and st.applied < rollout.step and self._needs_approval(st, rollout.step):
            return self._wait_for_approval(st, candidate, rollout, rollout.step, now)
        return None

    def _changed_by_hand(self, st: ServiceState) -> Check | None:
        now, was = self._spec_id(), st.spec
        if now is None or was is None:
            return None
        if now["digest"] == was["digest"]:
            st.spec = now  # the same spec made again (a redeploy of it): nothing changed
            return None
        why = (f"the deployment was changed by hand: revision {now['revision']} ({now['summary']}) is not revision "
               f"{was['revision']} the service applied ({was['summary']})")  # fmt: skip
        return Check("deployment spec", "fail", why, value=now["revision"], baseline=was["revision"])

    def _on_manual_change(
        self,
        changed: Check,
        st: ServiceState,
        candidate: Candidate,
        rollout: RolloutState,
        step: Step,
        now: float,
    ) -> Decision:
        name = self.policy.deployment
        if self.policy.rollout.on_manual_change == "abort":
            decision = Decision("reject", f"given up: {changed.why}; the deployment stays as it was left",
                                rollout.step, step.label, (changed,))  # fmt: skip
            log.warning("%s: %s", name, decision.reason)
            record = self._record(decision, candidate, rollout, now, st)
            st.rollout = asdict(transition(self.policy, rollout, decision, now))
            st.last_hold_recorded = 0.0
            if record is not None:
                self._to_mlflow(record)
            return decision
        again = (
            f"--resume applies {step.label} again"
            if step.live and st.applied >= rollout.step
            else "--resume goes on"
        )
        reason = f"paused: {changed.why}; the service leaves it so ({again}, --abort gives the candidate up)"
        st.paused = {"reason": reason, "by": "a change by hand", "since": now, "manual": True}
        log.warning("%s: %s", name, reason)
        return self._note("pause", reason, candidate, rollout, now, (changed,))

    def _needs_approval(self, st: ServiceState, index: int) -> bool:
        steps = self.policy.steps()
        return index < len(steps) and steps[index].approve and st.approved < index

    def _wait_for_approval(
        self, st: ServiceState, candidate: Candidate, rollout: RolloutState, index: int, now: float
    ) -> Decision:
        name, label = self.policy.deployment, self.policy.steps()[index].label
        reason = (f"waiting for approval before {label}: %wolt_autoupdate {name} --approve "
                  f"(or wolt-jupyter updater approve {name})")  # fmt: skip
        if st.awaiting != index:  # recorded and told once
            st.awaiting = index
            log.info("%s: %s", name, reason)
            return self._note("wait", reason, candidate, rollout, now)
        return Decision("hold", reason, rollout.step, st.label(rollout.step))

    def _note(
        self, action: str, reason: str, candidate: Candidate, rollout: RolloutState, now: float,
        checks: tuple[Check, ...] = (),
    ) -> Decision:  # fmt: skip
        """A decision of people (pause, resume, wait, approve) into the history, the webhook and MLflow; the
        look it is made in takes no step (a hold)."""
        label = self.policy.steps()[rollout.step].label
        record = DecisionRecord(now, self.policy.deployment, candidate.model, candidate.version, rollout.champion,
                                rollout.step, label, action, reason, [asdict(c) for c in checks])  # fmt: skip
        # made at ``now``: two pauses in one step are two decisions, each told
        self._tell_and_keep(record, f"{candidate.model}/{candidate.version}", now)
        self._to_mlflow(record)
        return Decision("hold", reason, rollout.step, label, checks)

    def _act(self, st: ServiceState, action: Callable[..., None], *args: Any) -> None:
        """Change the deployment with the state saying so first: a look that dies in the middle is then not
        taken for a change by hand. What runs afterwards (even after a failure, reverted) is the service's own."""
        st.acting = True
        st.write(self.state_path)
        try:
            action(*args)
        finally:
            st.acting, st.spec = False, self._spec_id()
            st.write(self.state_path)

    def _spec_id(self) -> dict[str, Any] | None:
        spec_id = getattr(self.actions, "spec_id", None)  # optional in Actions
        found = spec_id() if spec_id is not None else None
        return asdict(found) if found is not None else None

    # -- changing the deployment ----------------------------------------------------------------------------
    def _apply(self, step: Step, version: str) -> None:
        if step.kind == "shadow":
            self.actions.shadow(version)
        else:
            self.actions.canary(version, step.weight)

    def _observe(self, step: Step, candidate: Candidate, rollout: RolloutState, now: float) -> Observations:
        from wolt_jupyter.updater import gates

        if step.kind == "offline":
            assert self.policy.offline is not None
            champion = f"models:/{candidate.model}/{rollout.champion}" if rollout.champion else None
            return Observations(now, offline=gates.offline_gate(self.policy.offline, candidate.uri, champion))
        if step.kind == "replay":
            assert self.policy.replay is not None
            replay = gates.replay_gate(self.policy.replay, self.policy.deployment, candidate.uri)
            return Observations(now, replay=replay)
        return Observations(now, live=self.actions.observe(candidate.version, step, rollout.step_started, rollout.started))

    def _record(
        self, decision: Decision, candidate: Candidate, rollout: RolloutState, now: float, st: ServiceState
    ) -> DecisionRecord | None:
        if decision.action == "hold":
            if now - st.last_hold_recorded < HOLD_RECORD_INTERVAL:
                return None
            st.last_hold_recorded = now
        record = DecisionRecord.of(decision, deployment=self.policy.deployment, model=candidate.model,
                                   candidate=candidate.version, champion=rollout.champion, now=now)  # fmt: skip
        # made again after a restart (same step, same start, same action) it is the same decision, one message
        basis = now if decision.action == "hold" else rollout.step_started
        self._tell_and_keep(record, f"{candidate.model}/{candidate.version}", basis)
        return record

    def _to_mlflow(self, record: DecisionRecord) -> None:
        if self.mlflow:
            try:
                record_in_mlflow(record)
            except Exception as exc:  # MLflow down must not stop a rollout (or a rollback)
                log.warning("recording the decision in MLflow failed: %s", one_line(exc))

    def _tell_and_keep(self, record: DecisionRecord, key: str, basis: float) -> None:
        """Queue the webhook message (posted after the action, see :meth:`tick_then_tell`), then append the
        decision to the history. ``basis`` tells this decision from others of its kind (see :func:`decision_id`)."""
        record.id = decision_id(record, basis)
        if self.notifier is not None:
            record.notified = self._queue(record, self.notifier, key)
        self.history.append(record)

    def _queue(self, record: DecisionRecord, notifier: Notifier, key: str) -> str:
        """The message's status: ``pending`` (queued), ``rate_limited``, ``not_subscribed``, or what became of it
        when this decision was queued before a restart."""
        assert self._outbox is not None and self._sender is not None
        kept = self._outbox.get(str(record.id))
        if kept is not None:
            return kept.status
        version = f"version {record.candidate}" if record.candidate else f"champion {record.champion}"
        text = (
            f"{record.deployment}: {record.model} {version} — {record.action} at {record.step_label}: "
            f"{record.reason}"
        )
        outcome, text = notifier.admit(record.action, key, text)
        if outcome == "not_subscribed":
            return outcome
        fields = {"deployment": record.deployment, "model": record.model, "version": record.candidate,
                  "champion": record.champion, "action": record.action, "step": record.step_label,
                  "reason": record.reason}  # fmt: skip
        status = "pending" if outcome == "admitted" else "rate_limited"
        self._outbox.add(
            Message(str(record.id), record.action, key, text, fields, record.time, status=status)
        )
        self._sender.wake()
        return status

    def _notified(self, message: Message) -> None:
        self.history.note(message.id, message.status)

    # -- the messages ---------------------------------------------------------------------------------------
    @property
    def outbox(self) -> Outbox | None:
        """The queued webhook messages (None without ``notify``)."""
        return self._outbox

    def tick_then_tell(self) -> Decision | None:
        """:meth:`tick`, holding the gate the sender waits at: what it queued is posted after its actions."""
        with self._acting:
            return self.tick()

    def sending(self, flush: float = 5.0) -> contextlib.AbstractContextManager[Any]:
        """The sender thread, running inside the ``with`` (a no-op without ``notify``); at its end it still posts
        what is due for ``flush`` seconds, and the rest goes when the service starts again."""
        return self._sender.running(flush) if self._sender is not None else contextlib.nullcontext()

    def deliver(self, timeout: float = 60.0) -> bool:
        """Post what is queued now, in this thread (retries and back-offs included), for at most ``timeout``
        seconds; True when nothing is left pending. Not while :meth:`sending` runs."""
        return self._sender.drain(timeout) if self._sender is not None else True

    # -- retraining -----------------------------------------------------------------------------------------
    def _report_retrain_end(self) -> None:
        """A retraining run that ended goes to the history and the webhook once (its version may already be
        a candidate by then)."""
        runner = self._retrainer
        ended = runner.ended() if runner is not None else None
        if runner is None or ended is None:
            return
        now = self.clock()
        took = (ended.finished or now) - (ended.last_run or now)
        code = "unknown (started before a restart)" if ended.exit_code is None else str(ended.exit_code)
        why = f"retraining finished after {took:.0f}s, exit code {code}: {runner.log_tail(1) or 'no output'}"
        self._retrain_record(now, self.actions.champion(), why, [], basis=ended.finished or now)

    def _watch_champion(self) -> None:
        """With no candidate in flight, every ``check_every``: measure the champion and, when
        :func:`should_retrain` says so, start the retraining job."""
        from wolt_jupyter.updater.decide import should_retrain
        from wolt_jupyter.updater.retrain import metric_of

        runner, retrain = self._retrainer, self.policy.retrain
        if runner is None or retrain is None:
            return
        now = self.clock()
        if now - self._last_health_check < retrain.check_every:
            return
        self._last_health_check = now
        champion = self.actions.champion()
        metric = metric_of(retrain, self.policy.guards.live_metric)
        health = self.actions.champion_health(now - retrain.window)
        baseline = runner.baseline(health.version, health.metric)
        verdict = should_retrain(
            retrain,
            now,
            drift_psi=health.drift_psi,
            metric=health.metric,
            baseline_metric=baseline,
            direction=metric.direction,
            last_run=runner.state().last_run,
            running=runner.running(),
        )
        log.debug("%s retraining: %s (%s)", self.policy.deployment, verdict.reason, health.note)
        if not verdict.run:
            return
        checks = [
            {"name": "input drift (max PSI)", "value": health.drift_psi, "threshold": retrain.drift_threshold,
             "n": health.requests, "verdict": "fail" if verdict.reason.startswith("input drift") else "pass"},
            {"name": f"champion {metric.name}", "value": health.metric, "baseline": baseline,
             "threshold": retrain.metric_decline, "n": health.labels,
             "verdict": "fail" if "live metric" in verdict.reason else "pass"},
        ]  # fmt: skip
        env = {"WOLT_DEPLOYMENT": self.policy.deployment, "WOLT_MODEL": self.policy.watch.model,
               "WOLT_CHAMPION_VERSION": champion or ""}  # fmt: skip
        # a run is told of once: keyed by the run before it (a restart before it starts decides it again)
        last = runner.state().last_run
        self._retrain_record(
            now, champion, f"retraining started: {verdict.reason}", checks, basis=last or 0.0
        )
        runner.start(verdict.reason, env)

    def _retrain_record(
        self, now: float, champion: str | None, reason: str, checks: list[dict[str, Any]], *, basis: float
    ) -> None:
        record = DecisionRecord(now, self.policy.deployment, self.policy.watch.model, "", champion, -1, "retrain",
                                "retrain", reason, [{"why": "", **c} for c in checks])  # fmt: skip
        self._tell_and_keep(record, f"{self.policy.watch.model}/retrain", basis)

    # -- the loop -------------------------------------------------------------------------------------------
    def look_failed(self, exc: Exception) -> None:
        """A look that raised outside any decision: after ``FAILURE_LIMIT`` in a row the service says it is
        failing, with the reason (its status, the history card, the lab) — a process alive is not a service
        working."""
        self._errors = max(self._errors, 0) + 1
        self._failing_since = self._failing_since or self.clock()
        if self._errors >= FAILURE_LIMIT:
            health = {"status": "failing", "reason": one_line(exc), "since": self._failing_since,
                      "errors": self._errors}  # fmt: skip
            write_health(self.policy.deployment, health, self.home)

    def look_worked(self) -> None:
        """A look that raised nothing: a failing status said before (by this run or the last) is taken back."""
        if self._errors >= FAILURE_LIMIT:
            log.info(
                "update service %s works again after %d failed looks", self.policy.deployment, self._errors
            )
        if self._errors != 0:
            write_health(self.policy.deployment, None, self.home)
        self._errors, self._failing_since = 0, None

    def run(self, stop: threading.Event | None = None) -> None:
        """Look (:meth:`next_look`) until ``stop`` is set; an error in one tick is logged, not fatal. The sender
        runs beside it."""
        stop = stop or threading.Event()
        with self.sending():
            while not stop.is_set():
                try:
                    self.tick_then_tell()
                except Exception as exc:
                    log.error("update service %s: %s", self.policy.deployment, one_line(exc))
                    self.look_failed(exc)
                else:
                    self.look_worked()
                stop.wait(self.next_look())
