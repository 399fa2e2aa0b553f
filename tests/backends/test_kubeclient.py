"""`KubeCluster` against the test API server, over real HTTP through the official client."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from wolt_jupyter.errors import InvalidArgument, WoltError
from wolt_jupyter.kubeclient import ClusterError, KubeCluster

from kube.apiserver import NEVER_READY_LABEL, TestApiServer
from kube.manifests import kserve, pod_monitor, runtime, seldon

NS = "team-a"


@pytest.fixture
def kube_cluster(api_client) -> KubeCluster:
    return KubeCluster(api_client=api_client)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, WoltError), text
    return text


def test_apply_runtime_manifests_returns_server_objects(apiserver, kube_cluster):
    applied = kube_cluster.apply(runtime("eta"), namespace=NS)
    assert [o["kind"] for o in applied] == ["ConfigMap", "Deployment", "Service"]
    for obj in applied:
        meta = obj["metadata"]
        assert meta["namespace"] == NS and meta["uid"] and int(meta["resourceVersion"]) > 0
        assert [(m["manager"], m["operation"]) for m in meta["managedFields"]] == [("wolt-jupyter", "Apply")]
    dep = apiserver.get_object("apps/v1", "Deployment", NS, "eta")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert apiserver.get_object("v1", "Service", NS, "eta")["spec"]["clusterIP"].startswith("10.96.")
    # every write was a server-side apply
    patches = [p for m, p in apiserver.requests if m == "PATCH"]
    assert len(patches) == 3 and all("fieldManager=wolt-jupyter" in p and "force=true" in p for p in patches)


def test_reapply_is_a_noop_and_a_change_bumps_generation(kube_cluster):
    first = kube_cluster.apply(runtime("eta"), namespace=NS)
    again = kube_cluster.apply(runtime("eta"), namespace=NS)
    assert [o["metadata"]["resourceVersion"] for o in again] == [
        o["metadata"]["resourceVersion"] for o in first
    ]
    changed = kube_cluster.apply(runtime("eta", image="ghcr.io/wolt-jupyter/runtime:0.2.0"), namespace=NS)
    dep_before, dep_after = first[1], changed[1]
    assert dep_after["metadata"]["generation"] == dep_before["metadata"]["generation"] + 1
    assert int(dep_after["metadata"]["resourceVersion"]) > int(dep_before["metadata"]["resourceVersion"])
    # the ConfigMap and Service did not change, so the server did not touch them
    assert changed[0]["metadata"]["resourceVersion"] == first[0]["metadata"]["resourceVersion"]
    assert changed[2]["metadata"]["resourceVersion"] == first[2]["metadata"]["resourceVersion"]


def test_apply_custom_resources(apiserver, kube_cluster):
    applied = kube_cluster.apply([seldon("eta"), kserve("eta-ks"), pod_monitor("eta")], namespace=NS)
    assert [o["kind"] for o in applied] == ["SeldonDeployment", "InferenceService", "PodMonitor"]
    live = apiserver.get_object("machinelearning.seldon.io/v1", "SeldonDeployment", NS, "eta")
    assert [p["traffic"] for p in live["spec"]["predictors"]] == [90, 10]
    # CRD lists are atomic: dropping a predictor replaces the list
    shrunk = seldon("eta")
    shrunk["spec"]["predictors"] = shrunk["spec"]["predictors"][:1]
    shrunk["spec"]["predictors"][0]["traffic"] = 100
    [after] = kube_cluster.apply([shrunk], namespace=NS)
    assert [p["name"] for p in after["spec"]["predictors"]] == ["main"] and after["metadata"][
        "generation"
    ] == 2
    assert kube_cluster.get("serving.kserve.io/v1beta1", "InferenceService", "eta-ks", namespace=NS)["spec"][
        "predictor"
    ]


def test_get_list_delete(kube_cluster):
    kube_cluster.apply([*runtime("eta"), *runtime("other")], namespace=NS)
    assert kube_cluster.get("apps/v1", "Deployment", "missing", namespace=NS) is None
    names = [o["metadata"]["name"] for o in kube_cluster.list("apps/v1", "Deployment", namespace=NS)]
    assert names == ["eta", "other"]
    selected = kube_cluster.list(
        "v1", "ConfigMap", namespace=NS, label_selector="app.kubernetes.io/instance in (eta)"
    )
    assert [(o["kind"], o["metadata"]["name"]) for o in selected] == [("ConfigMap", "eta-spec")]
    assert kube_cluster.delete("apps/v1", "Deployment", "eta", namespace=NS) is True
    assert kube_cluster.delete("apps/v1", "Deployment", "eta", namespace=NS) is False
    assert kube_cluster.get("apps/v1", "Deployment", "eta", namespace=NS) is None


def test_names_are_checked_before_anything_is_sent(apiserver, kube_cluster):
    bad = runtime("eta")
    bad[1]["metadata"]["name"] = "Eta_Predictor"
    with pytest.raises(InvalidArgument, match="DNS-1123"):
        kube_cluster.apply(bad, namespace=NS)
    with pytest.raises(InvalidArgument, match="namespace"):
        kube_cluster.apply(runtime("eta"), namespace="Team A")
    with pytest.raises(InvalidArgument, match="apiVersion/kind"):
        kube_cluster.apply([{"metadata": {"name": "x"}}], namespace=NS)
    assert not [r for r in apiserver.requests if r[0] != "GET"]


def test_wait_ready_follows_a_watch_until_the_controller_is_done():
    # steps slow enough that the 1/2 state is still current when the waiter first looks
    with TestApiServer(controller=True, ready_delay=0.3) as server, server.api_client() as api:
        kube_cluster = KubeCluster(api_client=api)
        manifests = [*runtime("eta", replicas=2), seldon("eta-sd"), kserve("eta-ks")]
        kube_cluster.apply(manifests, namespace=NS)
        progress: list[str] = []
        started = time.monotonic()
        kube_cluster.wait_ready(manifests, namespace=NS, timeout=10, on_progress=progress.append)
        assert time.monotonic() - started < 5
        assert "eta: 1/2 ready" in progress and progress.index("eta: 1/2 ready") < progress.index(
            "eta: 2/2 ready"
        )
        assert "eta-sd: state Available" in progress
        assert "eta-ks: Ready at http://eta-ks.team-a.example.com" in progress
        watches = [p for m, p in server.requests if m == "GET" and "watch=true" in p]
        assert watches and all("timeoutSeconds=" in p and "fieldSelector=metadata.name" in p for p in watches)


def test_wait_ready_returns_at_once_when_already_ready():
    with TestApiServer(controller=True, ready_delay=0.01) as server, server.api_client() as api:
        kube_cluster = KubeCluster(api_client=api)
        manifests = runtime("eta", replicas=1)
        kube_cluster.apply(manifests, namespace=NS)
        time.sleep(0.3)
        before = len(server.requests)
        kube_cluster.wait_ready(manifests, namespace=NS, timeout=5)
        assert not [p for m, p in server.requests[before:] if "watch=true" in p]


def test_wait_ready_times_out_naming_what_is_not_ready_and_why():
    with TestApiServer(controller=True, ready_delay=0.05) as server, server.api_client() as api:
        kube_cluster = KubeCluster(api_client=api)
        manifests = runtime("eta", replicas=2)
        manifests[1]["metadata"]["labels"][NEVER_READY_LABEL] = "true"
        server.never_ready.add("eta-ks")
        manifests.append(kserve("eta-ks"))
        kube_cluster.apply(manifests, namespace=NS)
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            kube_cluster.wait_ready(manifests, namespace=NS, timeout=1.5)
        elapsed = time.monotonic() - started
        assert 1.4 <= elapsed < 4, elapsed
        message = _one_line(err)
        assert message.startswith(
            "timed out after 1.5s waiting in namespace team-a: not ready: Deployment eta (0/2 ready"
        )
        assert (
            "Available=False MinimumReplicasUnavailable: Deployment does not have minimum availability."
            in message
        )
        assert "InferenceService eta-ks (Ready=False (RevisionMissing)" in message


def test_missing_crd_group_is_one_readable_line():
    with TestApiServer(crd_groups=["machinelearning.seldon.io"]) as server, server.api_client() as api:
        kube_cluster = KubeCluster(api_client=api)
        with pytest.raises(ClusterError) as err:
            kube_cluster.apply([*runtime("eta"), kserve("eta")], namespace=NS)
        assert _one_line(err) == (
            f"no kind InferenceService in serving.kserve.io/v1beta1 at {server.url}: is KServe installed?"
        )
        assert not [r for r in server.requests if r[0] == "PATCH"]  # nothing half-applied
        kube_cluster.apply([seldon("eta")], namespace=NS)  # the installed group still works
        assert kube_cluster.serves("machinelearning.seldon.io/v1", "SeldonDeployment")
        assert not kube_cluster.serves("serving.kserve.io/v1beta1", "InferenceService")
        assert not kube_cluster.serves("monitoring.coreos.com/v1", "PodMonitor")


def test_forbidden_is_one_readable_line(apiserver, kube_cluster):
    apiserver.forbid("patch", "deployments", NS)
    with pytest.raises(ClusterError) as err:
        kube_cluster.apply(runtime("eta"), namespace=NS)
    assert _one_line(err) == (
        "forbidden: serviceaccount default:wolt-jupyter cannot patch deployments.apps in namespace team-a"
    )


def test_conflict_without_force_is_one_readable_line(kube_cluster):
    kube_cluster.apply(runtime("eta"), namespace=NS)
    scaled = runtime("eta", replicas=5)[1:2]
    kube_cluster.apply(scaled, namespace=NS, field_manager="hpa")
    with pytest.raises(ClusterError) as err:
        kube_cluster.apply(runtime("eta"), namespace=NS, force=False)
    assert _one_line(err) == (
        'conflict: Apply failed with 1 conflict: conflict with "hpa" using apps/v1: .spec.replicas'
    )
    forced = kube_cluster.apply(runtime("eta"), namespace=NS)
    assert forced[1]["spec"]["replicas"] == 2


def test_unreachable_server_fails_fast_with_one_line():
    with TestApiServer() as server:
        url = server.url
    # the server is gone: nothing listens on that port any more
    from kubernetes import client

    kube_cluster = KubeCluster(api_client=client.ApiClient(client.Configuration(host=url)))
    started = time.monotonic()
    with pytest.raises(ClusterError) as err:
        kube_cluster.apply(runtime("eta"), namespace=NS)
    assert time.monotonic() - started < 3
    assert _one_line(err) == f"cannot reach the Kubernetes API at {url}: connection refused"


def test_diff_shows_what_would_change(kube_cluster):
    manifests = runtime("eta")
    new = kube_cluster.diff(manifests, namespace=NS)
    assert "+++ applied/Deployment/eta" in new and "--- /dev/null" in new
    assert kube_cluster.list("apps/v1", "Deployment", namespace=NS) == []  # diff is a dry run
    kube_cluster.apply(manifests, namespace=NS)
    assert kube_cluster.diff(manifests, namespace=NS) == ""
    changed = kube_cluster.diff(runtime("eta", replicas=3, image="runtime:0.2.0"), namespace=NS)
    assert "--- live/Deployment/eta" in changed
    assert re.search(r"^-  replicas: 2$", changed, re.M) and re.search(r"^\+  replicas: 3$", changed, re.M)
    assert re.search(r"^\+ +image: runtime:0.2.0$", changed, re.M)
    assert "ConfigMap" not in changed and "managedFields" not in changed


def test_kubeconfig_and_context_are_loaded(apiserver, tmp_path: Path, monkeypatch):
    path = apiserver.write_kubeconfig(tmp_path / "config", context="lab")
    kube_cluster = KubeCluster(kubeconfig=str(path), context="lab")
    assert kube_cluster.host == apiserver.url
    kube_cluster.apply(runtime("eta")[:1], namespace=NS)
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert KubeCluster().get("v1", "ConfigMap", "eta-spec", namespace=NS) is not None
    with pytest.raises(ClusterError) as err:
        KubeCluster(kubeconfig=str(path), context="nope")
    assert _one_line(err).startswith(f"cannot load context 'nope' in kubeconfig {path}")


def test_no_configuration_at_all(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError) as err:
        KubeCluster()
    assert "no Kubernetes configuration" in _one_line(err)


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, wolt_jupyter.kubeclient; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_wait_ready_reopens_watches_the_server_ends():
    with TestApiServer(controller=True, ready_delay=0.4) as server, server.api_client() as api:
        server.watch_cap = 0.15  # the server ends each watch early, as real ones do after a while
        kube_cluster = KubeCluster(api_client=api)
        manifests = runtime("eta", replicas=1)
        kube_cluster.apply(manifests, namespace=NS)
        kube_cluster.wait_ready(manifests, namespace=NS, timeout=10)
        watches = [p for m, p in server.requests if "watch=true" in p]
        assert len(watches) >= 2
        assert all(re.search(r"resourceVersion=\d+", p) for p in watches)  # each resumes where the last ended


def test_wait_ready_recovers_from_an_expired_resource_version(apiserver, api_client):
    import threading

    apiserver.watch_cap = 0.2
    kube_cluster = KubeCluster(api_client=api_client)
    manifests = runtime("eta", replicas=1)[1:2]
    kube_cluster.apply(manifests, namespace=NS)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            kube_cluster.wait_ready(manifests, namespace=NS, timeout=10)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    for _ in range(100):  # until the waiter is watching from the resourceVersion it listed
        if any("watch=true" in p for _, p in apiserver.requests):
            break
        time.sleep(0.05)
    kube_cluster.apply(runtime("other")[:1], namespace=NS)  # history moves on ...
    apiserver.compact()  # ... and is compacted: the waiter's resourceVersion is now too old
    time.sleep(0.6)
    ready = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
    apiserver.set_status("apps/v1", "Deployment", NS, "eta", ready)
    waiter.join(10)
    assert not waiter.is_alive() and not errors, errors
    watches = [p for m, p in apiserver.requests if "watch=true" in p]
    assert any(re.search(r"resourceVersion=(&|$)", p) for p in watches), watches  # restarted from now


def test_silent_server_times_out_quickly(tmp_path: Path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # accepts connections (backlog) but never answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        )
        kube_cluster = KubeCluster(kubeconfig=str(kubeconfig), request_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            kube_cluster.get("v1", "ConfigMap", "x", namespace=NS)
        assert time.monotonic() - started < 2.5
    assert _one_line(err) == f"cannot reach the Kubernetes API at {url}: timed out"


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (
            runtime("eta")[1],
            "Deployment eta in namespace team-a failed: 0/2 ready, "
            'ReplicaSet "eta-7d4b9c" has timed out progressing.',
        ),
        (seldon("eta"), "SeldonDeployment eta in namespace team-a failed: state Failed (Deployment eta: "),
    ],
    ids=["deployment", "seldon"],
)
def test_wait_ready_fails_fast_on_a_failed_rollout(manifest, expected):
    with TestApiServer(controller=True, ready_delay=0.05) as server, server.api_client() as api:
        server.failing.add("eta")
        kube_cluster = KubeCluster(api_client=api)
        kube_cluster.apply([manifest], namespace=NS)
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            kube_cluster.wait_ready([manifest], namespace=NS, timeout=30)
        assert time.monotonic() - started < 3  # not the 30 s timeout
        assert _one_line(err).startswith(expected)


def test_kubeconfig_credentials_are_sent_and_bad_ones_are_one_line(tmp_path: Path):
    with TestApiServer(token="test-token") as server:
        good = server.write_kubeconfig(tmp_path / "good")  # its user has token "test-token"
        KubeCluster(kubeconfig=str(good)).apply(runtime("eta")[:1], namespace=NS)
        bad = tmp_path / "bad"
        bad.write_text(good.read_text().replace("test-token", "stale-token"))
        with pytest.raises(ClusterError) as err:
            KubeCluster(kubeconfig=str(bad)).apply(runtime("eta")[:1], namespace=NS)
        assert _one_line(err) == (
            f"unauthorized: {server.url} rejected the credentials in the kubeconfig (Unauthorized)"
        )


def test_crd_removed_after_discovery_is_the_missing_kind_line():
    """The 404 of a path nobody serves (a Status naming no object) says which operator is missing, by type."""
    with TestApiServer() as server, server.api_client() as api:
        kube_cluster = KubeCluster(api_client=api)
        kube_cluster.apply([seldon("eta")], namespace=NS)  # discovery now lists SeldonDeployment
        server.types = [t for t in server.types if t.group != "machinelearning.seldon.io"]
        with pytest.raises(ClusterError) as err:
            kube_cluster.apply([seldon("eta")], namespace=NS)
        assert _one_line(err) == (
            f"no kind SeldonDeployment in machinelearning.seldon.io/v1 at {server.url}: is Seldon Core installed?"
        )
        assert not kube_cluster.serves(
            "machinelearning.seldon.io/v1", "SeldonDeployment"
        )  # discovery asked again


def test_missing_namespace_is_one_line():
    with TestApiServer(strict_namespaces=True) as server, server.api_client() as api:
        kube_cluster = KubeCluster(api_client=api)
        with pytest.raises(ClusterError) as err:
            kube_cluster.apply(runtime("eta"), namespace="team-b")
        assert _one_line(err) == 'not found: namespaces "team-b" not found'
        kube_cluster.apply(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}], namespace="team-b"
        )
        assert len(kube_cluster.apply(runtime("eta"), namespace="team-b")) == 3


def _service_account(folder: Path, token: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "token").write_text(token + "\n")
    (folder / "ca.crt").write_text("")  # read for https only; the test server is plain HTTP
    return folder


def test_in_cluster_transport_sends_the_token_and_rereads_it_when_rotated(tmp_path: Path):
    from wolt_jupyter.kubeclient import InClusterTransport

    account = _service_account(tmp_path / "sa", "token-1")
    with TestApiServer(token="token-1", controller=True, ready_delay=0.2) as server:
        kube_cluster = KubeCluster(api_client=InClusterTransport(account, host=server.url))
        assert kube_cluster.host == server.url
        manifests = runtime("eta", replicas=1)
        kube_cluster.apply(manifests, namespace=NS)
        kube_cluster.wait_ready(manifests, namespace=NS, timeout=10)  # a watch through the transport too
        server.token = (
            "token-2"  # the kubelet rotated the projected token: the next request reads the new one
        )
        (account / "token").write_text("token-2\n")
        assert kube_cluster.get("v1", "ConfigMap", "eta-spec", namespace=NS) is not None
        server.token = "token-3"
        with pytest.raises(ClusterError) as err:
            kube_cluster.get("v1", "ConfigMap", "eta-spec", namespace=NS)
        assert _one_line(err).startswith("unauthorized:")


def test_in_a_pod_without_the_kubernetes_package_the_service_account_is_used(tmp_path: Path):
    """What the runtime image (no `kubernetes` package) gets in a pod: the in-cluster transport."""
    import subprocess
    import sys

    account = _service_account(tmp_path / "sa", "t")
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"  # import kubernetes -> ImportError, as in the image
        "from wolt_jupyter import kubeclient\n"
        f"kubeclient.SERVICE_ACCOUNT_DIR = kubeclient.Path({str(account)!r})\n"
        "c = kubeclient.KubeCluster()\n"
        "print(type(c._client).__name__, c.host)\n"
        "try:\n"
        "    kubeclient.KubeCluster(kubeconfig='/nonexistent')\n"
        "except kubeclient.ClusterError as e:\n"
        "    print(e)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "fd00::1",
           "KUBERNETES_SERVICE_PORT": "6443"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    first, second = out.stdout.strip().splitlines()
    assert first == "InClusterTransport https://[fd00::1]:6443"
    assert "needs the kubernetes package" in second
