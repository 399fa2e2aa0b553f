"""Spec → Kubernetes manifests, as pure functions: no cluster, no MLflow, no I/O.

Each cluster target renders the same pinned :class:`DeploymentSpec`:

- ``kubernetes``: a ConfigMap holding the spec, a Deployment running the project's own runtime (the same
  router as the local target), a Service, and optionally a PodMonitor for the Prometheus operator;
- ``seldon``: a SeldonDeployment (``machinelearning.seldon.io/v1``) with one predictor per variant, ``traffic``
  on live ones and ``shadow: true`` on shadows, the V2 protocol, the MLflow server implementation, and the
  request logger when response logging is on;
- ``kserve``: an InferenceService (``serving.kserve.io/v1beta1``). KServe splits only between the previous
  and the latest revision (``canaryTrafficPercent``) and has no shadows, so anything else is refused.

What rendering needs beyond the spec (where artifacts live, the image, the tracking URI the pods see) comes
in a :class:`ClusterContext`, resolved by the backend before rendering.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wolt_jupyter import __version__
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import DeploymentSpec, check_dns_label

HTTP_PORT = 8080
GRPC_PORT = 8081
SPEC_MOUNT = "/etc/wolt-jupyter"
STATE_MOUNT = "/var/lib/wolt-jupyter"
DEFAULT_IMAGE = f"wolt-jupyter-runtime:{__version__}"
MANAGED_BY = "wolt-jupyter"
# the container binds all interfaces (the pod network), unlike the local target's 127.0.0.1
RUNTIME_ARGS = [
    *("python", "-m", "wolt_jupyter.serving", "--spec", f"{SPEC_MOUNT}/spec.yaml"),
    *("--host", "0.0.0.0", "--port", str(HTTP_PORT)),
]


@dataclass(frozen=True)
class ClusterContext:
    """Cluster-side facts for rendering, resolved by the backend (registry lookups, settings)."""

    namespace: str = "default"
    image: str = DEFAULT_IMAGE
    tracking_uri: str | None = None  # as the pods reach it (not the notebook's localhost)
    artifacts: Mapping[str, str] = field(default_factory=dict)  # variant name -> model artifact storage URI
    request_logger_url: str | None = None  # Seldon request logger sink (CloudEvents)
    pod_monitor: bool = False
    service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"

    def artifact(self, variant: str) -> str:
        try:
            return self.artifacts[variant]
        except KeyError:
            raise InvalidArgument(f"no artifact location resolved for variant {variant!r}") from None


def labels(spec: DeploymentSpec, component: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "wolt-jupyter",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def _metadata(
    name: str, spec: DeploymentSpec, ctx: ClusterContext, component: str | None = None
) -> dict[str, Any]:
    return {
        "name": check_dns_label(name, "resource name"),
        "namespace": ctx.namespace,
        "labels": labels(spec, component),
    }


def _resources(spec: DeploymentSpec) -> dict[str, Any]:
    """``spec.resources`` as a container resources block: ``{requests: …, limits: …}`` or a flat requests dict."""
    res = dict(spec.resources or {})
    if not res:
        return {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    if set(res) <= {"requests", "limits"}:
        return {k: {rk: str(rv) for rk, rv in v.items()} for k, v in res.items()}
    return {"requests": {k: str(v) for k, v in res.items()}}


def _credentials_secret(spec: DeploymentSpec, ctx: ClusterContext) -> dict[str, Any] | None:
    """A Secret ``<name>-credentials`` holding the tracking URI when it carries a password (else None)."""
    from wolt_jupyter.config import mask_url

    uri = ctx.tracking_uri
    if not uri or mask_url(uri) == uri:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(f"{spec.name}-credentials", spec, ctx, "credentials"),
        "type": "Opaque",
        "stringData": {"MLFLOW_TRACKING_URI": uri},
    }


# -- kubernetes: the project's own runtime ---------------------------------------------------------------------
def render_kubernetes(spec: DeploymentSpec, ctx: ClusterContext) -> list[dict[str, Any]]:
    """ConfigMap (the pinned spec) + Deployment (the runtime) + Service (+ PodMonitor)."""
    spec.validate()
    check_dns_label(ctx.namespace, "namespace")
    spec_yaml = spec.to_yaml()
    checksum = hashlib.sha256(spec_yaml.encode()).hexdigest()[:16]
    selector = {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": "runtime"}
    env: list[dict[str, Any]] = [{"name": "WOLT_JUPYTER_HOME", "value": STATE_MOUNT}]
    secret = _credentials_secret(spec, ctx)
    if secret is not None:  # a URI with a password is read from a Secret, never inlined in the Deployment
        ref = {"name": secret["metadata"]["name"], "key": "MLFLOW_TRACKING_URI"}
        env.append({"name": "MLFLOW_TRACKING_URI", "valueFrom": {"secretKeyRef": ref}})
    elif ctx.tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": ctx.tracking_uri})
    probe_base = {"httpGet": {"path": "", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": "runtime",
        "image": ctx.image,
        "imagePullPolicy": ctx.image_pull_policy,
        "args": RUNTIME_ARGS,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(spec),
        # ready only when every variant's model is loaded; live as soon as the port answers
        "readinessProbe": {**probe_base, "httpGet": {"path": "/v2/health/ready", "port": "http"}},
        "livenessProbe": {
            **probe_base,
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "initialDelaySeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
            {"name": "state", "mountPath": STATE_MOUNT},
        ],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
        "terminationGracePeriodSeconds": 30,  # SIGTERM flushes the response log
        "volumes": [
            {"name": "spec", "configMap": {"name": f"{spec.name}-spec"}},
            {"name": "state", "emptyDir": {}},
        ],
    }
    if ctx.service_account:
        pod_spec["serviceAccountName"] = check_dns_label(ctx.service_account, "service account")
    manifests: list[dict[str, Any]] = [
        *([secret] if secret is not None else []),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(f"{spec.name}-spec", spec, ctx, "spec"),
            "data": {"spec.yaml": spec_yaml},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(spec.name, spec, ctx, "runtime"),
            "spec": {
                "replicas": spec.replicas,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {
                        "labels": {**labels(spec, "runtime"), **selector},
                        "annotations": {
                            # a changed spec changes the pod template, so the ConfigMap change rolls out
                            "wolt-jupyter/spec-checksum": checksum,
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(HTTP_PORT),
                            "prometheus.io/path": "/metrics",
                        },
                    },
                    "spec": pod_spec,
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(spec.name, spec, ctx, "runtime"),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]
    if ctx.pod_monitor:
        manifests.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": _metadata(spec.name, spec, ctx, "runtime"),
                "spec": {
                    "selector": {"matchLabels": selector},
                    "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
                },
            }
        )
    return manifests


# -- seldon -----------------------------------------------------------------------------------------------------
def render_seldon(spec: DeploymentSpec, ctx: ClusterContext) -> list[dict[str, Any]]:
    """One SeldonDeployment: a predictor per variant, V2 protocol, MLflow server, request logger."""
    spec.validate()
    check_dns_label(ctx.namespace, "namespace")
    predictors = []
    for variant in spec.variants:
        graph: dict[str, Any] = {
            "name": "model",
            "type": "MODEL",
            "implementation": "MLFLOW_SERVER",
            "modelUri": ctx.artifact(variant.name),
        }
        if spec.logging.responses:
            graph["logger"] = {
                "mode": "all",
                **({"url": ctx.request_logger_url} if ctx.request_logger_url else {}),
            }
        predictor: dict[str, Any] = {
            "name": variant.name,
            "replicas": spec.replicas,
            "graph": graph,
            "componentSpecs": [{"spec": {"containers": [{"name": "model", "resources": _resources(spec)}]}}],
            "labels": {"wolt-jupyter/variant": variant.name},
            "annotations": {"wolt-jupyter/model": variant.model},
        }
        if variant.shadow:
            predictor["shadow"] = True
        else:
            predictor["traffic"] = variant.traffic
        predictors.append(predictor)
    return [
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": _metadata(spec.name, spec, ctx),
            "spec": {"name": spec.name, "protocol": "v2", "predictors": predictors},
        }
    ]


# -- kserve -----------------------------------------------------------------------------------------------------
def render_kserve(
    spec: DeploymentSpec, ctx: ClusterContext, *, stable: str | None = None
) -> list[dict[str, Any]]:
    """One InferenceService. A two-way split is a KServe canary: the latest revision (the challenger) gets
    ``canaryTrafficPercent``, the previous revision (which must be ``main``, already serving) the rest.

    ``stable`` names the variant KServe keeps as the previous revision (default: ``main``, else the
    heavier live variant).
    """
    spec.validate()
    check_dns_label(ctx.namespace, "namespace")
    if spec.shadows:
        raise InvalidArgument(
            f"KServe cannot shadow traffic (variant {spec.shadows[0].name!r}): it has no mirror of requests; "
            "drop --shadow, or deploy with --target seldon or --target kubernetes"
        )
    live = spec.live
    if len(live) > 2:
        raise InvalidArgument(
            f"KServe splits traffic two ways only (previous and latest revision), got {len(live)} live variants; "
            "use --target seldon or --target kubernetes for an A/B/n split"
        )
    if len(live) == 1:
        latest, percent = live[0], None
    else:
        names = [v.name for v in live]
        stable_name = stable or ("main" if "main" in names else max(live, key=lambda v: v.traffic).name)
        if stable_name not in names:
            raise InvalidArgument(f"stable variant {stable_name!r} is not one of {', '.join(names)}")
        latest = next(v for v in live if v.name != stable_name)
        percent = latest.traffic
    model: dict[str, Any] = {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "storageUri": ctx.artifact(latest.name),
        "resources": _resources(spec),
    }
    predictor: dict[str, Any] = {"minReplicas": spec.replicas, "model": model}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    if ctx.service_account:
        predictor["serviceAccountName"] = check_dns_label(ctx.service_account, "service account")
    metadata = _metadata(spec.name, spec, ctx)
    metadata["annotations"] = {
        "wolt-jupyter/latest-variant": latest.name,
        "wolt-jupyter/latest-model": latest.model,
        "serving.kserve.io/enable-prometheus-scraping": "true",
    }
    return [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": metadata,
            "spec": {"predictor": predictor},
        }
    ]


RENDERERS = {"kubernetes": render_kubernetes, "seldon": render_seldon, "kserve": render_kserve}


def render(target: str, spec: DeploymentSpec, ctx: ClusterContext) -> list[dict[str, Any]]:
    try:
        renderer = RENDERERS[target]
    except KeyError:
        raise InvalidArgument(f"no cluster target {target!r}; choose one of {', '.join(RENDERERS)}") from None
    return renderer(spec, ctx)
