"""The cluster targets: ``kubernetes`` (the project's runtime), ``seldon`` and ``kserve``.

One class does the work for all three: render the pinned spec with the target's pure renderer, then apply it
through :class:`~wolt_jupyter.backends.kube.KubeCluster` (server-side apply, watch until ready). The three
differ only in their renderer and in where their URL comes from.
"""

from __future__ import annotations

from typing import Any, ClassVar

from wolt_jupyter.backends.base import Backend, Deployment, Progress
from wolt_jupyter.backends.render import DEFAULT_IMAGE, HTTP_PORT, ClusterContext, render
from wolt_jupyter.config import Settings
from wolt_jupyter.spec import DeploymentSpec, check_dns_label

WAIT_TIMEOUT_S = 600.0


class ClusterBackend(Backend):
    """Shared by the three cluster targets."""

    target: ClassVar[str] = ""

    def __init__(self, settings: Settings, namespace: str | None = None) -> None:
        self.settings = settings
        self.namespace = check_dns_label(namespace or settings.namespace, "namespace")
        self._cluster: Any = None

    @property
    def cluster(self) -> Any:
        if self._cluster is None:
            from wolt_jupyter.backends.kube import KubeCluster

            self._cluster = KubeCluster(
                kubeconfig=self.settings.kubeconfig, context=self.settings.kube_context
            )
        return self._cluster

    # -- rendering ------------------------------------------------------------------------------------------
    def context(self, spec: DeploymentSpec) -> ClusterContext:
        """Resolve what rendering needs: artifact locations (Seldon/KServe) and the tracking URI pods see."""
        artifacts = {}
        if self.target in ("seldon", "kserve"):
            from wolt_jupyter.registry import download_uri

            artifacts = {v.name: download_uri(v.model) for v in spec.variants}
        s = self.settings
        return ClusterContext(
            namespace=self.namespace,
            image=s.runtime_image or DEFAULT_IMAGE,
            tracking_uri=s.cluster_tracking_uri or (s.tracking_uri if s.tracking_is_server else None),
            artifacts=artifacts,
        )

    def render(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        return render(self.target, spec, self.context(spec))

    def diff(self, spec: DeploymentSpec, manifests: list[dict[str, Any]]) -> str | None:
        return self.cluster.diff(manifests, namespace=self.namespace)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def apply(
        self, spec: DeploymentSpec, revision: int, *, wait: bool = True, progress: Progress | None = None
    ) -> Deployment:
        ctx = self.context(spec)  # resolved once: registry lookups for the artifact locations
        manifests = render(self.target, spec, ctx)
        self.check(spec, manifests, ctx)
        if progress:
            kinds = ", ".join(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
            progress(
                f"applying revision {revision} to {self.cluster.host} namespace {self.namespace}: {kinds}"
            )
        self.cluster.apply(manifests, namespace=self.namespace)
        if wait:
            self.cluster.wait_ready(
                manifests, namespace=self.namespace, timeout=WAIT_TIMEOUT_S, on_progress=progress
            )
        return self.status(spec.name)

    def check(self, spec: DeploymentSpec, manifests: list[dict[str, Any]], ctx: ClusterContext) -> None:
        """Refuse, before anything is sent, what the target cannot do given what the cluster runs now."""

    def _main_object(self, name: str) -> tuple[str, str]:
        return {
            "kubernetes": ("apps/v1", "Deployment"),
            "seldon": ("machinelearning.seldon.io/v1", "SeldonDeployment"),
            "kserve": ("serving.kserve.io/v1beta1", "InferenceService"),
        }[self.target]

    def status(self, name: str) -> Deployment:
        from wolt_jupyter.revisions import RevisionStore

        store = RevisionStore(self.settings.home)
        spec = store.spec(name) if store.exists(name) and store.revisions(name) else None
        api_version, kind = self._main_object(name)
        obj = self.cluster.get(api_version, kind, name, namespace=self.namespace)
        if obj is None:
            status, message = "stopped", f"no {kind} {name} in namespace {self.namespace}"
        else:
            status, message = self._readiness(obj)
        return Deployment(
            name=name,
            target=self.target,
            status=status,
            url=self._url(name, obj),
            namespace=self.namespace,
            variants=Deployment.describe_variants(spec) if spec else [],
            message=message,
        )

    def _readiness(self, obj: dict[str, Any]) -> tuple[str, str | None]:
        st = obj.get("status") or {}
        if self.target == "kubernetes":
            want = (obj.get("spec") or {}).get("replicas", 1)
            ready = st.get("readyReplicas", 0) or 0
            if ready >= want and st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0):
                return "ready", None
            return ("degraded" if ready else "starting"), f"{ready}/{want} replicas ready"
        if self.target == "seldon":
            state = st.get("state")
            return {"Available": ("ready", None), "Failed": ("failed", st.get("description"))}.get(
                state, ("starting", state)
            )
        conds = {c.get("type"): c for c in st.get("conditions", [])}
        ready = conds.get("Ready", {})
        if ready.get("status") == "True":
            return "ready", None
        return "starting", ready.get("message") or ready.get("reason")

    def _url(self, name: str, obj: dict[str, Any] | None) -> str | None:
        if self.target == "kserve":
            return ((obj or {}).get("status") or {}).get("url")
        if self.target == "seldon":  # Seldon publishes its address in the status
            return (((obj or {}).get("status") or {}).get("address") or {}).get("url")
        return f"http://{name}.{self.namespace}.svc.cluster.local:{HTTP_PORT}"

    def delete(self, name: str) -> None:
        from wolt_jupyter.revisions import RevisionStore

        store = RevisionStore(self.settings.home)
        if store.exists(name) and store.revisions(name):
            manifests = self.render(store.spec(name))
        else:  # nothing recorded: remove the main object at least
            api_version, kind = self._main_object(name)
            manifests = [{"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}]
        for m in reversed(manifests):
            self.cluster.delete(m["apiVersion"], m["kind"], m["metadata"]["name"], namespace=self.namespace)


class KubernetesBackend(ClusterBackend):
    target = "kubernetes"


class SeldonBackend(ClusterBackend):
    target = "seldon"


class KServeBackend(ClusterBackend):
    """KServe splits only between the revision it serves and a new one (``canaryTrafficPercent``), so a
    two-way split is accepted only when the cluster already serves the stable variant's model (or is
    already in that canary, for a traffic change)."""

    target = "kserve"

    def check(self, spec: DeploymentSpec, manifests: list[dict[str, Any]], ctx: ClusterContext) -> None:
        if len(spec.live) == 2:
            [isvc] = manifests
            latest = isvc["metadata"]["annotations"]["wolt-jupyter/latest-variant"]
            stable = next(v for v in spec.live if v.name != latest)
            current = self.cluster.get(
                "serving.kserve.io/v1beta1", "InferenceService", spec.name, namespace=self.namespace
            )
            serving = ((((current or {}).get("spec") or {}).get("predictor") or {}).get("model") or {}).get(
                "storageUri"
            )
            if serving not in (ctx.artifact(stable.name), ctx.artifact(latest)):
                from wolt_jupyter.errors import InvalidArgument

                raise InvalidArgument(
                    f"KServe splits traffic between the revision it serves and the next one: deploy "
                    f"{stable.name} ({stable.model}) alone first, then add {latest!r} as the canary "
                    f"(the cluster serves {serving or 'nothing'} for {spec.name!r})"
                )
