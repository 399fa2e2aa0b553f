"""The update service on a real deployment: its :class:`Actions` bound to :mod:`wolt_jupyter.deployments`,
one service per deployment, each step under the deployment's lock, and the background process a notebook
starts and stops.

Why through ``deployments``: every traffic change of the service is then an ordinary revision — the same lock
as a person's change, the same blue-green switch (a candidate that does not load never takes traffic), the
same rollback history — and shows in ``%wolt_deployments`` like any other.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import InvalidArgument, NotFound, WoltError, one_line
from wolt_jupyter.processes import process_gone, stop_process_group
from wolt_jupyter.updater.policy import Policy, Step, is_yaml_text, without_unset

log = logging.getLogger(__name__)

CANDIDATE = "candidate"  # the variant name the candidate runs under (shadow or canary)
ATTACHMENT = "update-service"  # the background service, attached to its deployment: undeploy stops it


class DeploymentActions:
    """What the service asks of deployment ``policy.deployment``, done with revisions of its spec."""

    def __init__(self, policy: Policy, champion_alias: str = "champion") -> None:
        self.policy = policy
        self.name = policy.deployment
        self.model = policy.watch.model
        self.champion_alias = champion_alias
        self._references: dict[str, Any] = {}  # offline-dataset references by model URI, made once each
        self._baselines: dict[float, tuple[float, int] | None] = {}  # the champion's p99 before each rollout

    # -- reading what runs ----------------------------------------------------------------------------------
    def _spec(self) -> Any:
        from wolt_jupyter.deployments import revision_store

        return revision_store().spec(self.name)

    def _main(self) -> Any:
        """The champion's variant. Once a step ran it is the spec's ``routing.champion`` (the service names it
        in every spec it applies, so its weight never decides); before that, the live variant serving the
        version the champion alias points at, else the live variant with the most traffic."""
        from wolt_jupyter.registry import pinned_version

        spec = self._spec()
        live = [v for v in spec.variants if not v.shadow and v.name != CANDIDATE]
        if not live:
            raise InvalidArgument(f"deployment {self.name!r} has no live variant besides {CANDIDATE!r}")
        named = next((v for v in live if v.name == spec.routing.champion), None)
        if named is not None:
            return named
        live.sort(key=lambda v: -v.traffic)
        alias = self._alias_version()
        serving = [v for v in live if alias is not None and pinned_version(v.model) == (self.model, alias)]
        return (serving or live)[0]

    def _alias_version(self) -> str | None:
        from wolt_jupyter._mlflow import mlflow_client

        try:
            aliases = mlflow_client().get_registered_model(self.model).aliases
        except Exception:  # no such model yet, registry unreachable: the weights decide
            return None
        version = aliases.get(self.champion_alias)
        return None if version is None else str(version)

    def champion(self) -> str | None:
        from wolt_jupyter.registry import pinned_version

        try:
            main = self._main()
        except NotFound:
            return None
        pinned = pinned_version(main.model)
        if pinned is None or pinned[0] != self.model:
            return None
        return str(pinned[1])

    def spec_id(self) -> Any:
        """The current revision, a digest of its spec and its variants in a few words (``main 70% (v1)``)."""
        import hashlib

        from wolt_jupyter.deployments import revision_store
        from wolt_jupyter.registry import pinned_version
        from wolt_jupyter.updater.service import SpecId

        store = revision_store()
        revision = store.record(self.name).revision
        spec = store.spec(self.name, revision)
        parts = []
        for v in spec.variants:
            pinned = pinned_version(v.model)
            model = f"v{pinned[1]}" if pinned and pinned[0] == self.model else v.model
            parts.append(f"{v.name} {'shadow' if v.shadow else f'{v.traffic}%'} ({model})")
        digest = hashlib.sha256(spec.to_yaml().encode()).hexdigest()[:16]
        return SpecId(revision, digest, ", ".join(parts))

    # -- changing it ----------------------------------------------------------------------------------------
    def _apply(self, variants: list[Any], champion: str | None) -> None:
        from dataclasses import replace

        from wolt_jupyter import deployments

        spec = self._spec()
        routing = replace(spec.routing, champion=champion)
        deployments.deploy(
            self.name, spec=replace(spec, variants=tuple(variants), routing=routing).validate()
        )

    def _champion_variant(self, traffic: int) -> Any:
        from dataclasses import replace

        return replace(self._main(), traffic=traffic, shadow=False)

    def _others(self) -> list[Any]:
        """Shadows the user configured (not ours): they stay through every step."""
        return [v for v in self._spec().variants if v.shadow and v.name != CANDIDATE]

    def _candidate(self, version: str, **kw: Any) -> Any:
        from wolt_jupyter.spec import Variant

        return Variant(CANDIDATE, f"models:/{self.model}/{version}", **kw)

    def shadow(self, version: str) -> None:
        main = self._champion_variant(100)
        self._apply([main, self._candidate(version, shadow=True), *self._others()], main.name)

    def canary(self, version: str, weight: int) -> None:
        # at 100 % the champion stays in the spec at weight 0: loaded, warm, the retry target, and what a
        # rollback from this step restores without loading anything
        main = self._champion_variant(max(0, 100 - weight))
        self._apply([main, self._candidate(version, traffic=min(100, weight)), *self._others()], main.name)

    def promote(self, version: str) -> None:
        from wolt_jupyter._mlflow import mlflow_client
        from wolt_jupyter.spec import Variant

        mlflow_client().set_registered_model_alias(self.model, self.champion_alias, version)
        name = self._main().name
        self._apply([Variant(name, f"models:/{self.model}/{version}", 100), *self._others()], None)

    def rollback(self, version: str) -> None:
        """The champion alone, from any step: it never left the spec, so this is a routing change in place."""
        spec = self._spec()
        if not any(not v.shadow and v.name != CANDIDATE for v in spec.variants):
            # a rollout begun before the champion stayed in the spec at 100 %: the revision before it took over
            from wolt_jupyter import deployments

            deployments.rollback(self.name)
            return
        from dataclasses import replace

        main = self._champion_variant(100)
        live = next((v for v in spec.variants if v.name == CANDIDATE and not v.shadow), None)
        if live is not None:
            # first the candidate at weight 0, the pods it runs in kept: a routing change in place on every
            # target (a cluster's pods watch their ConfigMap); then out of the spec, which on a cluster rolls
            # pods out while it answers nobody
            self._apply([main, replace(live, traffic=0), *self._others()], main.name)
        self._apply([main, *self._others()], None)

    def champion_health(self, since: float) -> Any:
        from wolt_jupyter.updater.retrain import champion_health, metric_of

        retrain = self.policy.retrain
        assert retrain is not None
        metric = metric_of(retrain, self.policy.guards.live_metric)
        main = self._main()
        return champion_health(self.name, main.name, self.model, self.champion(), retrain, metric, since)

    def observe(self, version: str, step: Step, since: float, started: float | None = None) -> Any:
        from dataclasses import replace

        from wolt_jupyter import deployments
        from wolt_jupyter.updater.observe import observe

        compared = step.kind != "canary" or step.weight < 100
        baseline = self._champion_baseline(started) if compared else None
        ratio = self.policy.guards.service.champion_max_p99_ratio
        window = observe(
            self.name,
            since,
            candidate=CANDIDATE,
            champion=self._main().name if compared else CANDIDATE,
            shadow=step.kind == "shadow",
            live_metric=self.policy.guards.live_metric,
            references=self._offline_references(version, compared),
            slow_ms=(self.policy.guards.max_p99_ms, self.policy.guards.service.champion_max_p99_ms),
            champion_relative_ms=None if baseline is None or ratio is None else baseline[0] * ratio,
        )
        # crashes lose requests the log never sees: the guards count them from the runtime's own exits
        exits = tuple(deployments.runtime_exits(self.name, since))
        return replace(
            window, exits=exits, queries=self._queries(window, step, since), champion_baseline=baseline
        )

    def _champion_baseline(self, started: float | None) -> tuple[float, int] | None:
        """The champion's p99 before the rollout began (``guards.service.champion_max_p99_ratio``), read once
        per rollout: the past does not change."""
        service = self.policy.guards.service
        if service.champion_max_p99_ratio is None or started is None:
            return None
        if started not in self._baselines:
            from wolt_jupyter.updater.observe import champion_baseline

            self._baselines[started] = champion_baseline(
                self.name, self._main().name, started, service.baseline, self.policy.guards.limit_min_requests
            )
        return self._baselines[started]

    def _queries(self, window: Any, step: Step, since: float) -> tuple[tuple[str, float | None], ...]:
        """Each query guard's first sample now; a Prometheus that cannot answer fails the look."""
        guards = self.policy.guards.queries
        if not guards:
            return ()
        import math

        from wolt_jupyter.config import settings
        from wolt_jupyter.monitoring.prometheus import PrometheusSource, Query, duration

        champion = self._main().name
        values = []
        for g in guards:
            url = g.prometheus or settings().prometheus_url
            if not url:
                raise InvalidArgument(
                    f"guards.queries {g.name!r}: no Prometheus (set prometheus: URL or WOLT_PROMETHEUS_URL)"
                )
            promql = (g.query.replace("$deployment", self.name).replace("$candidate", CANDIDATE)
                      .replace("$champion", champion).replace("$window", duration(max(1.0, time.time() - since))))  # fmt: skip
            result = PrometheusSource(url).run(Query("instant", promql, ()))
            value = float(result[0]["value"][1]) if result else None
            values.append((g.name, value if value is not None and math.isfinite(value) else None))
        return tuple(values)

    def _offline_references(self, version: str, compared: bool) -> dict[str, Any]:
        """The offline dataset as each arm's calibration reference for ``guards.estimated_accuracy`` (when
        the policy has both): each model loaded and scored once, a failure retried at the next look."""
        from wolt_jupyter.updater.gates import offline_reference

        if self.policy.guards.estimated_accuracy is None or self.policy.offline is None:
            return {}
        arms = {"candidate": f"models:/{self.model}/{version}"}
        if compared:
            arms["champion"] = self._main().model
        out = {}
        for arm, uri in arms.items():
            if uri not in self._references:
                try:
                    self._references[uri] = offline_reference(self.policy.offline, uri)
                except Exception as exc:  # the estimate goes on with the arm's own labelled rows
                    log.warning("offline reference of %s for the estimated accuracy: %s", uri, exc)
                    continue
            if self._references[uri] is not None:
                out[arm] = self._references[uri]
        return out


def adopt_deployment(name: str, document: Path) -> bool:
    """Record the cluster deployment ``name`` from its adoption document unless this state dir already has it
    (a restarted pod keeps what its service changed since). True if it was adopted now."""
    from wolt_jupyter import deployments
    from wolt_jupyter.revisions import DeploymentRecord
    from wolt_jupyter.spec import DeploymentSpec
    from wolt_jupyter.untrusted import load_yaml

    store = deployments.revision_store()
    if store.exists(name):
        return False
    doc = load_yaml(Path(document).read_text(), f"adoption document {str(document)!r}")
    spec = DeploymentSpec.from_dict(doc["spec"])
    if spec.name != name or doc.get("target") in (None, "local"):
        raise InvalidArgument(f"{document} does not describe the cluster deployment {name!r}")
    with deployments.lock(name, "adopt"):
        if store.exists(name):
            return False
        revision = store.add_revision(spec)
        store.save_record(
            DeploymentRecord(
                name=name, target=doc["target"], namespace=doc.get("namespace"), revision=revision
            )
        )
    log.info("adopted %s deployment %s (revision %d of this state dir)", doc["target"], name, revision)
    return True


def serve(
    policy: Policy,
    stop: threading.Event | None = None,
    *,
    workdir: Path | None = None,
    adopt: Path | None = None,
    **service_options: Any,
) -> None:
    """Run the service for ``policy`` in this process until ``stop`` (or SIGTERM/SIGINT). One service per
    deployment: a second one fails at once, naming the first. Each look holds the deployment's lock; the
    retraining job runs in ``workdir`` (default: this process's folder). ``adopt``: a cluster deployment's
    adoption document (:func:`~wolt_jupyter.updater.manifests.adoption_document`), recorded here if this state
    dir has no record of it yet (a pod's first start)."""
    from wolt_jupyter import deployments
    from wolt_jupyter.locking import deployment_lock
    from wolt_jupyter.updater.history import updater_dir
    from wolt_jupyter.updater.service import UpdateService

    if adopt is not None:
        adopt_deployment(policy.deployment, adopt)
    deployments.revision_store().record(policy.deployment)  # NotFound: deploy it first
    stop = stop or threading.Event()
    wake = threading.Event()  # set by a registry webhook: poll now
    service = UpdateService(policy, DeploymentActions(policy), retrain_cwd=workdir, **service_options)
    publish = _remote_control(service)
    with contextlib.ExitStack() as running:
        running.enter_context(
            deployment_lock(updater_dir(policy.deployment), policy.deployment, "update service", timeout=0)
        )
        hook = policy.watch.webhook
        if hook is not None:
            from wolt_jupyter.updater.trigger import WebhookTrigger

            trigger = WebhookTrigger(hook.secret, policy.watch.model, wake.set, host=hook.host, port=hook.port,
                                     path=hook.path)  # fmt: skip
            running.enter_context(trigger)
            log.info("receiving MLflow registry webhooks at %s", trigger.url)
        running.enter_context(service.sending())  # webhook messages, after each look's actions
        log.info("update service for %s watching %s", policy.deployment, policy.watch.model)
        while not stop.is_set():
            try:
                with deployments.lock(policy.deployment, "update service step"):
                    if not deployments.revision_store().exists(policy.deployment):
                        log.warning("%s was undeployed: its update service stops", policy.deployment)
                        break
                    decision = service.tick_then_tell()
                publish()
                service.look_worked()
                if decision is not None and decision.action != "hold":
                    log.info("%s: %s — %s", policy.deployment, decision.action, decision.reason)
            except WoltError as exc:
                log.error("update service %s: %s", policy.deployment, str(exc).splitlines()[0])
                service.look_failed(exc)
            except Exception as exc:  # one bad look must not end the service
                log.exception("update service %s: %s", policy.deployment, exc)
                service.look_failed(exc)
            _sleep(_next_look(service), stop, wake, service.commands.any_pending)


def _remote_control(service: Any) -> Callable[[], None]:
    """In a pod (``WOLT_UPDATER_CONTROL`` set by ``updater render``): people's commands come through the
    ConfigMap it names, and the state they are judged against goes there after each look. What publishes the
    state (nothing outside a pod)."""
    import os
    from dataclasses import asdict

    from wolt_jupyter import deployments
    from wolt_jupyter.updater.commands import CONTROL_ENV, ClusterCommands
    from wolt_jupyter.updater.service import ServiceState

    name = service.policy.deployment
    where = deployments.cluster_of(name) if os.environ.get(CONTROL_ENV) else None
    if where is None:
        return lambda: None
    channel = ClusterCommands(where[0], where[1], name)
    service.commands = channel
    log.info("taking rollout commands from ConfigMap %s", channel.name)

    def publish() -> None:
        try:
            channel.publish(asdict(ServiceState.read(service.state_path)))
        except Exception as exc:  # the next look publishes again
            log.warning("%s: the rollout state could not be published: %s", name, one_line(exc))

    return publish


def _next_look(service: Any) -> float:
    try:
        return service.next_look()
    except Exception:  # an unreadable state file is the next tick's to report
        return service.policy.rollout.analysis_interval


def _sleep(
    seconds: float,
    stop: threading.Event,
    wake: threading.Event,
    asked: Callable[[], bool] = lambda: False,
) -> None:
    """Until the next look: ``seconds``, or sooner when stopped, woken by a webhook, or ``asked`` (a person's
    command waits)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and not wake.is_set() and not asked() and time.monotonic() < deadline:
        wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
    wake.clear()


# -- the background process a notebook starts ------------------------------------------------------------------
def _paths(deployment: str) -> tuple[Path, Path, Path]:
    from wolt_jupyter.updater.history import updater_dir

    d = updater_dir(deployment)
    return d / "service.json", d / "service.log", d / "policy.yaml"


def policy_path(deployment: str) -> Path:
    """The policy the deployment's service runs (or last ran) with."""
    return _paths(deployment)[2]


def start(policy: Policy | str | dict, *, policy_text: str | None = None) -> dict[str, Any]:
    """Start the service for ``policy`` as a supervised background process (restarted if it crashes, like a
    local runtime); returns its state. ``policy_text``: the YAML to run (kept 0600 beside its state)."""
    from wolt_jupyter.revisions import write_atomic

    pol = policy if isinstance(policy, Policy) else Policy.load(policy)
    _check_writable(pol)  # what the background process cannot receive first: the fix is in the notebook
    _check_fits(pol)
    state_path, log_path, policy_path = _paths(pol.deployment)
    if status(pol.deployment).get("running"):
        raise InvalidArgument(
            f"the update service of {pol.deployment!r} is already running; %wolt_autoupdate {pol.deployment} --stop first"
        )
    if policy_text is None and is_yaml_text(policy):
        policy_text = str(policy)  # as written, comments and all
    if policy_text is None:
        if isinstance(policy, str) and Path(policy).expanduser().is_file():
            policy_text = Path(policy).expanduser().read_text()
        else:
            import yaml

            _check_writable(pol)
            # the private copy (0600) keeps the secrets: the background process has no other way to them
            policy_text = yaml.safe_dump(without_unset(pol.to_dict(secrets=True)), sort_keys=False)
    write_atomic(policy_path, policy_text, mode=0o600)
    # relative paths in the policy (dataset, retraining command or notebook) mean what they meant where it was
    # written: next to its file, or the notebook's folder for a dict or a variable
    is_file = isinstance(policy, str) and not is_yaml_text(policy) and Path(policy).expanduser().is_file()
    base = Path(policy).expanduser().resolve().parent if is_file else Path.cwd()  # type: ignore[arg-type]
    command = [
        sys.executable, "-m", "wolt_jupyter.serving.supervisor", "--state", str(state_path), "--log", str(log_path),
        "--", sys.executable, "-m", "wolt_jupyter.cli", "updater", "run", "--policy", str(policy_path),
        "--base", str(base),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=base,
    )
    from wolt_jupyter import deployments

    # an undeploy stops it first (deployments knows processes attached to a deployment, not the updater)
    deployments.attach(pol.deployment, ATTACHMENT, proc.pid, "update service")
    deadline = time.monotonic() + 10
    # the state file of an earlier run may still be there: wait for this supervisor's own
    while time.monotonic() < deadline and _state_pid(state_path) != proc.pid:
        time.sleep(0.05)
    return {**status(pol.deployment), "pid": proc.pid}


def _check_fits(policy: Policy) -> None:
    """What would make the service fail at once, refused here in one line instead of a crash loop."""
    from wolt_jupyter import deployments

    try:
        deployments.revision_store().record(policy.deployment)
    except NotFound:
        raise InvalidArgument(
            f"there is no deployment {policy.deployment!r} to update: deploy it first "
            f"(%wolt_deploy {policy.deployment} --model models:/{policy.watch.model}@champion)"
        ) from None
    dataset = policy.offline.dataset if policy.offline is not None else None
    local = (
        isinstance(dataset, str) and "://" not in dataset and not dataset.startswith(("runs:/", "models:/"))
    )
    if local and not Path(dataset).expanduser().exists():  # type: ignore[arg-type]
        raise InvalidArgument(f"offline.dataset {dataset!r} does not exist: give the holdout's path")


def _state_pid(state_path: Path) -> int | None:
    import json

    try:
        return json.loads(state_path.read_text()).get("supervisor_pid")
    except (OSError, ValueError):
        return None


def _check_writable(policy: Policy) -> None:
    """What a policy held in memory cannot hand to the background process, refused in one line."""
    offline = policy.offline
    if offline is not None and not isinstance(offline.dataset, (str, Path)):
        raise InvalidArgument(
            f"policy field 'offline.dataset' is a {type(offline.dataset).__name__}, which the background service "
            "cannot receive: write it to a .parquet file (df.to_parquet('holdout.parquet')) and give the path"
        )
    if offline is not None and any(m.fn is not None for m in offline.metrics):
        raise InvalidArgument(
            "policy field 'offline.metrics' holds a Python callable, which the background service cannot "
            "receive: use a scikit-learn metric name, or run the service in this process (updater.run.serve)"
        )


def status(deployment: str) -> dict[str, Any]:
    """Whether the service of ``deployment`` runs, its supervisor's state and the log's last lines."""
    import json

    from wolt_jupyter.backends.local import log_tail
    from wolt_jupyter.updater.history import service_health

    state_path, log_path, _ = _paths(deployment)
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {"running": False}
    pid = state.get("supervisor_pid")
    running = bool(pid) and state.get("status") != "stopped" and not process_gone(int(pid))
    health = service_health(deployment) if running else None
    if health is not None:  # alive, but its looks keep failing
        state = {**state, "status": "failing", "reason": health["reason"], "failing_since": health["since"]}
    return {**state, "running": running, "log": log_tail(log_path, 5)}


def stop_service(deployment: str, timeout: float = 30.0) -> bool:
    """Stop the background service of ``deployment``; False if it was not running."""
    from wolt_jupyter import deployments

    st = status(deployment)
    if not st.get("running"):
        deployments.detach(deployment, ATTACHMENT)
        return False
    stop_process_group(int(st["supervisor_pid"]), timeout)
    deployments.detach(deployment, ATTACHMENT)
    return True


def left_behind(deployment: str) -> str | None:
    """What a stopped service leaves in ``deployment`` mid-rollout — the candidate's version, step and share of
    traffic — and the command that takes it out; None when no candidate is deployed."""
    from wolt_jupyter import deployments
    from wolt_jupyter.registry import pinned_version

    store = deployments.revision_store()
    if not store.exists(deployment):
        return None
    spec = store.spec(deployment)
    candidate = next((v for v in spec.variants if v.name == CANDIDATE), None)
    if candidate is None:
        return None
    pinned = pinned_version(candidate.model)
    what = f"version {pinned[1]} of {pinned[0]}" if pinned else candidate.model
    if candidate.shadow:
        where = "at its shadow step (a copy of every request, answering none)"
    else:
        where = f"at its canary {candidate.traffic}% step ({candidate.traffic}% of live traffic)"
    champion = [v.name for v in spec.variants if not v.shadow and v.name != CANDIDATE]
    earlier = [r for r in store.revisions(deployment) if r < store.record(deployment).revision]
    before = store.spec(deployment, earlier[-1]) if earlier else None
    if before is not None and all(v.name != CANDIDATE for v in before.variants):  # the champion alone
        fix = f"%wolt_rollback {deployment} (back to revision {earlier[-1]}, without it)"
    elif champion and not candidate.shadow:
        fix = f"%wolt_promote {deployment} {champion[0]} (the champion's variant takes all traffic)"
    elif before is not None:
        fix = (
            f"%wolt_rollback {deployment} (the step before), then %wolt_promote {deployment} CHAMPION_VARIANT"
        )
    else:
        fix = f"%wolt_deploy {deployment} with a spec without the variant {CANDIDATE!r}"
    return (
        f"the variant {CANDIDATE!r} — {what} — stays {where}. Take it out: {fix}; or resume the rollout at "
        f"this step: %wolt_autoupdate {deployment} --policy …"
    )


def waiting_messages(deployment: str) -> int:
    """Webhook messages queued and not sent yet (they go when the service runs again)."""
    from wolt_jupyter.updater.history import updater_dir
    from wolt_jupyter.updater.outbox import OUTBOX_FILE, Outbox

    return Outbox(updater_dir(deployment) / OUTBOX_FILE, writer=False).counts()["pending"]


def autoupdate(name: str, policy: Policy | str | dict | None = None, *, stop: bool = False) -> dict[str, Any]:
    """``wolt_jupyter.autoupdate("eta", "policy.yaml")`` starts the deployment's update service in the
    background; ``stop=True`` stops it (``left``: what it leaves mid-rollout); with neither, its status."""
    if stop:
        return {"stopped": stop_service(name), "left": left_behind(name), "waiting": waiting_messages(name)}
    if policy is None:
        return status(name)
    pol = policy if isinstance(policy, Policy) else Policy.load(policy)
    if pol.deployment != name:
        raise InvalidArgument(f"the policy is for deployment {pol.deployment!r}, not {name!r}")
    return start(policy)
