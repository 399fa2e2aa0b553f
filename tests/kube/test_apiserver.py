"""The test API server, driven by the official `kubernetes` client over real HTTP.

These pin the behaviour `KubeCluster` relies on, so a test that passes against this server means something
for a real cluster: 201 on create, Status errors, optimistic concurrency, selectors, generation, watch and
server-side apply semantics.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, watch

from .apiserver import TestApiServer
from .manifests import runtime, seldon

NS = "team-a"


def _cm(name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


def _status(exc: client.ApiException) -> dict:
    return json.loads(exc.body)


def test_create_answers_201_with_server_fields(api_client):
    core = client.CoreV1Api(api_client)
    obj, code, _ = core.create_namespaced_config_map_with_http_info(NS, _cm("a"))
    assert code == 201
    meta = obj.metadata
    assert meta.uid and meta.creation_timestamp is not None and meta.generation == 1
    assert meta.namespace == NS and int(meta.resource_version) > 0
    second = core.create_namespaced_config_map(NS, _cm("b"))
    assert int(second.metadata.resource_version) > int(meta.resource_version)  # one global counter


def test_duplicate_create_is_409_already_exists(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(NS, _cm("a"))
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map(NS, _cm("a"))
    status = _status(err.value)
    assert err.value.status == 409 and status["kind"] == "Status" and status["reason"] == "AlreadyExists"
    assert status["message"] == 'configmaps "a" already exists'


def test_missing_object_is_404_status(api_client):
    with pytest.raises(client.ApiException) as err:
        client.AppsV1Api(api_client).read_namespaced_deployment("nope", NS)
    status = _status(err.value)
    assert err.value.status == 404 and status["reason"] == "NotFound"
    assert status["message"] == 'deployments.apps "nope" not found'
    assert status["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_put_with_stale_resource_version_conflicts(api_client):
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map(NS, _cm("a"))
    fresh = core.read_namespaced_config_map("a", NS)
    fresh.data = {"k": "v2"}
    updated = core.replace_namespaced_config_map("a", NS, fresh)
    assert updated.data == {"k": "v2"}
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    created.data = {"k": "stale"}  # still carries the first resourceVersion
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_config_map("a", NS, created)
    assert err.value.status == 409 and _status(err.value)["reason"] == "Conflict"
    assert "the object has been modified" in _status(err.value)["message"]
    assert core.read_namespaced_config_map("a", NS).data == {"k": "v2"}


def test_list_filters_by_label_selector_and_reports_resource_version(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(NS, _cm("a", {"tier": "web", "env": "prod"}))
    core.create_namespaced_config_map(NS, _cm("b", {"tier": "db", "env": "prod"}))
    last = core.create_namespaced_config_map(NS, _cm("c", {"tier": "cache"}))
    core.create_namespaced_config_map("other", _cm("d", {"tier": "web"}))

    def names(selector: str | None = None) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(NS, label_selector=selector).items]

    assert names() == ["a", "b", "c"]
    assert names("tier=web") == ["a"]
    assert names("tier in (web, db)") == ["a", "b"]
    assert names("tier notin (web),env") == ["b"]
    assert names("tier!=web,!env") == ["c"]
    listing = core.list_namespaced_config_map(NS)
    assert int(listing.metadata.resource_version) >= int(last.metadata.resource_version)
    with pytest.raises(client.ApiException) as err:
        names("tier in web")
    assert err.value.status == 400


def test_generation_moves_with_spec_not_with_metadata_or_status(apiserver, api_client):
    apps = client.AppsV1Api(api_client)
    dep = runtime("eta")[1]
    apps.create_namespaced_deployment(NS, dep)
    patched = apps.patch_namespaced_deployment("eta", NS, {"metadata": {"labels": {"extra": "1"}}})
    assert patched.metadata.generation == 1
    apps.patch_namespaced_deployment_status("eta", NS, {"status": {"replicas": 2}})
    assert apps.read_namespaced_deployment("eta", NS).metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("eta", NS, {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2
    assert scaled.status.replicas == 2  # a main-resource write keeps the status


def test_status_subresource_get_put_patch(api_client):
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(NS, runtime("eta")[1])
    # a status sent to the main resource is ignored, as on the real server
    apps.patch_namespaced_deployment("eta", NS, {"status": {"replicas": 9}})
    assert apps.read_namespaced_deployment_status("eta", NS).status.replicas is None
    current = apps.read_namespaced_deployment_status("eta", NS)
    current.status = client.V1DeploymentStatus(replicas=2, ready_replicas=1, observed_generation=1)
    current.spec.replicas = 7  # ignored: /status only writes status
    replaced = apps.replace_namespaced_deployment_status("eta", NS, current)
    assert replaced.status.ready_replicas == 1 and replaced.spec.replicas == 2
    patched = apps.patch_namespaced_deployment_status("eta", NS, {"status": {"readyReplicas": 2}})
    assert patched.status.ready_replicas == 2 and patched.status.replicas == 2


def test_delete_then_gone(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(NS, _cm("a"))
    status = core.delete_namespaced_config_map("a", NS)
    assert status["status"] == "Success" and status["details"]["name"] == "a"
    with pytest.raises(client.ApiException) as err:
        core.delete_namespaced_config_map("a", NS)
    assert err.value.status == 404


def test_watch_streams_changes_from_a_resource_version_and_ends_on_timeout(api_client):
    core = client.CoreV1Api(api_client)
    before = core.create_namespaced_config_map(NS, _cm("old"))

    def writer() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map(NS, _cm("a"))
        core.patch_namespaced_config_map("a", NS, {"data": {"k": "v2"}})
        core.create_namespaced_config_map(NS, _cm("b"))
        core.delete_namespaced_config_map("a", NS)

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=before.metadata.resource_version,
            field_selector="metadata.name=a",
            timeout_seconds=2,
        )
    ]
    elapsed = time.monotonic() - started
    thread.join()
    # "old" predates the resourceVersion, "b" fails the field selector
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert 1.8 <= elapsed < 5, elapsed  # the server closes the stream after timeoutSeconds


def test_watch_without_resource_version_starts_with_current_objects(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(NS, _cm("a", {"app": "x"}))
    core.create_namespaced_config_map(NS, _cm("b", {"app": "y"}))
    events = list(
        watch.Watch().stream(core.list_namespaced_config_map, NS, label_selector="app=x", timeout_seconds=1)
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a")]


def _apply(api_client, body: dict, manager: str, *, force: bool = False, dry_run: bool = False):
    apps = client.AppsV1Api(api_client)
    return apps.patch_namespaced_deployment_with_http_info(
        body["metadata"]["name"],
        NS,
        body,
        field_manager=manager,
        force=force,
        dry_run="All" if dry_run else None,
        _content_type="application/apply-patch+yaml",
    )


def test_server_side_apply_creates_then_merges_and_tracks_managers(api_client):
    dep = runtime("eta")[1]
    obj, code, _ = _apply(api_client, dep, "wolt")
    assert code == 201 and obj.metadata.generation == 1
    [entry] = obj.metadata.managed_fields
    assert (entry.manager, entry.operation) == ("wolt", "Apply")
    assert 'k:{"name":"runtime"}' in entry.fields_v1["f:spec"]["f:template"]["f:spec"]["f:containers"]
    again, code, _ = _apply(api_client, dep, "wolt")
    assert code == 200 and again.metadata.resource_version == obj.metadata.resource_version


def test_apply_drops_fields_the_manager_stopped_applying(api_client):
    dep = runtime("eta")[1]
    _apply(api_client, dep, "wolt")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    del container["livenessProbe"]
    del dep["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    obj, _, _ = _apply(api_client, dep, "wolt")
    live = obj.spec.template.spec.containers[0]
    assert live.liveness_probe is None and live.readiness_probe is not None
    assert "app.kubernetes.io/managed-by" not in obj.metadata.labels
    assert obj.metadata.generation == 2


def test_apply_conflicts_with_another_manager_unless_forced(api_client):
    dep = runtime("eta")[1]
    _apply(api_client, dep, "wolt")
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment("eta", NS, {"spec": {"replicas": 5}}, field_manager="kubectl-scale")
    with pytest.raises(client.ApiException) as err:
        _apply(api_client, dep, "wolt")
    status = _status(err.value)
    assert err.value.status == 409 and status["reason"] == "Conflict"
    assert (
        status["message"]
        == 'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    )
    # a field another manager owns but we no longer send stays: no conflict, no removal
    assert apps.read_namespaced_deployment("eta", NS).spec.replicas == 5
    forced, _, _ = _apply(api_client, dep, "wolt", force=True)
    assert forced.spec.replicas == 2
    owners = {m.manager: m.fields_v1 for m in forced.metadata.managed_fields}
    assert "kubectl-scale" not in owners  # its only field was taken over


def test_apply_dry_run_does_not_store(api_client):
    dep = runtime("eta")[1]
    obj, code, _ = _apply(api_client, dep, "wolt", dry_run=True)
    assert code == 201 and obj.spec.replicas == 2 and obj.metadata.uid  # what a create would answer
    with pytest.raises(client.ApiException) as err:
        client.AppsV1Api(api_client).read_namespaced_deployment("eta", NS)
    assert err.value.status == 404


def test_apply_accepts_yaml_bodies(apiserver, api_client):
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: '1'\n"
    resp = api_client.rest_client.pool_manager.request(
        "PATCH",
        f"{apiserver.url}/api/v1/namespaces/{NS}/configmaps/y?fieldManager=me",
        body=body,
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert resp.status == 201 and json.loads(resp.data)["data"] == {"a": "1"}


def test_strategic_merge_patch_merges_containers_by_name(api_client):
    apps = client.AppsV1Api(api_client)
    dep = runtime("eta")[1]
    dep["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    apps.create_namespaced_deployment(NS, dep)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "runtime", "image": "runtime:2"}]}}}}
    obj = apps.patch_namespaced_deployment("eta", NS, patch)  # the client's default: strategic merge
    containers = {c.name: c.image for c in obj.spec.template.spec.containers}
    assert containers == {"runtime": "runtime:2", "sidecar": "envoy:1"}
    merged = apps.patch_namespaced_deployment(
        "eta", NS, patch, _content_type="application/merge-patch+json"
    )  # a JSON merge patch replaces the list
    assert [c.name for c in merged.spec.template.spec.containers] == ["runtime"]


def test_custom_resources_reject_strategic_merge(api_client):
    custom = client.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(
        "machinelearning.seldon.io", "v1", NS, "seldondeployments", seldon()
    )
    assert created["metadata"]["generation"] == 1
    with pytest.raises(client.ApiException) as err:
        custom.patch_namespaced_custom_object(
            "machinelearning.seldon.io",
            "v1",
            NS,
            "seldondeployments",
            "eta",
            {"spec": {"protocol": "v1"}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert err.value.status == 415


def test_discovery_lists_kinds_and_can_leave_a_group_out():
    with TestApiServer(crd_groups=["machinelearning.seldon.io"]) as server, server.api_client() as api:
        groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
        assert groups == {"apps", "rbac.authorization.k8s.io", "machinelearning.seldon.io"}
        core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
        assert core["configmaps"].kind == "ConfigMap" and core["configmaps"].namespaced
        assert not core["namespaces"].namespaced and "services/status" in core
        with pytest.raises(client.ApiException) as err:
            client.CustomObjectsApi(api).list_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", NS, "inferenceservices"
            )
        assert err.value.status == 404


def test_forbidden_is_a_proper_status(apiserver, api_client):
    apiserver.forbid("patch", "deployments", NS)
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(NS, runtime("eta")[1])  # create is still allowed
    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_deployment("eta", NS, {"spec": {"replicas": 1}})
    status = _status(err.value)
    apps.patch_namespaced_deployment_status(
        "eta", NS, {"status": {"replicas": 1}}
    )  # its own resource in RBAC
    assert err.value.status == 403 and status["reason"] == "Forbidden"
    assert status["message"] == (
        'deployments.apps "eta" is forbidden: User "system:serviceaccount:default:wolt-jupyter" cannot patch '
        'resource "deployments" in API group "apps" in the namespace "team-a"'
    )


def test_controller_marks_deployments_ready_step_by_step():
    with TestApiServer(controller=True, ready_delay=0.3) as server, server.api_client() as api:
        apps = client.AppsV1Api(api)
        apps.create_namespaced_deployment(NS, runtime("eta", replicas=2)[1])
        seen = []
        for event in watch.Watch().stream(apps.list_namespaced_deployment, NS, timeout_seconds=3):
            status = event["object"].status
            seen.append(status.ready_replicas if status else None)
            if status and status.ready_replicas == 2:
                break
        assert seen[-2:] == [1, 2]
        final = apps.read_namespaced_deployment("eta", NS).status
        assert final.observed_generation == 1 and final.available_replicas == 2
        assert {c.type: c.status for c in final.conditions}["Available"] == "True"


def test_apply_keeps_what_other_managers_added_and_removes_only_its_own(api_client):
    dep = runtime("eta")[1]
    containers = dep["spec"]["template"]["spec"]["containers"]
    containers.append({"name": "logger", "image": "fluent-bit:3"})
    _apply(api_client, dep, "wolt")
    # another tool (a mesh injector, an operator) adds its own container and annotation
    injected = {
        "metadata": {"annotations": {"mesh/injected": "true"}},
        "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy:1"}]}}},
    }
    client.AppsV1Api(api_client).patch_namespaced_deployment("eta", NS, injected, field_manager="injector")
    containers.pop()  # we stop shipping the logger
    obj, _, _ = _apply(api_client, dep, "wolt")
    assert [c.name for c in obj.spec.template.spec.containers] == ["runtime", "proxy"]
    assert obj.metadata.annotations == {"mesh/injected": "true"}
    managers = {m.manager: m.operation for m in obj.metadata.managed_fields}
    assert managers == {"wolt": "Apply", "injector": "Update"}
