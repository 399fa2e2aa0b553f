"""`KubeCluster` against upstream's kube-apiserver, not the stand-in: server-side apply (a no-op when unchanged,
conflicts between field managers), strict field validation, the server's dry run behind a diff, RBAC refusals
for a service account, a missing namespace, and the wait following a real rollout with a watch.

The stand-in (tests/kube/) stays for what a real cluster cannot be made to do on demand: injected API errors,
a watch the server cuts, an expired resourceVersion, a CRD removed between discovery and apply."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from wolt_jupyter.errors import WoltError
from wolt_jupyter.kubeclient import ClusterError, KubeCluster

from kube.manifests import runtime

pytestmark = pytest.mark.cluster


@pytest.fixture
def real(kube_cluster: Path) -> KubeCluster:
    return KubeCluster(kubeconfig=str(kube_cluster))


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, WoltError), text
    return text


def _configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_apply_is_a_noop_when_unchanged_and_conflicts_are_one_line(
    real: KubeCluster, kube_namespace: str
) -> None:
    [first] = real.apply([_configmap("spec", a="1")], namespace=kube_namespace)
    [again] = real.apply([_configmap("spec", a="1")], namespace=kube_namespace)
    assert (
        again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    )  # the server changed nothing
    # another manager takes a field; applying ours without force is refused with the server's own words
    real.apply([_configmap("spec", a="2")], namespace=kube_namespace, field_manager="someone-else")
    with pytest.raises(ClusterError) as err:
        real.apply([_configmap("spec", a="1")], namespace=kube_namespace, force=False)
    line = _one_line(err)
    assert line.startswith("conflict: Apply failed with 1 conflict") and 'with "someone-else"' in line
    assert ".data.a" in line
    [forced] = real.apply([_configmap("spec", a="1")], namespace=kube_namespace)
    assert forced["data"] == {"a": "1"}


def test_strict_field_validation_refuses_unknown_fields(real: KubeCluster, kube_namespace: str) -> None:
    manifests = runtime("eta")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    deployment["spec"]["replica"] = 2  # a typo the server must not silently drop
    with pytest.raises(ClusterError) as err:
        real.apply([deployment], namespace=kube_namespace)
    line = _one_line(err)
    assert line == f"invalid: {kube_namespace}/eta: unknown field .spec.replica (not in the kind's schema)", (
        line
    )
    assert real.get("apps/v1", "Deployment", "eta", namespace=kube_namespace) is None


def test_diff_asks_the_servers_dry_run(real: KubeCluster, kube_namespace: str) -> None:
    manifests = [_configmap("spec", a="1")]
    assert "+++ applied/ConfigMap/spec" in real.diff(manifests, namespace=kube_namespace)
    assert real.get("v1", "ConfigMap", "spec", namespace=kube_namespace) is None  # a dry run changed nothing
    real.apply(manifests, namespace=kube_namespace)
    assert real.diff(manifests, namespace=kube_namespace) == ""
    changed = real.diff([_configmap("spec", a="2")], namespace=kube_namespace)
    assert re.search(r"^-  a: '1'$", changed, re.M) and re.search(r"^\+  a: '2'$", changed, re.M), changed
    assert "managedFields" not in changed and "resourceVersion" not in changed


def test_a_service_account_without_rights_is_refused_in_one_line(
    real: KubeCluster, kube_cluster: Path, kube_api: Any, kube_namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    kube_api.core.create_namespaced_service_account(
        kube_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = kube_api.core.create_namespaced_service_account_token(
        "reader",
        kube_namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    admin = json.loads(kube_cluster.read_text())  # cluster.py writes it as JSON
    admin["users"] = [{"name": "reader", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "reader"
    config = tmp_path / "reader.kubeconfig"
    config.write_text(json.dumps(admin))
    reader = KubeCluster(kubeconfig=str(config))
    with pytest.raises(ClusterError) as err:
        reader.apply([_configmap("spec", a="1")], namespace=kube_namespace)
    assert _one_line(err) == (
        f"forbidden: serviceaccount {kube_namespace}:reader cannot patch configmaps in namespace {kube_namespace}"
    )


def test_a_missing_namespace_is_one_line(real: KubeCluster) -> None:
    with pytest.raises(ClusterError) as err:
        real.apply([_configmap("spec", a="1")], namespace="no-such-namespace")
    assert "no-such-namespace" in _one_line(err)


def test_wait_follows_a_real_rollout(real: KubeCluster, kube_namespace: str) -> None:
    """A pod of the runtime image that is ready once it answers (a plain HTTP server: no model needed)."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                    "containers": [
                        {
                            "name": "web",
                            "image": "wolt-jupyter-runtime:0.1.0",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-m", "http.server", "8000", "--directory", "/etc"],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }
    progress: list[str] = []
    real.apply([deployment], namespace=kube_namespace)
    real.wait_ready([deployment], namespace=kube_namespace, timeout=120, on_progress=progress.append)
    obj = real.get("apps/v1", "Deployment", "web", namespace=kube_namespace)
    assert obj["status"]["readyReplicas"] == 2
    assert progress[-1] == "web: 2/2 ready"
    # an image that is not there fails the wait with the pod's own reason, long before the timeout (never
    # pulled: nothing leaves this machine)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container.update(image="wolt-jupyter-runtime:no-such-tag", imagePullPolicy="Never")
    real.apply([deployment], namespace=kube_namespace)
    with pytest.raises(ClusterError) as err:
        real.wait_ready([deployment], namespace=kube_namespace, timeout=120)
    line = _one_line(err)
    assert "ErrImageNeverPull" in line, line
    assert real.get("apps/v1", "Deployment", "web", namespace=kube_namespace)["status"]["readyReplicas"] == 2
