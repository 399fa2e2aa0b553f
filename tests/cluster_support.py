"""Helpers of the cluster tier (tests/cluster/): where a Service answers from this machine, a deployment's pods,
the namespace's events for a failure message."""

from __future__ import annotations

import json
from typing import Any


def service_url(kube_api: Any, namespace: str, name: str, port: str = "http") -> str:
    """The Service's cluster address as this machine reaches it (kube-proxy's rules on the host)."""
    svc = kube_api.core.read_namespaced_service(name, namespace)
    number = next(p.port for p in svc.spec.ports if p.name == port)
    return f"http://{svc.spec.cluster_ip}:{number}" if port == "http" else f"{svc.spec.cluster_ip}:{number}"


def pods(kube_api: Any, namespace: str, name: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=runtime"
    return kube_api.core.list_namespaced_pod(namespace, label_selector=selector).items


def events(kube_api: Any, namespace: str) -> str:
    return json.dumps(
        [
            f"{e.involved_object.name}: {e.reason}: {e.message}"
            for e in kube_api.core.list_namespaced_event(namespace).items
        ],
        indent=1,
    )
