"""Offline schema checks (`kubernetes-validate --strict`) of the manifests and of what the server stores,
and the renderer's output applied end to end.

The test API server does not validate schemas; `kubernetes-validate` does, against the real OpenAPI schema of
the Kubernetes release, so a typo in a field name fails here rather than on a cluster.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from wolt_jupyter.backends.render import ClusterContext, render_kubernetes
from wolt_jupyter.kubeclient import KubeCluster
from wolt_jupyter.spec import DeploymentSpec

from .apiserver import TestApiServer
from .manifests import kserve, runtime, seldon
from helpers import strict_errors

NS = "team-a"
VERSION = kubernetes_validate.latest_version()


@pytest.mark.parametrize("index", [0, 1, 2], ids=["ConfigMap", "Deployment", "Service"])
def test_runtime_manifests_are_strictly_valid(index):
    assert strict_errors(runtime("eta")[index]) is None


def test_validator_catches_typos_and_wrong_types():
    dep = runtime("eta")[1]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert "readinesProbe" in strict_errors(dep)
    svc = copy.deepcopy(runtime("eta")[2])
    svc["spec"]["ports"][0]["port"] = "eighty"
    assert "spec.ports.0.port" in strict_errors(svc)


def test_custom_kinds_have_no_schema_offline():
    # kubernetes-validate knows only core kinds: CRDs are checked by the API server on a real cluster
    for manifest in (seldon("eta"), kserve("eta")):
        with pytest.raises(SchemaNotFoundError):
            kubernetes_validate.validate(manifest, VERSION, strict=True)


def test_objects_the_server_stores_stay_valid(cluster_with_controller):
    """The test server's defaults (replicas, clusterIP, protocols) must not produce invalid objects."""
    applied = cluster_with_controller.apply(runtime("eta"), namespace=NS)
    for obj in applied:
        assert strict_errors(obj) is None


def test_rendered_runtime_applies_validates_and_becomes_ready(cluster_with_controller):
    spec = DeploymentSpec.from_dict(
        {
            "name": "eta-predictor",
            "variants": [
                {"name": "main", "model": "models:/eta/3", "traffic": 90},
                {"name": "challenger", "model": "models:/eta/7", "traffic": 10},
            ],
        }
    )
    ctx = ClusterContext(
        namespace=NS,
        artifacts={"main": "s3://models/eta/3", "challenger": "s3://models/eta/7"},
        pod_monitor=True,
    )
    manifests = render_kubernetes(spec, ctx)
    for manifest in manifests:
        if manifest["apiVersion"] in ("v1", "apps/v1"):
            assert strict_errors(manifest) is None
    cluster = cluster_with_controller
    applied = cluster.apply(manifests, namespace=NS)
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == [
        (m["kind"], m["metadata"]["name"]) for m in manifests
    ]
    progress: list[str] = []
    cluster.wait_ready(manifests, namespace=NS, timeout=10, on_progress=progress.append)
    assert any(line.startswith("eta-predictor") and line.endswith("ready") for line in progress), progress
    assert cluster.diff(manifests, namespace=NS) == ""


@pytest.fixture
def cluster_with_controller():
    with TestApiServer(controller=True, ready_delay=0.05) as server, server.api_client() as api:
        yield KubeCluster(api_client=api)
