"""Spec → Kubernetes manifests, as pure functions: no cluster, no MLflow, no I/O.

Each cluster target renders the same pinned :class:`DeploymentSpec`:

- ``kubernetes``: a ConfigMap holding the spec, a Deployment running the project's own runtime (the same
  router as the local target: any split, any number of shadows, sticky routing, sampled response logging),
  a Service (REST and gRPC), and optionally a PodMonitor for the Prometheus operator;
- ``seldon``: a SeldonDeployment (``machinelearning.seldon.io/v1``) with one predictor per variant, ``traffic``
  on live ones and ``shadow: true`` on the (single) shadow, the V2 protocol, the MLflow server
  implementation, and the request logger when response logging is on;
- ``kserve``: an InferenceService (``serving.kserve.io/v1beta1``). KServe splits only between the previous
  and the latest revision (``canaryTrafficPercent``) and has no shadows; its request logger when response
  logging is on.

What a target cannot honour is refused before rendering with one line naming the target that can
(``refuse_for_<target>``), never dropped silently. The rendered custom resources are then checked
against the operators' published schemas and admission rules (:mod:`wolt_jupyter.backends.admission`).

What rendering needs beyond the spec (where artifacts live, the image, the tracking URI the pods see) comes
in a :class:`ClusterContext`, resolved by the backend before rendering.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wolt_jupyter._version import __version__
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.serving.specwatch import SPEC_CONFIGMAP_ENV
from wolt_jupyter.spec import DeploymentSpec, check_dns_label, check_resources

HTTP_PORT = 8080
GRPC_PORT = 8081  # the runtime's gRPC inference service (--grpc-port)
SPEC_MOUNT = "/etc/wolt-jupyter"
STATE_MOUNT = "/var/lib/wolt-jupyter"
DEFAULT_IMAGE = f"wolt-jupyter-runtime:{__version__}"
MANAGED_BY = "wolt-jupyter"
# the container binds all interfaces (the pod network), unlike the local target's 127.0.0.1
# A pod being replaced leaves the Service's endpoints while the preStop pause runs; then SIGTERM drains its
# open connections (each closed after its next answer), so clients reconnect to a serving replica.
PRESTOP_PAUSE_S = 5
PROGRESS_DEADLINE_S = 300
DRAIN_S = 5
RUNTIME_ARGS = [
    *("python", "-m", "wolt_jupyter.serving", "--spec", f"{SPEC_MOUNT}/spec.yaml"),
    *("--host", "0.0.0.0", "--port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)),
    *("--drain-seconds", str(DRAIN_S)),
]
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
# the suffixes the kubernetes target adds to the deployment name: its ConfigMap (the longest) and its Secret
SPEC_SUFFIX = _SUFFIX = "-spec"
CREDENTIALS_SUFFIX = "-credentials"


@dataclass(frozen=True)
class ClusterContext:
    """Cluster-side facts for rendering, resolved by the backend (registry lookups, settings)."""

    namespace: str = "default"
    image: str = DEFAULT_IMAGE
    tracking_uri: str | None = None  # as the pods reach it (not the notebook's localhost)
    # the response store as the pods reach it (kubernetes target; a Secret's value, never inline)
    response_store_url: str | None = None
    revision: int | None = None  # the deployment revision the pods serve: stamped on every logged row
    artifacts: Mapping[str, str] = field(default_factory=dict)  # variant name -> model artifact storage URI
    request_logger_url: str | None = None  # Seldon/KServe request logger (CloudEvents); None: the default
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
    """``spec.resources`` as a container resources block (checked by the spec), or the defaults."""
    # a fresh copy: callers may change the manifest they get
    return check_resources(spec.resources) or copy.deepcopy(DEFAULT_RESOURCES)


def _logger(spec: DeploymentSpec, ctx: ClusterContext) -> dict[str, str] | None:
    """The operators' request logger (Seldon ``graph.logger``, KServe ``predictor.logger``) when responses are logged."""
    if not spec.logging.responses:
        return None
    return {"mode": "all", **({"url": ctx.request_logger_url} if ctx.request_logger_url else {})}


_INSTEAD = "deploy with --target kubernetes (the project's router"


def _refuse_operator_limits(product: str, spec: DeploymentSpec) -> None:
    """What Seldon Core and KServe alike cannot honour: sticky routing, sampled request logging, class
    probabilities, refusing requests the log cannot keep, per-variant timeouts."""
    if spec.routing.sticky_key:
        raise InvalidArgument(
            f"{product} splits traffic at random per request and cannot keep a "
            f"{spec.routing.sticky_key!r} on one variant: drop --sticky-key, or {_INSTEAD} honours it)"
        )
    if spec.logging.responses and spec.logging.sample < 1:
        raise InvalidArgument(
            f"{product}'s request logger logs every request and cannot sample {spec.logging.sample:g} of "
            f"them: set logging.sample to 1, or {_INSTEAD} samples)"
        )
    if spec.logging.probabilities:
        raise InvalidArgument(
            f"{product}'s request logger logs only what the model answers and cannot add its class "
            f"probabilities: drop logging.probabilities, or {_INSTEAD} logs them)"
        )
    if spec.logging.responses and spec.logging.on_full == "refuse":
        raise InvalidArgument(
            f"{product}'s request logger sends records after the answer and cannot refuse a request whose "
            f"record it cannot keep: drop logging.on_full, or {_INSTEAD} refuses them)"
        )
    timed = [v for v in spec.variants if v.timeout is not None]
    if timed:
        raise InvalidArgument(
            f"{product} has no per-variant timeout that sends a timed-out challenger's request to the "
            f"champion (variant {timed[0].name!r} has timeout {timed[0].timeout:g}): drop "
            f"variants[].timeout, or {_INSTEAD} honours it)"
        )


def refuse_for_kubernetes(spec: DeploymentSpec) -> None:
    """The project's runtime honours the whole spec; only the ConfigMap's suffixed name can be too long."""
    if len(spec.name) + len(_SUFFIX) > 63:
        raise InvalidArgument(
            f"deployment name {spec.name!r} is too long for the kubernetes target: at most "
            f"{63 - len(_SUFFIX)} characters (its ConfigMap is named NAME{_SUFFIX})"
        )


def refuse_for_seldon(spec: DeploymentSpec) -> None:
    """One line naming the target that can, for each spec feature Seldon Core cannot honour."""
    _refuse_operator_limits("Seldon Core", spec)
    if len(spec.shadows) > 1:
        raise InvalidArgument(
            f"Seldon Core allows one shadow predictor, got {len(spec.shadows)} "
            f"({', '.join(v.name for v in spec.shadows)}): keep one --shadow, or {_INSTEAD} mirrors to any number)"
        )


def refuse_for_kserve(spec: DeploymentSpec) -> None:
    """One line naming the target that can, for each spec feature KServe cannot honour."""
    _refuse_operator_limits("KServe", spec)
    if spec.shadows:
        raise InvalidArgument(
            f"KServe cannot shadow traffic (variant {spec.shadows[0].name!r}): it has no mirror of requests; "
            "drop --shadow, or deploy with --target seldon or --target kubernetes"
        )
    if len(spec.live) > 2:
        raise InvalidArgument(
            f"KServe splits traffic two ways only (previous and latest revision), got {len(spec.live)} "
            "live variants; use --target seldon or --target kubernetes for an A/B/n split"
        )


TRACKING_KEY = "MLFLOW_TRACKING_URI"
STORE_KEY = "WOLT_RESPONSE_STORE_URL"  # what the runtime's settings read (response_store_url)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
_STORE_FIX = (
    "set response_store_url (WOLT_RESPONSE_STORE_URL) to a PostgreSQL server, e.g. "
    "postgresql://wolt:PASSWORD@db.example:5432/wolt, and cluster_response_store_url "
    "(WOLT_CLUSTER_RESPONSE_STORE_URL) to its address as pods reach it when that differs "
    "(e.g. postgresql://wolt:PASSWORD@postgres.ml:5432/wolt); or deploy with logging.responses: false"
)


def response_store_problem(
    spec: DeploymentSpec, ctx: ClusterContext, notebook_store: str | None
) -> str | None:
    """Why the kubernetes target's pods could not write ``spec``'s response log to one shared store (one
    line naming the fix), or None. Every replica writes to the store the deployment record names, so it must
    be a PostgreSQL server the pods reach: not a file on this machine (the SQLite default), not loopback."""
    from urllib.parse import urlsplit

    from wolt_jupyter.config import mask_url

    if not spec.logging.responses:
        return None
    url = ctx.response_store_url
    if not url:
        return (
            f"the kubernetes target's replicas write one shared response log, but the response store "
            f"({mask_url(notebook_store) or 'SQLite under the state dir'}) is a file on this machine: {_STORE_FIX}"
        )
    try:
        parsed = urlsplit(url)
        scheme, host = parsed.scheme, parsed.hostname
    except ValueError:
        scheme, host = "", None
    if not scheme.startswith(("postgresql", "postgres")):
        return f"pods cannot share the response store {mask_url(url)}: cluster targets log to PostgreSQL; {_STORE_FIX}"
    if not host or host in LOOPBACK_HOSTS:
        where = "this machine's loopback" if host else "a Unix socket of this machine"
        return (
            f"pods cannot reach the response store at {mask_url(url)} ({where}): set cluster_response_store_url "
            "(WOLT_CLUSTER_RESPONSE_STORE_URL) to the address pods reach, e.g. "
            "postgresql://wolt:PASSWORD@postgres.ml:5432/wolt"
        )
    return None


def credentials(spec: DeploymentSpec, ctx: ClusterContext) -> dict[str, str]:
    """What pods must not read inline, by key of the ``<name>-credentials`` Secret: the tracking URI when it
    carries a credential, the response store's URL whenever responses are logged.

    The values never enter a rendered manifest (the Secret there says ``****``): the apply alone puts them
    in (:func:`with_credentials`), so a dry run, a card, ``to_dict()`` or the server's JSON cannot leak one."""
    from wolt_jupyter.config import mask_url

    data = {}
    uri = ctx.tracking_uri
    if uri and mask_url(uri) != uri:
        data[TRACKING_KEY] = uri
    if spec.logging.responses and ctx.response_store_url:
        data[STORE_KEY] = ctx.response_store_url
    return data


def _credentials_secret(spec: DeploymentSpec, ctx: ClusterContext) -> dict[str, Any] | None:
    """The ``<name>-credentials`` Secret with its keys and ``****`` for each value (None when there are no
    credentials)."""
    from wolt_jupyter.masking import MASK

    keys = credentials(spec, ctx)
    if not keys:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(f"{spec.name}{CREDENTIALS_SUFFIX}", spec, ctx, "credentials"),
        "type": "Opaque",
        "stringData": dict.fromkeys(keys, MASK),
    }


def with_credentials(manifests: list[dict[str, Any]], values: dict[str, str]) -> list[dict[str, Any]]:
    """``manifests`` as the apply sends them: each credentials Secret's values filled in from ``values`` (a
    new list; the manifests given keep ``****``). What only the apply may call."""
    out = []
    for m in manifests:
        if m.get("kind") == "Secret" and m["metadata"]["name"].endswith(CREDENTIALS_SUFFIX):
            m = {**m, "stringData": {key: values[key] for key in m.get("stringData") or {}}}
        out.append(m)
    return out


# -- kubernetes: the project's own runtime ---------------------------------------------------------------------
def restart_checksum(spec: DeploymentSpec) -> str:
    """A digest of the spec without what a running runtime changes in place (weights, routing): two specs
    with the same digest are served by the same pods."""
    doc = spec.to_dict()
    doc.pop("routing", None)
    for v in doc["variants"]:
        v.pop("traffic", None)
        v.pop("timeout", None)  # the runtime re-reads it with the routing
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def render_kubernetes(spec: DeploymentSpec, ctx: ClusterContext) -> list[dict[str, Any]]:
    """ConfigMap (the pinned spec) + Deployment (the runtime) + Service (+ PodMonitor)."""
    spec.validate()
    refuse_for_kubernetes(spec)
    check_dns_label(ctx.namespace, "namespace")
    spec_yaml = spec.to_yaml()
    selector = {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": "runtime"}
    spec_map = f"{spec.name}{_SUFFIX}"
    # the pods watch their ConfigMap and re-route in place (serving.specwatch): a routing change rolls out
    # nothing; a change a running pod cannot make (a model, logging, limits) changes the template
    env: list[dict[str, Any]] = [
        {"name": "WOLT_JUPYTER_HOME", "value": STATE_MOUNT},
        {"name": SPEC_CONFIGMAP_ENV, "value": spec_map},
    ]
    secret = _credentials_secret(spec, ctx)
    held = secret["stringData"] if secret is not None else {}
    if TRACKING_KEY not in held and ctx.tracking_uri:  # no password: nothing to hide
        env.append({"name": TRACKING_KEY, "value": ctx.tracking_uri})
    for key in held:  # a credential is read from the Secret, never inlined in the Deployment
        ref = {"name": secret["metadata"]["name"], "key": key}  # type: ignore[index]
        env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    probe_base = {"httpGet": {"path": "", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": "runtime",
        "image": ctx.image,
        "imagePullPolicy": ctx.image_pull_policy,
        "args": RUNTIME_ARGS,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
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
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_PAUSE_S}}},
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
            {"name": "spec", "configMap": {"name": f"{spec.name}{_SUFFIX}"}},
            {"name": "state", "emptyDir": {}},
        ],
    }
    account = check_dns_label(ctx.service_account, "service account") if ctx.service_account else spec_map
    pod_spec["serviceAccountName"] = account

    # a pod's own ConfigMap is all its service account may read: get, and watch narrowed to the name
    def reader() -> dict[str, Any]:  # each object its own metadata: callers may change one
        return _metadata(spec_map, spec, ctx, "spec")

    rbac = "rbac.authorization.k8s.io/v1"
    manifests: list[dict[str, Any]] = [
        *([secret] if secret is not None else []),
        *(
            []
            if ctx.service_account
            else [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": reader()}]
        ),
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": reader(),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [spec_map],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": reader(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": spec_map},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ctx.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(spec_map, spec, ctx, "spec"),
            # a pod has no deployment record: its log rows name the revision from here
            "data": {
                "spec.yaml": spec_yaml,
                **({"revision": str(int(ctx.revision))} if ctx.revision is not None else {}),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(spec.name, spec, ctx, "runtime"),
            "spec": {
                "replicas": spec.replicas,
                "selector": {"matchLabels": selector},
                # a rollout that stops progressing this long is failed (a pod that cannot start fails sooner:
                # the wait reads the pods' own reasons)
                "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {
                        "labels": {**labels(spec, "runtime"), **selector},
                        "annotations": {
                            # what a running pod cannot change in place: a change rolls out
                            "wolt-jupyter/spec-checksum": restart_checksum(spec),
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
                "ports": [
                    {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                    {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                ],
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
    refuse_for_seldon(spec)
    check_dns_label(ctx.namespace, "namespace")
    logger = _logger(spec, ctx)
    predictors = []
    for variant in spec.variants:
        graph: dict[str, Any] = {
            "name": "model",
            "type": "MODEL",
            "implementation": "MLFLOW_SERVER",
            "modelUri": ctx.artifact(variant.name),
        }
        if logger:
            graph["logger"] = logger
        if ctx.service_account:  # the storage initializer reads modelUri with this account's credentials
            graph["serviceAccountName"] = check_dns_label(ctx.service_account, "service account")
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


# -- the logger service of the operator targets -------------------------------------------------------------------
LOGGER_SUFFIX = "-logger"
LOGGER_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def logger_url(spec: DeploymentSpec, ctx: ClusterContext) -> str:
    """Where the operator's request logger reaches the logger service of ``spec`` (its Service's DNS name)."""
    return f"http://{spec.name}{LOGGER_SUFFIX}.{ctx.namespace}.svc.cluster.local/"


def render_request_logger(spec: DeploymentSpec, ctx: ClusterContext) -> list[dict[str, Any]]:
    """The logger service beside a Seldon or KServe deployment whose responses are logged: the
    ``<name>-credentials`` Secret, a Deployment of our runtime image running ``wolt_jupyter.serving.eventlog`` (it pairs the operator's CloudEvents into the
    response store named by the ``<name>-credentials`` Secret, key ``WOLT_RESPONSE_STORE_URL``) and its Service
    (:func:`logger_url`). [] when responses are not logged. The spool is an ``emptyDir``: it outlives a
    container restart, not the pod."""
    spec.validate()
    if not spec.logging.responses:
        return []
    check_dns_label(ctx.namespace, "namespace")
    if not ctx.response_store_url:
        raise InvalidArgument(
            f"the logger service of {spec.name!r} needs the response store as the cluster reaches it: set "
            "WOLT_CLUSTER_RESPONSE_STORE_URL (e.g. a PostgreSQL the pods can reach)"
        )
    name = check_dns_label(f"{spec.name}{LOGGER_SUFFIX}", "resource name")
    selector = labels(spec, "logger")
    args = ["--host", "0.0.0.0", "--port", str(HTTP_PORT), "--spool-dir", f"{STATE_MOUNT}/spool"]
    args += [
        "--deployment",
        spec.name,
        *(["--revision", str(ctx.revision)] if ctx.revision is not None else []),
    ]
    ref = {"name": f"{spec.name}{CREDENTIALS_SUFFIX}", "key": STORE_KEY}
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": "logger",
        "image": ctx.image,
        "command": ["python", "-m", "wolt_jupyter.serving.eventlog"],
        "args": args,
        "env": [{"name": STORE_KEY, "valueFrom": {"secretKeyRef": ref}}],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/healthz", "port": "http"}},
        "resources": LOGGER_RESOURCES,
        "volumeMounts": [{"name": "state", "mountPath": STATE_MOUNT}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, spec, ctx, "logger"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": 30,  # SIGTERM: the writer flushes its queue
                    "volumes": [{"name": "state", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, spec, ctx, "logger"),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    secret = _credentials_secret(spec, ctx)  # the store's URL (and a tracking URI's password): never inline
    return [secret, deployment, service] if secret else [deployment, service]


# -- kserve -----------------------------------------------------------------------------------------------------
def render_kserve(spec: DeploymentSpec, ctx: ClusterContext) -> list[dict[str, Any]]:
    """One InferenceService. A two-way split is a KServe canary: the latest revision (the challenger) gets
    ``canaryTrafficPercent``, the previous revision (``main``, else the heavier live variant, which must
    already be serving: checked against the cluster before apply) the rest.
    """
    spec.validate()
    refuse_for_kserve(spec)
    check_dns_label(ctx.namespace, "namespace")
    live = spec.live
    if len(live) == 1:
        latest, percent = live[0], None
    else:
        names = [v.name for v in live]
        stable_name = "main" if "main" in names else max(live, key=lambda v: v.traffic).name
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
    logger = _logger(spec, ctx)
    if logger:
        predictor["logger"] = logger
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
