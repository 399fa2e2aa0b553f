"""Deploying: build a spec, pin it, record it as a revision, hand it to the target's backend.

The same code path for every target and every front end (magics, the Python API, the CLI, the MLflow
deployments plugin): traffic changes, promotion and rollback are new revisions of the spec, applied by the
backend that runs the deployment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wolt_jupyter._display import Card
from wolt_jupyter.backends.base import Backend, Deployment, Progress, backend_class
from wolt_jupyter.config import mask_url, settings
from wolt_jupyter.errors import InvalidArgument, WoltError
from wolt_jupyter.responses.store import configured_store_url, store_url
from wolt_jupyter.revisions import SINCE_DEPLOY, DeploymentRecord, RevisionStore
from wolt_jupyter.spec import DeploymentSpec, LoggingSpec, Routing, Variant, check_dns_label

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
_NAMED = re.compile(r"(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?):(?P<uri>(models:/|runs:/|file:|/).*)")
_URI_PREFIXES = ("models:/", "runs:/", "file:", "/")
DEPLOYMENT_COLUMNS = [
    "name",
    "target",
    "status",
    "url",
    "grpc",
    "revision",
    "restarts",
    "variants",
    "response_log",
]


# -- building a spec from magic-style arguments ---------------------------------------------------------------
def _split_weighted(item: str, flag: str) -> tuple[str | None, str, int]:
    """``[NAME:]URI=WEIGHT`` → (name, uri, weight)."""
    uri_part, sep, weight_text = item.rpartition("=")
    if not sep or not uri_part:
        raise InvalidArgument(f"{flag} {item!r}: expected [NAME:]URI=WEIGHT, e.g. {flag} models:/eta/7=10")
    try:
        weight = int(weight_text)
    except ValueError:
        raise InvalidArgument(
            f"{flag} {item!r}: weight {weight_text!r} is not a whole number 0-100"
        ) from None
    name, uri = _split_named(uri_part)
    return name, uri, weight


def _split_named(item: str) -> tuple[str | None, str]:
    if item.startswith(_URI_PREFIXES):  # a bare URI: its scheme is not a variant name
        return None, item
    match = _NAMED.fullmatch(item)
    return (match["name"], match["uri"]) if match else (None, item)


def _next_name(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def build_spec(
    name: str,
    model: str,
    *,
    ab: Iterable[str] = (),
    canary: str | None = None,
    shadow: Iterable[str] = (),
    sticky_key: str | None = None,
    log_responses: bool = True,
    sample: float = 1.0,
    replicas: int = 1,
    resources: Mapping[str, Any] | None = None,
) -> DeploymentSpec:
    """The spec ``%wolt_deploy`` describes: ``main`` from ``model`` takes the weight the others leave.

    ``ab`` items are ``[NAME:]URI=WEIGHT`` (named ``challenger``, ``challenger-2``, … unless named), ``canary``
    is one ``[NAME:]URI=WEIGHT`` (named ``canary``), ``shadow`` items ``[NAME:]URI`` (``shadow``, ``shadow-2``, …).
    """
    check_dns_label(name, "deployment name")
    main_name, main_uri = _split_named(model)
    main_name = main_name or "main"
    taken = {main_name}
    variants: list[Variant] = []
    for item in ab:
        vname, uri, weight = _split_weighted(item, "--ab")
        variants.append(Variant(vname or _next_name("challenger", taken), uri, weight))
        taken.add(variants[-1].name)
    if canary:
        vname, uri, weight = _split_weighted(canary, "--canary")
        variants.append(Variant(vname or _next_name("canary", taken), uri, weight))
        taken.add(variants[-1].name)
    others = sum(v.traffic for v in variants)
    if others >= 100 or others < 0:
        raise InvalidArgument(
            f"the other variants take {others}% of the traffic, leaving nothing for {main_name!r}; "
            "weights of --ab/--canary must sum to less than 100"
        )
    variants.insert(0, Variant(main_name, main_uri, 100 - others))
    for item in shadow:
        vname, uri = _split_named(item)
        variants.append(Variant(vname or _next_name("shadow", taken), uri, shadow=True))
        taken.add(variants[-1].name)
    return DeploymentSpec(
        name=name,
        variants=tuple(variants),
        routing=Routing(sticky_key=sticky_key),
        logging=LoggingSpec(responses=log_responses, sample=sample),
        replicas=replicas,
        resources=dict(resources or {}),
    ).validate()


def parse_weights(items: Iterable[str]) -> dict[str, int]:
    """``["main=90", "challenger=10"]`` → weights; one parser for the magic and the CLI."""
    from wolt_jupyter.tracking import parse_pairs

    pairs = parse_pairs(list(items), example="main=50 challenger=50")
    bad = [k for k, v in pairs.items() if not isinstance(v, int) or isinstance(v, bool)]
    if bad:
        raise InvalidArgument(f"weights are whole numbers: fix {', '.join(bad)}")
    return pairs


def load_spec(source: DeploymentSpec | Mapping[str, Any] | str) -> DeploymentSpec:
    """A spec from a DeploymentSpec, a dict, YAML text, or a path to a YAML file."""
    from pathlib import Path

    if isinstance(source, DeploymentSpec):
        return source.validate()
    if isinstance(source, Mapping):
        return DeploymentSpec.from_dict(source)
    if isinstance(source, str):
        path = Path(source).expanduser()
        if "\n" not in source and path.suffix in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise InvalidArgument(f"spec file {source!r} does not exist")
            return DeploymentSpec.from_yaml(path.read_text())
        return DeploymentSpec.from_yaml(source)
    raise InvalidArgument(
        f"a spec is a DeploymentSpec, a dict, YAML text or a .yaml path, got {type(source).__name__}"
    )


# -- backends --------------------------------------------------------------------------------------------------
def backend(target: str, *, namespace: str | None = None) -> Backend:
    cls = backend_class(target)  # an unknown name is refused first, naming the known ones
    s = settings()
    return cls(settings=s, namespace=namespace or s.namespace)  # type: ignore[call-arg]


def revision_store() -> RevisionStore:
    """The deployment records and spec revisions under the state dir (what the updater, the ground-truth
    lookup and tests read besides this module)."""
    return RevisionStore(settings().home)


def lock(name: str, operation: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
    """The deployment's exclusive lock (see :mod:`wolt_jupyter.locking`); every state change holds it."""
    from wolt_jupyter.locking import deployment_lock

    return deployment_lock(revision_store().dir(name), name, operation, timeout)


def _backend_of(name: str) -> tuple[Backend, DeploymentRecord]:
    rec = revision_store().record(name)
    return backend(rec.target, namespace=rec.namespace), rec


def cluster_of(name: str) -> tuple[Any, str] | None:
    """(the KubeCluster, the namespace) ``name`` runs in; None for the local target."""
    be, _ = _backend_of(name)
    cluster = getattr(be, "cluster", None)
    return (cluster, be.namespace) if cluster is not None else None  # type: ignore[attr-defined]


def runtime_exits(name: str, since: float) -> list[str]:
    """Every exit of ``name``'s runtime (a crash, a kill, an OOM) since ``since`` (epoch seconds)."""
    be, _ = _backend_of(name)
    return be.runtime_exits(name, since)


def _apply(
    rec: DeploymentRecord, spec: DeploymentSpec, *, wait: bool, progress: Progress | None
) -> Deployment:
    """Record ``spec`` as the next revision and apply it; a failed apply leaves the record where it was."""
    store = revision_store()
    be = backend(rec.target, namespace=rec.namespace)
    revision = store.add_revision(spec)
    before = rec.revision
    rec.revision = revision
    store.save_record(rec)
    try:
        deployment = be.apply(spec, revision, wait=wait, progress=progress)
    except BaseException as exc:
        if isinstance(exc, WoltError):  # not on Ctrl-C: the user interrupted a wait, not a failed change
            try:
                be.revert(spec.name, store.spec(spec.name, before) if before else None, before or None)
            except WoltError as again:
                log.warning("could not put back what served before the failed change: %s", again)
        store.discard_revision(spec.name, revision)  # a rollback must never land on a revision that never ran
        rec = store.record(spec.name)
        rec.revision = before
        store.save_record(rec)
        raise
    deployment.revision = revision
    return _with_log(deployment)


# -- public API -----------------------------------------------------------------------------------------------
def deploy(
    name: str,
    model: str | None = None,
    *,
    ab: Iterable[str] = (),
    canary: str | None = None,
    shadow: Iterable[str] = (),
    sticky_key: str | None = None,
    spec: DeploymentSpec | Mapping[str, Any] | str | None = None,
    target: str | None = None,
    namespace: str | None = None,
    dry_run: bool = False,
    wait: bool = True,
    progress: Progress | None = None,
) -> Deployment:
    """Deploy ``model`` (with A/B, canary and shadow variants) or a whole ``spec`` to ``target``.

    Model URIs are checked against the registry and aliases pinned to versions first; the pinned spec is
    kept as a new revision. ``dry_run`` changes nothing and returns what would be applied.
    """
    from wolt_jupyter.registry import pin
    from wolt_jupyter.serving.compatibility import check_variants_fit

    if spec is not None:
        if model is not None or ab or canary or shadow:
            raise InvalidArgument("give either --spec or --model/--ab/--canary/--shadow, not both")
        the_spec = load_spec(spec)
        if the_spec.name != name:
            the_spec = replace(the_spec, name=check_dns_label(name, "deployment name")).validate()
    elif model is None:
        raise InvalidArgument(
            "nothing to deploy: give --model URI (e.g. models:/eta@champion) or --spec FILE"
        )
    else:
        the_spec = build_spec(name, model, ab=ab, canary=canary, shadow=shadow, sticky_key=sticky_key)
    pinned = the_spec.pinned(pin)
    check_variants_fit(pinned)  # before anything changes: a variant that cannot read main's inputs is refused
    if dry_run:
        return _deploy(name, pinned, target, namespace, dry_run=True, wait=wait, progress=progress)
    with lock(name, "deploy"):
        return _deploy(name, pinned, target, namespace, dry_run=False, wait=wait, progress=progress)


def _deploy(
    name: str,
    pinned: DeploymentSpec,
    target: str | None,
    namespace: str | None,
    *,
    dry_run: bool,
    wait: bool,
    progress: Progress | None,
) -> Deployment:
    s = settings()
    store = revision_store()
    existing = store.record(name) if store.exists(name) else None
    target = target or (existing.target if existing else s.default_target)
    if existing and existing.target != target:
        raise InvalidArgument(
            f"deployment {name!r} runs on {existing.target}; undeploy it first to move it to {target}"
        )
    be = backend(target, namespace=namespace or (existing.namespace if existing else None))
    if dry_run:
        plan = be.plan(pinned, dry_run=True, revision=store.next_revision(name))  # an apply's checks
        return Deployment(
            name=name,
            target=target,
            status="dry-run",
            namespace=getattr(be, "namespace", None) if target != "local" else None,
            variants=Deployment.describe_variants(pinned),
            manifests=plan.shown,  # Secrets' values masked: the real ones go only to the apply
            checks=plan.checks,
            warnings=plan.warnings,
            diff=be.diff(pinned, plan.manifests) if existing else None,  # masked by the diff itself
            revision=existing.revision if existing else None,
            response_store=mask_url(store_url(name, s) if existing else configured_store_url(name, s)),
        )
    rec = existing or DeploymentRecord(
        name=name,
        target=target,
        namespace=None if target == "local" else getattr(be, "namespace", None),
        response_store=configured_store_url(name, s),  # what every runtime writes to, kept for good
    )
    rec.response_store = rec.response_store or configured_store_url(name, s)  # a record older than the field
    if existing:
        return _apply(rec, pinned, wait=wait, progress=progress)
    store.save_record(rec)
    try:
        return _apply(rec, pinned, wait=wait, progress=progress)
    except BaseException:
        store.remove(name)  # a first deploy that failed leaves no deployment behind
        raise


def get(name: str) -> Deployment:
    be, rec = _backend_of(name)
    deployment = be.status(name)
    deployment.revision = rec.revision
    return _with_log(deployment)


def _with_log(deployment: Deployment) -> Deployment:
    """Every card names the response store the deployment writes to (masked); a local deployment's card
    and row also show its log's size, and warn when the disk fills."""
    if deployment.status == "dry-run":
        return deployment
    with contextlib.suppress(Exception):  # an unreadable record must not hide the deployment
        deployment.response_store = mask_url(store_url(deployment.name))
    if deployment.target != "local":
        return deployment
    try:
        log = log_summary(deployment.name)
        deployment.response_log = log.short()
        if log.warning:
            deployment.warnings.append(log.warning)
    except Exception as exc:  # an unreadable store must not hide the deployment
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        deployment.response_log = f"unreadable: {first}"
    return deployment


def traffic(name: str, weights: Mapping[str, int], *, wait: bool = True) -> Deployment:
    """New weights for the live variants (the ones not named get 0); shadows are unchanged."""
    revision_store().record(name)  # NotFound before a lock dir is made for a name that does not exist
    with lock(name, "traffic"):
        rec = revision_store().record(name)
        spec = revision_store().spec(name).with_traffic(weights)
        return _apply(rec, spec, wait=wait, progress=None)


def promote(name: str, variant: str, *, wait: bool = True) -> Deployment:
    """``variant`` takes all the traffic; other live variants are dropped, shadows kept."""
    revision_store().record(name)  # NotFound before a lock dir is made for a name that does not exist
    with lock(name, "promote"):
        rec = revision_store().record(name)
        spec = revision_store().spec(name).promoted(variant)
        return _apply(rec, spec, wait=wait, progress=None)


def rollback(name: str, *, wait: bool = True) -> Deployment:
    """Apply the revision before the current one again (as a new revision, like ``kubectl rollout undo``)."""
    revision_store().record(name)  # NotFound before a lock dir is made for a name that does not exist
    with lock(name, "rollback"):
        store = revision_store()
        rec = store.record(name)
        spec = store.spec(name, store.previous(name))
        return _apply(rec, spec, wait=wait, progress=None)


@dataclass(repr=False)
class Undeployed(Card, title="Undeployed", css_class="wolt-deployment-card"):
    """What an undeploy stopped, and what the runtime could not finish before it went (counted, never silent)."""

    name: str
    target: str
    summary: dict[str, Any]
    stopped: list[str] = field(default_factory=list)  # processes attached to it, stopped first

    @property
    def shadow_not_logged(self) -> int:
        return int(self.summary.get("shadow_discarded", 0))

    def _rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [("deployment", f"{self.name} ({self.target}) removed")]
        if self.summary:
            rows.append(
                (
                    "response log",
                    f"{self.summary.get('written', 0)} rows written, "
                    f"{self.summary.get('dropped', 0)} dropped, {self.summary.get('deferred', 0)} left in the spool",
                )
            )
            rows.append(
                (
                    "shadows",
                    f"{self.shadow_not_logged} shadow rows not logged"
                    if self.shadow_not_logged
                    else "every shadow copy predicted and logged",
                )
            )
        if self.stopped:
            rows.append(("stopped with it", ", ".join(self.stopped)))
        rows.append(("kept", "revisions and the response log stay readable"))
        return rows


def undeploy(name: str) -> Undeployed:
    """Stop ``name`` and the processes attached to it (its update service); its revisions and response log
    stay. The result says what was not logged."""
    revision_store().record(name)  # NotFound before a lock dir is made for a name that does not exist
    # before the lock: an attached service finishes the look it is in (which holds the lock), then exits
    stopped = stop_attached(name)
    with lock(name, "undeploy"):
        be, rec = _backend_of(name)
        summary = be.delete(name) or {}
        revision_store().remove(name)
    return Undeployed(name, rec.target, dict(summary), stopped)


# -- processes attached to a deployment -----------------------------------------------------------------------
# A background process working on a deployment (the update service) attaches itself here, and an undeploy, from
# whatever front end, stops it first. Kept as files, so any process's undeploy finds it; this module knows the
# processes only by pid and name, never what they are, so layers still point downward.
ATTACHED_DIR = "attached"


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc): a pid reused by another process differs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def attach(name: str, key: str, pid: int, what: str) -> None:
    """Record that the process group led by ``pid`` (``what``, e.g. "update service") works on deployment
    ``name``, under ``key`` (one of a kind: attaching again replaces it). :func:`undeploy` stops it first."""
    from wolt_jupyter.revisions import write_atomic

    check_dns_label(key, "attachment key")
    record = {"pid": pid, "what": what, "started": _process_start(pid)}
    write_atomic(revision_store().dir(name) / ATTACHED_DIR / f"{key}.json", json.dumps(record))  # 0600


def detach(name: str, key: str) -> None:
    (revision_store().dir(name) / ATTACHED_DIR / f"{check_dns_label(key, 'attachment key')}.json").unlink(
        missing_ok=True
    )


def stop_attached(name: str, timeout: float = 30.0) -> list[str]:
    """Stop every process attached to ``name`` (SIGTERM to its group; SIGKILL after ``timeout`` seconds) and
    forget it; what was stopped, e.g. ``["update service (pid 4242)"]``."""
    from wolt_jupyter.processes import process_gone, stop_process_group

    stopped = []
    for path in sorted((revision_store().dir(name) / ATTACHED_DIR).glob("*.json")):
        try:
            info = json.loads(path.read_text())
            pid, what = int(info["pid"]), str(info["what"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        # gone, or its pid now another process's (started at another time): nothing of ours to stop
        if not process_gone(pid) and _process_start(pid) == info.get("started"):
            log.info("stopping the %s of %s (pid %d) before undeploying it", what, name, pid)
            stop_process_group(pid, timeout)
            stopped.append(f"{what} (pid {pid})")
        path.unlink(missing_ok=True)
    return stopped


def up(progress: Progress | None = None) -> list[Deployment]:
    """Start every local deployment recorded as running whose process is gone (after a reboot, a kill of the
    supervisor): the same revision, on the same port when it is free. Cluster deployments run by themselves."""
    results = []
    for name in revision_store().names():
        rec = revision_store().record(name)
        if rec.target != "local":
            continue
        with lock(name, "up"):
            be = backend("local")
            try:
                d = be.up(name, progress=progress)  # type: ignore[attr-defined]
            except WoltError as exc:
                d = Deployment(name=name, target="local", status="failed", message=str(exc).splitlines()[0])
            d.revision = rec.revision
            results.append(d)
    return results


def deployments() -> pd.DataFrame:
    """Every deployment recorded in the state dir (by any kernel), with its live status."""
    import pandas as pd

    rows = []
    for name in revision_store().names():
        try:
            rows.append(get(name).as_row())
        except Exception as exc:  # one broken record must not hide the others
            rows.append({"name": name, "status": f"unknown: {exc}"})
    with contextlib.suppress(Exception):  # dead ports leave the Prometheus targets
        backend("local").write_targets()  # type: ignore[attr-defined]
    return pd.DataFrame(rows, columns=DEPLOYMENT_COLUMNS)


def predict(
    name: str,
    data: Any,
    *,
    per_row: bool = False,
    route_key_column: str | None = None,
    protocol: str = "rest",
) -> pd.DataFrame:
    """Send ``data`` through the deployment's endpoint; predictions with the answering variant.
    ``protocol="grpc"`` sends over the deployment's gRPC port instead of REST."""
    from wolt_jupyter.client import predict_frame

    if protocol not in ("rest", "grpc"):
        raise InvalidArgument(f"protocol must be 'rest' or 'grpc', got {protocol!r}")
    deployment = get(name)
    if deployment.status != "ready" or not deployment.url:
        raise InvalidArgument(f"deployment {name!r} is {deployment.status}, not ready: see %wolt_deployments")
    url, grpc_url = _backend_of(name)[0].endpoint(deployment)
    assert url is not None  # a ready deployment has a URL (checked above)
    if protocol == "grpc" and not grpc_url:
        raise InvalidArgument(f"deployment {name!r} serves no gRPC: redeploy it to get a gRPC port")
    return predict_frame(
        url, name, data, per_row=per_row, route_key_column=route_key_column,
        grpc=grpc_url if protocol == "grpc" else None,
    )  # fmt: skip


def flush_log(name: str) -> None:
    """Ask a running local deployment to write every request it answered (bounded wait), so a read right
    after predicting sees them; warn about shadow copies still being predicted."""
    import warnings

    store = revision_store()
    if not (store.exists(name) and store.record(name).target == "local"):
        return
    answer = backend("local").flush(  # type: ignore[attr-defined]
        name, timeout=READ_FLUSH_S, shadow_timeout=READ_SHADOW_WAIT_S
    )
    queued = int(answer.get("shadow_queued") or 0)
    if queued:
        warnings.warn(
            f"{name}: {queued} shadow copies are still being predicted and are not in this frame yet",
            stacklevel=3,
        )


def revisions_for(name: str, revision: Any = SINCE_DEPLOY) -> list[int] | None:
    """The one rule for which revisions of ``name``'s response log an analysis reads (``read_responses``,
    ``compare``, ``drift``, the monitoring panel): :data:`SINCE_DEPLOY` (their default) the current revision
    and the ones before it that served the same models; a number or several, those (each must exist);
    ``"all"`` or None every row (None is returned). A deployment that is not recorded any more (undeployed)
    reads every row by default."""
    from wolt_jupyter.responses.query import revision_list

    if isinstance(revision, str) and revision == SINCE_DEPLOY:
        store = revision_store()
        return store.same_models(name) if store.exists(name) else None
    wanted = revision_list(revision)
    if wanted is None:
        return None
    known = revision_store().revisions(name)
    missing = [r for r in wanted if r not in known]
    if known and missing:
        raise InvalidArgument(
            f"deployment {name!r} has no revision {missing[0]}; its revisions: {_ranges(known)} "
            '(or revision="all")'
        )
    return sorted(set(wanted))


def revisions_text(revisions: list[int] | None, asked: Any = None, *, short: bool = False) -> str:
    """Which rows an analysis read, in words: ``of revision 2 (since the last deploy; ...)``; ``short``: the
    panel's ``revision 2``."""
    if revisions is None:
        return "every revision" if short else "of every revision"
    label = f"revision{'s' if len(revisions) > 1 else ''} {_ranges(revisions)}"
    if short:
        return label
    since = isinstance(asked, str) and asked == SINCE_DEPLOY
    return f"of {label} (since the last deploy; revision all for every row)" if since else f"of {label}"


def _ranges(numbers: list[int]) -> str:
    """``1-4, 7`` for [1, 2, 3, 4, 7]."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def log_summary(name: str) -> Any:
    """:class:`~wolt_jupyter.responses.summary.LogSummary` of the deployment's response log (its size on disk,
    what retention removed, the disk under it, and from a running local runtime what it could not log); the
    card of ``%wolt_responses NAME --info``."""
    from wolt_jupyter.responses.retention import Retention
    from wolt_jupyter.responses.summary import summary

    store = revision_store()
    retention = None
    if store.exists(name) and store.revisions(name):
        retention = Retention.of(store.spec(name).logging.retention)
    out = summary(name, retention=retention or Retention.of(None))
    if store.exists(name) and store.record(name).target == "local":
        state = backend("local").log_state(name)  # type: ignore[attr-defined]
        if state.get("logging"):
            out.add_runtime(state)  # what only the runtime knows: rows it could not log, requests refused
    return out


READ_FLUSH_S = 10.0  # a read waits this long at most for the runtime to write what it answered
READ_SHADOW_WAIT_S = 2.0  # … and this long for shadow copies still being predicted


def read_responses(name: str, *args: Any, **filters: Any) -> pd.DataFrame:
    """The deployment's response log. One rule for ``wolt_jupyter.read_responses(...)`` and ``%wolt_responses``:
    a running local deployment is first asked to write every request it answered (bounded wait); shadow
    copies still being predicted are waited for at most 2 s, and a warning says how many are not in the frame
    yet.

    ``revision`` defaults to "since the last deploy" (:func:`revisions_for`): the current revision and
    the ones before it that served the same models, so a rerun's analysis never mixes in an earlier deploy's
    rows; ``revision="all"`` reads every row, ``revision=N`` one revision. A deployment no longer recorded
    (undeployed) reads all its rows."""

    from wolt_jupyter.responses.query import read_frame

    if not args:
        filters["revision"] = revisions_for(name, filters.get("revision", SINCE_DEPLOY))
    if filters.get("url") is None and not args:
        flush_log(name)
    return read_frame(name, *args, **filters)
