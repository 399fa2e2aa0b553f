"""The cluster targets: ``kubernetes`` (the project's runtime), ``seldon`` and ``kserve``.

:class:`ClusterBackend` holds what the three share: resolve the cluster-side context, render the pinned spec,
run every pre-apply check (:meth:`ClusterBackend.plan`, the same for a dry run and an apply), server-side
apply through :class:`~wolt_jupyter.kubeclient.KubeCluster` and wait. Each target is a subclass that
declares its own pieces: the renderer, the kinds it creates, its main object (whose readiness rule, one per
kind, lives in :mod:`~wolt_jupyter.kubeclient`), its URL, and any check that needs the cluster.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlparse

from wolt_jupyter import kubeclient
from wolt_jupyter.backends.admission import admit
from wolt_jupyter.backends.base import Backend, Deployment, Plan, Progress
from wolt_jupyter.backends.render import (
    DEFAULT_IMAGE,
    GRPC_PORT,
    HTTP_PORT,
    LOOPBACK_HOSTS,
    MANAGED_BY,
    ClusterContext,
    credentials,
    render_kserve,
    render_kubernetes,
    render_seldon,
    response_store_problem,
    with_credentials,
)
from wolt_jupyter.config import Settings
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import DeploymentSpec, check_dns_label

WAIT_TIMEOUT_S = 600.0
log = logging.getLogger(__name__)
# artifact URI schemes a pod can read (object stores, HTTP, MLflow's proxied artifacts); anything else
# (file:, a bare path) lives on the notebook's machine
_SERVER_DRY_RUN = "server-side dry run (dryRun=All, fieldValidation=Strict)"
_REMOTE_SCHEMES = (
    *("s3", "gs", "gcs", "hdfs", "webhdfs", "http", "https", "wasbs", "abfss", "azure"),
    *("pvc", "oci", "hf", "mlflow-artifacts", "dbfs"),
)
_FIX = (
    "run an MLflow server with remote artifact storage (e.g. `mlflow server --artifacts-destination "
    "s3://BUCKET`), point tracking_uri at it and re-register the model"
)


class ClusterBackend(Backend):
    """Shared by the three cluster targets; subclasses fill in the class attributes and :meth:`url`."""

    target: ClassVar[str] = ""
    # a staticmethod, so the class attribute is a plain function of (spec, ctx), not bound to the backend
    renderer: ClassVar[staticmethod[[DeploymentSpec, ClusterContext], list[dict[str, Any]]]]
    main_object: ClassVar[tuple[str, str]]  # (apiVersion, kind) whose readiness is the deployment's
    kinds: ClassVar[tuple[tuple[str, str], ...]]  # every kind the renderer can produce, in apply order

    def __init__(self, settings: Settings, namespace: str | None = None) -> None:
        self.settings = settings
        self.namespace = check_dns_label(namespace or settings.namespace, "namespace")
        self._cluster: kubeclient.KubeCluster | None = None

    @property
    def cluster(self) -> kubeclient.KubeCluster:
        if self._cluster is None:
            self._cluster = kubeclient.KubeCluster(
                kubeconfig=self.settings.kubeconfig, context=self.settings.kube_context
            )
        return self._cluster

    # -- rendering and checks -------------------------------------------------------------------------------
    def context(self, spec: DeploymentSpec, revision: int | None = None) -> ClusterContext:
        """Resolve what rendering needs: artifact locations, the tracking URI and response store the pods
        see, the revision they serve."""
        from wolt_jupyter.registry import download_uri

        s = self.settings
        return ClusterContext(
            namespace=self.namespace,
            image=s.runtime_image or DEFAULT_IMAGE,
            tracking_uri=s.cluster_tracking,
            response_store_url=s.cluster_response_store(self.notebook_store(spec.name)),
            revision=revision,
            artifacts={v.name: download_uri(v.model) for v in spec.variants},
            request_logger_url=s.request_logger_url,
            pod_monitor=s.pod_monitor,
            service_account=s.service_account,
        )

    def render(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        return type(self).renderer(spec, self.context(spec))

    def plan(self, spec: DeploymentSpec, *, dry_run: bool = False, revision: int | None = None) -> Plan:
        """Render once and run every pre-apply check; a dry run reports cluster checks it could not run."""
        ctx = self.context(spec, revision)  # resolved once: registry lookups for the artifact locations
        manifests = type(self).renderer(spec, ctx)
        checks = [f"{line} (offline)" for line in admit(manifests)]
        warnings = self.reachability(spec, ctx)
        if warnings and self.settings.unreachable_artifacts == "refuse":
            raise InvalidArgument(warnings[0])
        problem = self.store_problem(spec, ctx)
        if (
            problem and not dry_run
        ):  # replicas logging apart would split the log: refused, whatever the setting
            raise InvalidArgument(problem)
        if problem:
            warnings.append(problem)
        cluster_checks = self.cluster_checks(spec, manifests, ctx)
        if dry_run:  # an apply is validated by the same server anyway; a dry run asks it explicitly
            creds = credentials(spec, ctx)
            cluster_checks.append((_SERVER_DRY_RUN, lambda: self.server_dry_run(manifests, creds)))
        for describe, check in cluster_checks:
            try:
                check()
            except kubeclient.ClusterError as exc:  # unreachable, forbidden: a refusal is InvalidArgument
                if not dry_run:
                    raise
                checks.append(f"{describe}: NOT RUN, needs the cluster ({exc})")
            else:
                checks.append(f"{describe} (asked the cluster)")
        return Plan(manifests, checks, warnings, credentials=credentials(spec, ctx))

    def cluster_checks(
        self, spec: DeploymentSpec, manifests: list[dict[str, Any]], ctx: ClusterContext
    ) -> list[tuple[str, Callable[[], None]]]:
        """Checks that depend on what the cluster runs now: (description, check raising on refusal)."""
        return []

    def server_dry_run(self, manifests: list[dict[str, Any]], creds: dict[str, str]) -> None:
        """Apply ``manifests`` with ``dryRun=All`` and ``fieldValidation=Strict``: the API server's own schema
        validation (a CRD's structural schema included), defaulting, pruning and admission, nothing persisted.
        A refusal is :class:`InvalidArgument`; an unreachable cluster or a missing CRD stays a ClusterError
        (the check is reported as not run)."""
        try:
            self.cluster.apply(with_credentials(manifests, creds), namespace=self.namespace, dry_run=True)
        except kubeclient.ClusterError as exc:
            if str(exc).startswith("invalid:"):
                raise InvalidArgument(f"{self.cluster.host} refused the {self.target} render: {exc}") from None
            raise

    def notebook_store(self, name: str) -> str:
        """The response store ``name`` writes to as this machine reaches it: the one its record names (the
        deploy records it first), else the configured one (a first dry run)."""
        from wolt_jupyter.responses.store import store_url

        return store_url(name, self.settings)

    def store_problem(self, spec: DeploymentSpec, ctx: ClusterContext) -> str | None:
        """Why the pods could not write the one shared response log (refused before an apply, a warning in
        a dry run); None. The operators' request loggers send elsewhere: only the kubernetes target asks."""
        return None

    def reachability(self, spec: DeploymentSpec, ctx: ClusterContext) -> list[str]:
        """One line per model the cluster could not load, saying how to fix it."""
        out = []
        for v in spec.variants:
            uri = ctx.artifacts.get(v.name, "")
            if urlparse(uri).scheme not in _REMOTE_SCHEMES:
                out.append(
                    f"variant {v.name}: {self.target} pods cannot read the model artifacts at {uri} "
                    f"(a path on this machine): {_FIX}"
                )
        return out

    def diff(self, spec: DeploymentSpec, manifests: list[dict[str, Any]]) -> str | None:
        return self.cluster.diff(manifests, namespace=self.namespace)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def apply(
        self, spec: DeploymentSpec, revision: int, *, wait: bool = True, progress: Progress | None = None
    ) -> Deployment:
        plan = self.plan(spec, revision=revision)
        for line in plan.warnings:
            log.warning("%s", line)
            if progress:
                progress(f"warning: {line}")
        if progress:
            kinds = ", ".join(f"{m['kind']}/{m['metadata']['name']}" for m in plan.manifests)
            progress(
                f"applying revision {revision} to {self.cluster.host} namespace {self.namespace}: {kinds}"
            )
        self.cluster.apply(with_credentials(plan.manifests, plan.credentials), namespace=self.namespace)
        if wait:
            self.cluster.wait_ready(
                plan.manifests, namespace=self.namespace, timeout=WAIT_TIMEOUT_S, on_progress=progress
            )
            self.settle(spec, progress)
        deployment = self.status(spec.name)
        deployment.warnings = plan.warnings
        return deployment

    def settle(self, spec: DeploymentSpec, progress: Progress | None) -> None:
        """After the workload is ready: anything else a client needs before "ready" is true for it."""

    def revert(self, name: str, previous: DeploymentSpec | None, revision: int | None = None) -> None:
        """A rollout that failed is undone by applying the revision that served, as it was rendered (its pods
        never left: the rollout keeps every old replica until a new one is ready); a failed first deploy is
        removed."""
        if previous is None:
            self.delete(name)
            return
        ctx = self.context(previous, revision)
        manifests = type(self).renderer(previous, ctx)
        self.cluster.apply(with_credentials(manifests, credentials(previous, ctx)), namespace=self.namespace)

    def status(self, name: str) -> Deployment:
        from wolt_jupyter.revisions import RevisionStore

        store = RevisionStore(self.settings.home)
        spec = store.spec(name) if store.exists(name) and store.revisions(name) else None
        api_version, kind = self.main_object
        obj = self.cluster.get(api_version, kind, name, namespace=self.namespace)
        if obj is None:
            status, message = "stopped", f"no {kind} {name} in namespace {self.namespace}"
        else:
            state, message = self.readiness(obj)
            status = {kubeclient.READY: "ready", kubeclient.FAILED: "failed"}.get(state, "starting")
        return Deployment(
            name=name,
            target=self.target,
            status=status,
            url=self.url(name, obj),
            grpc_url=self.grpc_url(name),
            namespace=self.namespace,
            variants=Deployment.describe_variants(spec) if spec else [],
            message=None if status == "ready" else message,
        )

    def readiness(self, obj: dict[str, Any]) -> tuple[str, str]:
        """The main object's (state, progress line): its kind's one rule, the same the apply's wait follows."""
        return kubeclient.READINESS[self.main_object[1]](obj)

    @abstractmethod
    def url(self, name: str, obj: dict[str, Any] | None) -> str | None:
        """The V2 REST base URL inside the cluster."""

    def grpc_url(self, name: str) -> str | None:
        return None

    # what an update service attached to the deployment adds beside kinds the target renders itself
    # (`wolt-jupyter updater render`): it watches one deployment, so it goes with it
    attached_kinds: ClassVar[tuple[tuple[str, str], ...]] = (
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
    )

    def delete(self, name: str) -> None:
        """Delete every object of this deployment the project created (found by label, whatever the spec),
        the update service attached to it included."""
        check_dns_label(name, "deployment name")
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by={MANAGED_BY}"
        kinds = list(reversed(self.kinds))
        kinds += [k for k in self.attached_kinds if k not in kinds]
        for api_version, kind in kinds:
            if not self.cluster.serves(api_version, kind):
                continue  # e.g. no Prometheus operator: there is no PodMonitor to delete
            for obj in self.cluster.list(
                api_version, kind, namespace=self.namespace, label_selector=selector
            ):
                self.cluster.delete(api_version, kind, obj["metadata"]["name"], namespace=self.namespace)


class KubernetesBackend(ClusterBackend):
    """The project's own runtime: any split, any number of shadows, sticky routing, sampled logging."""

    target = "kubernetes"
    renderer = staticmethod(render_kubernetes)
    main_object = ("apps/v1", "Deployment")
    kinds = (
        ("v1", "Secret"),  # the credentials: the tracking password, the response store's URL
        # the pods' account, allowed to read (and watch) their own ConfigMap: routing changes in place
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
    )

    def reachability(self, spec: DeploymentSpec, ctx: ClusterContext) -> list[str]:
        """The runtime loads models through MLflow: the pods need a tracking server they can reach."""
        host = urlparse(ctx.tracking_uri or "").hostname
        if ctx.tracking_uri is None:
            return [
                f"the kubernetes runtime loads models through MLflow, but the tracking store "
                f"({self.settings.tracking_uri}) is on this machine: {_FIX}"
            ]
        if host in LOOPBACK_HOSTS:
            return [
                f"pods cannot reach MLflow at {ctx.tracking_uri} (this machine's loopback): set "
                "cluster_tracking_uri to the address pods reach, e.g. http://mlflow.ml:5000"
            ]
        return super().reachability(spec, ctx)

    def store_problem(self, spec: DeploymentSpec, ctx: ClusterContext) -> str | None:
        return response_store_problem(spec, ctx, self.notebook_store(spec.name))

    def url(self, name: str, obj: dict[str, Any] | None) -> str | None:
        return f"http://{name}.{self.namespace}.svc.cluster.local:{HTTP_PORT}"

    def settle(self, spec: DeploymentSpec, progress: Progress | None) -> None:
        """Ready means reachable: wait until the Service lists every replica (the endpoints controller follows
        the pods a moment later; a burst sent before that would all go to the first replica)."""
        got = self.cluster.wait_endpoints(spec.name, spec.replicas, namespace=self.namespace, timeout=60)
        if got < spec.replicas:
            line = f"{spec.name}: the Service lists {got} of {spec.replicas} ready replicas after 60 s"
            log.warning("%s", line)
            if progress:
                progress(f"warning: {line}")

    def runtime_exits(self, name: str, since: float) -> list[str]:
        """Containers of the runtime's pods whose last run ended since ``since`` (restarted in place)."""
        from datetime import datetime

        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=runtime"
        found = []
        for pod in self.cluster.list("v1", "Pod", namespace=self.namespace, label_selector=selector):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                last = (status.get("lastState") or {}).get("terminated") or {}
                ended = last.get("finishedAt")
                if ended and datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp() >= since:
                    why = last.get("reason") or "Terminated"
                    found.append(f"pod {pod['metadata']['name']}: {why}, exit code {last.get('exitCode')}")
        return found

    def endpoint(self, deployment: Deployment) -> tuple[str | None, str | None]:
        """The Service's DNS name where it resolves (inside the cluster), else its cluster IP: a notebook on a
        node, or on a network routed to the Service range, reaches that without cluster DNS."""
        import socket

        host = f"{deployment.name}.{self.namespace}.svc.cluster.local"
        try:
            socket.getaddrinfo(host, HTTP_PORT, proto=socket.IPPROTO_TCP)
        except OSError:
            svc = self.cluster.get("v1", "Service", deployment.name, namespace=self.namespace)
            ip = ((svc or {}).get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                return f"http://{ip}:{HTTP_PORT}", f"{ip}:{GRPC_PORT}"
        return deployment.url, deployment.grpc_url

    def grpc_url(self, name: str) -> str | None:
        return f"{name}.{self.namespace}.svc.cluster.local:{GRPC_PORT}"


class SeldonBackend(ClusterBackend):
    """Seldon Core v1: a predictor per variant, one shadow at most, random (not sticky) splits."""

    target = "seldon"
    renderer = staticmethod(render_seldon)
    main_object = ("machinelearning.seldon.io/v1", "SeldonDeployment")
    kinds = (main_object,)

    def url(self, name: str, obj: dict[str, Any] | None) -> str | None:
        # Seldon publishes its address in the status
        return (((obj or {}).get("status") or {}).get("address") or {}).get("url")


class KServeBackend(ClusterBackend):
    """KServe splits only between the revision it serves and a new one (``canaryTrafficPercent``), so a
    two-way split is accepted only when the cluster already serves the stable variant's model (or is
    already in that canary, for a traffic change)."""

    target = "kserve"
    renderer = staticmethod(render_kserve)
    main_object = ("serving.kserve.io/v1beta1", "InferenceService")
    kinds = (main_object,)

    def url(self, name: str, obj: dict[str, Any] | None) -> str | None:
        return ((obj or {}).get("status") or {}).get("url")

    def cluster_checks(
        self, spec: DeploymentSpec, manifests: list[dict[str, Any]], ctx: ClusterContext
    ) -> list[tuple[str, Callable[[], None]]]:
        if len(spec.live) != 2:
            return []
        [isvc] = manifests
        latest = isvc["metadata"]["annotations"]["wolt-jupyter/latest-variant"]
        stable = next(v for v in spec.live if v.name != latest)

        def canary_against_served_revision() -> None:
            current = self.cluster.get(*self.main_object, spec.name, namespace=self.namespace)
            model = (((current or {}).get("spec") or {}).get("predictor") or {}).get("model") or {}
            serving = model.get("storageUri")
            if serving not in (ctx.artifact(stable.name), ctx.artifact(latest)):
                raise InvalidArgument(
                    f"KServe splits traffic between the revision it serves and the next one: deploy "
                    f"{stable.name} ({stable.model}) alone first, then add {latest!r} as the canary "
                    f"(the cluster serves {serving or 'nothing'} for {spec.name!r})"
                )

        described = f"KServe canary {latest!r} against the served revision {stable.name!r}"
        return [(described, canary_against_served_revision)]
