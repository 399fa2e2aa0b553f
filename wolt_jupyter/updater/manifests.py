"""The update service on Kubernetes: its policy → manifests, as a pure function (no cluster, no I/O).

``wolt-jupyter updater render --policy FILE --target kubernetes`` prints them for ``kubectl apply -f -``:

- a **ServiceAccount** + **Role** + **RoleBinding**: the service changes the deployment it updates (its
  ConfigMap, Deployment, Service, credentials Secret — what ``--target kubernetes`` deploys, by name, with
  server-side apply) and reads its pods, and nothing else, in its own namespace (:func:`rules`);
- a **ConfigMap** with the policy (secrets replaced by ``secret_env`` names) and the deployment it updates
  (``deployment.yaml``: target, namespace and the spec of its current revision, which the pod adopts into its
  empty state volume: the service there changes the cluster objects as the notebook's deployment would),
  and a **Secret** with the values (the webhook secrets, a tracking URI carrying a password): never inlined in
  the Deployment;
- a **PersistentVolumeClaim** for its state (cursor, rollout state, history, rate-limit window): a pod
  rescheduled mid-rollout resumes at its step and acts on nothing twice — the local guarantees, kept;
- a **Deployment** of one replica with the ``Recreate`` strategy (one service per deployment: two pods
  never overlap), running ``wolt-jupyter updater run``;
- with ``watch.webhook``, a **Service** for MLflow's registry webhooks (the receiver binds the pod network).

What cannot cross into a pod is refused with one line: an offline dataset held in memory (a DataFrame) or on
this machine's disk, a metric given as a Python callable, a deployment that is not on a cluster.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from wolt_jupyter.backends.render import (
    CREDENTIALS_SUFFIX,
    DEFAULT_IMAGE,
    MANAGED_BY,
    SPEC_SUFFIX,
    STATE_MOUNT,
    STORE_KEY,
    ClusterContext,
)
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import check_dns_label
from wolt_jupyter.updater.commands import CONTROL_ENV, CONTROL_SUFFIX
from wolt_jupyter.updater.policy import Policy, without_unset

POLICY_MOUNT = "/etc/wolt-updater"
WEBHOOK_PORT = 8090
SUFFIX = "-updater"
NOTIFY_SECRET_ENV = "WOLT_UPDATER_NOTIFY_SECRET"
WEBHOOK_SECRET_ENV = "WOLT_UPDATER_MLFLOW_WEBHOOK_SECRET"
STATE_SIZE = "1Gi"
RESOURCES = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def rules(deployment: str) -> list[dict[str, Any]]:
    """The Role's rules: the service changes the objects of the one deployment it updates, by name, with
    server-side apply (``patch``; ``get``, and ``list``/``watch`` narrowed to the name by a field selector, to
    wait for a rollout), reads the pods to say why a rollout failed and the EndpointSlices to know every
    replica is behind the Service (they are named after no object: list, in this namespace only). No ``create`` and no ``delete``: it
    adopts a deployment that exists; every other object in the namespace, and anything cluster-wide, is out
    of its reach."""
    named = ["get", "list", "watch", "patch"]
    return [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [deployment], "verbs": named},
        {"apiGroups": [""], "resources": ["services"], "resourceNames": [deployment], "verbs": named},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [f"{deployment}{SPEC_SUFFIX}"],
         "verbs": named},
        # people's rollout commands in, the rollout's state out (updater.commands.ClusterCommands)
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [f"{deployment}{CONTROL_SUFFIX}"],
         "verbs": ["get", "patch"]},
        # the runtime pods' account and its right to read that ConfigMap (the target renders them each time)
        {"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": [f"{deployment}{SPEC_SUFFIX}"],
         "verbs": named},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
         "resourceNames": [f"{deployment}{SPEC_SUFFIX}"], "verbs": named},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [f"{deployment}{CREDENTIALS_SUFFIX}"],
         "verbs": named},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
    ]  # fmt: skip


def _labels(deployment: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "wolt-jupyter",
        "app.kubernetes.io/instance": deployment,
        "app.kubernetes.io/component": "updater",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _metadata(name: str, deployment: str, ctx: ClusterContext) -> dict[str, Any]:
    return {"name": name, "namespace": ctx.namespace, "labels": _labels(deployment)}


def _portable(policy: Policy) -> None:
    """Refuse what a pod cannot read: one line naming the field and what to give instead."""
    offline = policy.offline
    if offline is not None:
        dataset = offline.dataset
        uri = isinstance(dataset, str) and ("://" in dataset or dataset.startswith(("runs:/", "models:/")))
        if not uri:
            what = "a DataFrame" if not isinstance(dataset, str) else f"the local path {dataset!r}"
            raise InvalidArgument(
                f"policy field 'offline.dataset' is {what}, which a pod cannot read: give a runs:/ or s3:// "
                "URI the pod reaches for --target kubernetes"
            )
        if any(m.fn is not None for m in offline.metrics):
            raise InvalidArgument(
                "policy field 'offline.metrics' holds a Python callable, which cannot be written to a "
                "ConfigMap: use a scikit-learn metric name for --target kubernetes"
            )


def policy_document(
    policy: Policy, *, webhook_host: str = "0.0.0.0"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The policy as the pod reads it (secrets as ``secret_env`` names) and the secret values by env name."""
    secrets: dict[str, str] = {}
    doc = policy.to_dict()
    for key in ("offline", "replay", "notify", "retrain"):
        if doc.get(key) is None:
            doc.pop(key, None)
    notify = doc.get("notify")
    if notify is not None:
        notify.pop("secret", None)
        if policy.notify is not None and policy.notify.secret:
            notify["secret_env"] = NOTIFY_SECRET_ENV
            secrets[NOTIFY_SECRET_ENV] = policy.notify.secret
    watch = doc["watch"]
    hook = policy.watch.webhook
    if hook is None:
        watch.pop("webhook", None)
    else:
        watch["webhook"] = {"host": webhook_host, "port": WEBHOOK_PORT, "path": hook.path,
                            "secret_env": WEBHOOK_SECRET_ENV}  # fmt: skip
        secrets[WEBHOOK_SECRET_ENV] = hook.secret
    return without_unset(doc), secrets


def adoption_document(target: str, namespace: str | None, spec: Any) -> dict[str, Any]:
    """What a pod needs to take a cluster deployment over: where it runs and its current revision's spec."""
    return {"target": target, "namespace": namespace, "spec": spec.to_dict()}


def render_updater(
    policy: Policy, ctx: ClusterContext, adopted: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, ConfigMap (policy; ``adopted``, an :func:`adoption_document`, as
    ``deployment.yaml``), Secret (when there are secrets), PVC (state), Deployment (+ Service for the registry
    webhook) for ``policy``'s update service in ``ctx.namespace``."""
    import yaml

    from wolt_jupyter.config import mask_url

    check_dns_label(ctx.namespace, "namespace")
    deployment = policy.deployment
    name = check_dns_label(f"{deployment}{SUFFIX}", "resource name")
    _portable(policy)
    doc, secrets = policy_document(policy)
    control = f"{deployment}{CONTROL_SUFFIX}"
    env: list[dict[str, Any]] = [{"name": "WOLT_JUPYTER_HOME", "value": STATE_MOUNT},
                                 {"name": "WOLT_NAMESPACE", "value": ctx.namespace},
                                 {"name": CONTROL_ENV, "value": control}]  # fmt: skip
    uri = ctx.tracking_uri
    if uri and mask_url(uri) != uri:
        secrets["MLFLOW_TRACKING_URI"] = uri
    elif uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": uri})
    if ctx.response_store_url:  # its observations read the deployment's one response log
        secrets[STORE_KEY] = ctx.response_store_url
    secret_name = f"{name}-secrets"
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}} for k in sorted(secrets)
    ]
    policy_yaml = yaml.safe_dump(doc, sort_keys=False)
    # the pod template changes with the policy, so a changed policy rolls out (secret values stay out of it)
    checksum = hashlib.sha256(
        (policy_yaml + repr(sorted(secrets.keys())) + repr(adopted)).encode()
    ).hexdigest()[:16]
    selector = {"app.kubernetes.io/instance": deployment, "app.kubernetes.io/component": "updater"}
    ports = (
        [{"name": "webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"}]
        if policy.watch.webhook
        else []
    )
    container: dict[str, Any] = {
        "name": "updater",
        "image": ctx.image or DEFAULT_IMAGE,
        "imagePullPolicy": ctx.image_pull_policy,
        "args": [
            "python",
            "-m",
            "wolt_jupyter.cli",
            "updater",
            "run",
            "--policy",
            f"{POLICY_MOUNT}/policy.yaml",
            "--base",
            STATE_MOUNT,
            *(["--adopt", f"{POLICY_MOUNT}/deployment.yaml"] if adopted else []),
        ],
        "env": env,
        "resources": copy.deepcopy(RESOURCES),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "policy", "mountPath": POLICY_MOUNT, "readOnly": True},
            {"name": "state", "mountPath": STATE_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        **({"ports": ports} if ports else {}),
    }
    manifests: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(name, deployment, ctx)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _metadata(name, deployment, ctx),
         "rules": rules(deployment)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _metadata(name, deployment, ctx),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ctx.namespace}]},
        # no data of its own: people's commands and the service's state are keys others write (merge patches)
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(control, deployment, ctx)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(f"{name}-policy", deployment, ctx),
         "data": {"policy.yaml": policy_yaml,
                  **({"deployment.yaml": yaml.safe_dump(adopted, sort_keys=False)} if adopted else {})}},
    ]  # fmt: skip
    if secrets:
        manifests.append({"apiVersion": "v1", "kind": "Secret", "metadata": _metadata(secret_name, deployment, ctx),
                          "type": "Opaque", "stringData": dict(sorted(secrets.items()))})  # fmt: skip
    manifests += [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _metadata(f"{name}-state", deployment, ctx),
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": STATE_SIZE}}}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(name, deployment, ctx),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # one service per deployment: the old pod goes first
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**_labels(deployment), **selector},
                                 "annotations": {"wolt-jupyter/policy-checksum": checksum}},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [container],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                        "terminationGracePeriodSeconds": 60,  # SIGTERM ends the look in progress
                        "volumes": [
                            {"name": "policy", "configMap": {"name": f"{name}-policy"}},
                            {"name": "state", "persistentVolumeClaim": {"claimName": f"{name}-state"}},
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
    ]  # fmt: skip
    if policy.watch.webhook is not None:
        manifests.append({
            "apiVersion": "v1", "kind": "Service", "metadata": _metadata(name, deployment, ctx),
            "spec": {"type": "ClusterIP", "selector": selector,
                     "ports": [{"name": "webhook", "port": WEBHOOK_PORT, "targetPort": "webhook", "protocol": "TCP"}]},
        })  # fmt: skip
    return manifests


def render_for_cluster(policy: Policy, namespace: str | None = None) -> list[dict[str, Any]]:
    """:func:`render_updater` with the cluster facts from the settings (image, namespace, the tracking URI the
    pods reach), like the kubernetes target's deployments, and the deployment as recorded here (it must run on
    a cluster: the pod adopts it)."""
    from wolt_jupyter.config import settings
    from wolt_jupyter.responses.store import store_url
    from wolt_jupyter.revisions import RevisionStore

    s = settings()
    store = RevisionStore(s.home)
    if not store.exists(policy.deployment):
        raise InvalidArgument(
            f"no deployment named {policy.deployment!r} here: deploy it with --target kubernetes (or seldon, "
            "kserve) first; its update service runs beside it"
        )
    rec = store.record(policy.deployment)
    if rec.target == "local":
        raise InvalidArgument(
            f"deployment {policy.deployment!r} runs on this machine (target local): a pod cannot update it; run "
            "`wolt-jupyter updater run` here, or deploy it to a cluster first"
        )
    if namespace and rec.namespace and namespace != rec.namespace:
        raise InvalidArgument(
            f"deployment {policy.deployment!r} runs in namespace {rec.namespace!r}, not {namespace!r}: its "
            "update service must run beside it"
        )
    adopted = adoption_document(rec.target, rec.namespace, store.spec(policy.deployment))
    ctx = ClusterContext(
        namespace=namespace or rec.namespace or s.namespace,
        image=s.runtime_image or DEFAULT_IMAGE,
        tracking_uri=s.cluster_tracking,
        response_store_url=s.cluster_response_store(store_url(policy.deployment, s)),
    )
    return render_updater(policy, ctx, adopted)


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False)
