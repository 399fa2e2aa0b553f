"""Deploying: build a spec, pin it, record it as a revision, hand it to the target's backend.

The same code path for every target and every front end (magics, the Python API, the CLI, the MLflow
deployments plugin): traffic changes, promotion and rollback are new revisions of the spec, applied by the
backend that runs the deployment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wolt_jupyter.backends.base import Backend, Deployment, Progress, backend_class
from wolt_jupyter.config import TARGETS, settings
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.revisions import DeploymentRecord, RevisionStore
from wolt_jupyter.spec import DeploymentSpec, LoggingSpec, Routing, Variant, check_dns_label

if TYPE_CHECKING:
    import pandas as pd

_NAMED = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?):(?P<uri>(models:/|runs:/|file:|/).*)$")
_URI_PREFIXES = ("models:/", "runs:/", "file:", "/")
DEPLOYMENT_COLUMNS = ["name", "target", "status", "url", "revision", "variants"]


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
    match = _NAMED.match(item)
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
    if target not in TARGETS:
        raise InvalidArgument(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    s = settings()
    cls = backend_class(target)
    return cls(settings=s, namespace=namespace or s.namespace)  # type: ignore[call-arg]


def _store() -> RevisionStore:
    return RevisionStore(settings().home)


def _backend_of(name: str) -> tuple[Backend, DeploymentRecord]:
    rec = _store().record(name)
    return backend(rec.target, namespace=rec.namespace), rec


def _apply(
    rec: DeploymentRecord, spec: DeploymentSpec, *, wait: bool, progress: Progress | None
) -> Deployment:
    """Record ``spec`` as the next revision and apply it; a failed apply leaves the record where it was."""
    store = _store()
    be = backend(rec.target, namespace=rec.namespace)
    revision = store.add_revision(spec)
    before = rec.revision
    rec.revision = revision
    store.save_record(rec)
    try:
        deployment = be.apply(spec, revision, wait=wait, progress=progress)
    except BaseException:
        store.discard_revision(spec.name, revision)  # a rollback must never land on a revision that never ran
        rec = store.record(spec.name)
        rec.revision = before
        store.save_record(rec)
        raise
    deployment.revision = revision
    return deployment


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
    s = settings()
    store = _store()
    existing = store.record(name) if store.exists(name) else None
    target = target or (existing.target if existing else s.default_target)
    if existing and existing.target != target:
        raise InvalidArgument(
            f"deployment {name!r} runs on {existing.target}; undeploy it first to move it to {target}"
        )
    be = backend(target, namespace=namespace or (existing.namespace if existing else None))
    if dry_run:
        plan = be.plan(pinned, dry_run=True)  # the same checks an apply runs first
        return Deployment(
            name=name,
            target=target,
            status="dry-run",
            namespace=getattr(be, "namespace", None) if target != "local" else None,
            variants=Deployment.describe_variants(pinned),
            manifests=plan.manifests,
            checks=plan.checks,
            warnings=plan.warnings,
            diff=be.diff(pinned, plan.manifests) if existing else None,
            revision=existing.revision if existing else None,
        )
    rec = existing or DeploymentRecord(
        name=name, target=target, namespace=None if target == "local" else getattr(be, "namespace", None)
    )
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
    return deployment


def traffic(name: str, weights: Mapping[str, int], *, wait: bool = True) -> Deployment:
    """New weights for the live variants (the ones not named get 0); shadows are unchanged."""
    rec = _store().record(name)
    spec = _store().spec(name).with_traffic(weights)
    return _apply(rec, spec, wait=wait, progress=None)


def promote(name: str, variant: str, *, wait: bool = True) -> Deployment:
    """``variant`` takes all the traffic; other live variants are dropped, shadows kept."""
    rec = _store().record(name)
    spec = _store().spec(name).promoted(variant)
    return _apply(rec, spec, wait=wait, progress=None)


def rollback(name: str, *, wait: bool = True) -> Deployment:
    """Apply the revision before the current one again (as a new revision, like ``kubectl rollout undo``)."""
    rec = _store().record(name)
    store = _store()
    spec = store.spec(name, store.previous(name))
    return _apply(rec, spec, wait=wait, progress=None)


def undeploy(name: str) -> None:
    be, _ = _backend_of(name)
    be.delete(name)
    _store().remove(name)


def deployments() -> pd.DataFrame:
    """Every deployment recorded in the state dir (by any kernel), with its live status."""
    import pandas as pd

    rows = []
    for name in _store().names():
        try:
            rows.append(get(name).as_row())
        except Exception as exc:  # one broken record must not hide the others
            rows.append({"name": name, "status": f"unknown: {exc}"})
    return pd.DataFrame(rows, columns=DEPLOYMENT_COLUMNS)


def predict(
    name: str, data: Any, *, per_row: bool = False, route_key_column: str | None = None
) -> pd.DataFrame:
    """Send ``data`` through the deployment's endpoint; predictions with the answering variant."""
    from wolt_jupyter.client import predict_frame

    deployment = get(name)
    if deployment.status != "ready" or not deployment.url:
        raise InvalidArgument(f"deployment {name!r} is {deployment.status}, not ready: see %wolt_deployments")
    return predict_frame(deployment.url, name, data, per_row=per_row, route_key_column=route_key_column)


def responses(name: str, **filters: Any) -> pd.DataFrame:
    """The deployment's response log; a running local deployment is asked to flush first, so every
    request answered so far (and its shadow copies) is in the frame."""
    from wolt_jupyter.responses import responses as read

    store = _store()
    if store.exists(name) and store.record(name).target == "local":
        be = backend("local")
        be.flush(name)  # type: ignore[attr-defined]
    return read(name, **filters)
