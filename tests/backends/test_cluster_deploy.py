"""%wolt_deploy to the cluster targets through the official client over real HTTP, against the stand-in API
server (tests/kube/), for what the real cluster of tests/cluster/ does not have yet: the operators' kinds
(SeldonDeployment, InferenceService: no operator runs there until issue 30), and injected failures. The
`kubernetes` target's own flows (deploy, traffic, promote, rollback, dry run and diff, undeploy) run on the
real cluster (tests/cluster/test_kubernetes_target.py). Models come from a real MLflow store.
"""

from __future__ import annotations

import pytest
import yaml


def test_seldon_target_renders_predictors_with_artifact_locations(shell, cluster, models, wolt_home) -> None:
    d = shell.run_line_magic(
        "wolt_deploy",
        f"fraud --model {models['champion']} --ab {models['v2']}=10 --shadow {models['v3']} --target seldon",
    )
    assert d.status == "ready" and d.url.startswith("http://fraud-default.default.svc")
    sdep = cluster.get_object("machinelearning.seldon.io/v1", "SeldonDeployment", "default", "fraud")
    predictors = {p["name"]: p for p in sdep["spec"]["predictors"]}
    assert predictors["main"]["traffic"] == 90 and predictors["shadow"]["shadow"] is True
    artifacts = (wolt_home.resolve() / "artifacts").as_uri()
    assert all(p["graph"]["modelUri"].startswith(artifacts) for p in predictors.values())


def test_kserve_refuses_shadow_before_touching_the_cluster(shell, cluster, models, capsys) -> None:
    result = shell.run_cell(
        f"%wolt_deploy risk --model {models['champion']} --shadow {models['v3']} --target kserve"
    )
    out = capsys.readouterr()
    assert not result.success and "KServe cannot shadow traffic" in out.out + out.err
    assert cluster.get_object("serving.kserve.io/v1beta1", "InferenceService", "default", "risk") is None
    # a canary needs the stable model to be the revision KServe already serves
    result = shell.run_cell(
        f"%wolt_deploy risk --model {models['champion']} --ab {models['v2']}=10 --target kserve"
    )
    out = capsys.readouterr()
    assert not result.success and "deploy main (models:/eta/1) alone first" in out.out + out.err
    d = shell.run_line_magic("wolt_deploy", f"risk --model {models['champion']} --target kserve")
    assert d.status == "ready" and d.url
    d = shell.run_line_magic("wolt_deploy", f"risk --model {models['champion']} --ab {models['v2']}=10")
    isvc = cluster.get_object("serving.kserve.io/v1beta1", "InferenceService", "default", "risk")
    assert d.status == "ready" and isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    shell.run_line_magic("wolt_traffic", "risk main=50 challenger=50")  # moving the canary's share is fine
    isvc = cluster.get_object("serving.kserve.io/v1beta1", "InferenceService", "default", "risk")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 50


def test_unreachable_cluster_is_one_line(shell, models, unreachable_cluster, capsys) -> None:
    result = shell.run_cell(f"%wolt_deploy eta --model {models['champion']} --target kubernetes")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert not result.success
    assert last.startswith("ClusterUnreachable: cannot reach the Kubernetes API at")
    assert shell.run_line_magic("wolt_deployments", "").empty  # a failed first deploy leaves nothing behind


def test_mlflow_deployments_plugin_drives_the_same_backends(cluster, models) -> None:
    from mlflow.deployments import get_deploy_client
    from mlflow.exceptions import MlflowException

    client = get_deploy_client("wolt-kubernetes")
    created = client.create_deployment("plug", models["champion"], config={"ab": f"{models['v2']}=25"})
    assert created["status"] == "ready" and created["target"] == "kubernetes"
    assert [v["traffic"] for v in created["variants"] if not v["shadow"]] == [75, 25]
    assert [d["name"] for d in client.list_deployments()] == ["plug"]
    assert client.get_deployment("plug")["revision"] == 1
    with pytest.raises(MlflowException, match="exists; use update_deployment"):
        client.create_deployment("plug", models["champion"])
    with pytest.raises(MlflowException, match="DNS-1123"):
        client.create_deployment("Bad_Name", models["champion"])
    client.delete_deployment("plug")
    assert cluster.get_object("apps/v1", "Deployment", "default", "plug") is None
    assert client.list_deployments() == []


def test_spec_from_a_variable_or_a_file_and_no_wait(shell, cluster, models, tmp_path) -> None:
    spec = {
        "name": "ignored-name",  # the magic's NAME wins
        "variants": [
            {"name": "blue", "model": models["champion"], "traffic": 60},
            {"name": "green", "model": models["v2"], "traffic": 40},
        ],
        "routing": {"sticky_key": "user_id"},
        "replicas": 3,
    }
    shell.user_ns["my_spec"] = spec
    d = shell.run_line_magic("wolt_deploy", "colors --spec my_spec --target kubernetes")
    assert [(v["name"], v["model"], v["traffic"]) for v in d.variants] == [
        ("blue", "models:/eta/1", 60),
        ("green", "models:/eta/2", 40),
    ]
    assert cluster.get_object("apps/v1", "Deployment", "default", "colors")["spec"]["replicas"] == 3

    path = tmp_path / "spec.yaml"
    single = {**spec, "variants": [{**spec["variants"][0], "traffic": 100}]}
    path.write_text(yaml.safe_dump(single))
    cluster.never_ready.add("slow")
    started = shell.run_line_magic("wolt_deploy", f"slow --spec {path} --target kubernetes --no-wait")
    assert started.status == "starting" and started.revision == 1  # returned without waiting for readiness
    result = shell.run_cell(f"%wolt_deploy other --spec {path} --model {models['v2']}")
    assert not result.success


def test_a_tracking_password_goes_into_a_secret_and_is_never_shown(
    shell, cluster, models, monkeypatch
) -> None:
    password = "p@ss/w:rd%40"
    uri = f"http://ml:{password}@mlflow.ml:5000"
    monkeypatch.setenv("WOLT_CLUSTER_TRACKING_URI", uri)
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['champion']} --target kubernetes")
    assert d.status == "ready"
    secret = cluster.get_object("v1", "Secret", "default", "eta-credentials")
    assert secret is not None and secret["stringData"]["MLFLOW_TRACKING_URI"] == uri
    deployment = cluster.get_object("apps/v1", "Deployment", "default", "eta")
    assert password not in str(deployment)  # the Deployment only references the Secret
    monkeypatch.setenv("WOLT_CLUSTER_TRACKING_URI", uri.replace("w:rd", "w:rd2"))  # a changed password
    d = shell.run_line_magic(
        "wolt_deploy", f"eta --model {models['champion']} --ab {models['v2']}=10 --dry-run"
    )
    assert "Secret" in [m["kind"] for m in d.manifests] and "challenger" in d.diff
    for shown in (repr(d), d._repr_html_(), d.diff):
        assert "p@ss" not in shown and "w:rd" not in shown
    assert "eta-credentials" in repr(d) and "MLFLOW_TRACKING_URI: '****'" in repr(d)


def test_status_and_wait_share_one_readiness_rule_per_kind(wolt_home) -> None:
    """A Deployment whose old pods are still ready mid-rollout is not ready for the status either (the
    rollout's wait and the backend's status read the same rule)."""
    from wolt_jupyter.backends.kubernetes import KServeBackend, KubernetesBackend, SeldonBackend
    from wolt_jupyter.config import settings
    from wolt_jupyter.kubeclient import READINESS

    s = settings()
    mid_rollout = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1},
    }
    state, line = KubernetesBackend(s).readiness(mid_rollout)
    assert (state, line) == ("waiting", "2/2 ready, 1/2 updated")
    done = {**mid_rollout, "status": {**mid_rollout["status"], "updatedReplicas": 2}}
    assert KubernetesBackend(s).readiness(done)[0] == "ready"
    for backend in (KubernetesBackend, SeldonBackend, KServeBackend):
        assert "readiness" not in vars(backend)  # no per-target copy of a rule: its main object's kind
        assert backend.main_object[1] in READINESS


def test_replicas_log_to_the_store_the_record_names_through_a_secret(
    shell, cluster, models, monkeypatch, wolt_home, cluster_store
) -> None:
    """Every pod writes to the one store of the deployment record: its URL (as pods reach it) in the
    ``<name>-credentials`` Secret, read by ``secretKeyRef``; never in clear in any structure; the notebook's
    readers take the record's (notebook-side) URL."""
    import json
    import os

    from wolt_jupyter.responses.store import store_url
    from wolt_jupyter.server.serialize import deployment as as_json

    notebook_store = os.environ["WOLT_RESPONSE_STORE_URL"]
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['champion']} --target kubernetes")
    assert d.status == "ready" and d.response_store == "postgresql://wolt:****@127.0.0.1:55432/wolt"
    secret = cluster.get_object("v1", "Secret", "default", "eta-credentials")
    assert secret["stringData"]["WOLT_RESPONSE_STORE_URL"] == cluster_store
    pod = cluster.get_object("apps/v1", "Deployment", "default", "eta")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["WOLT_RESPONSE_STORE_URL"] == {
        "name": "WOLT_RESPONSE_STORE_URL",
        "valueFrom": {"secretKeyRef": {"name": "eta-credentials", "key": "WOLT_RESPONSE_STORE_URL"}},
    }
    # the pods' rows name the revision the notebook reads: from their ConfigMap, which they follow
    assert cluster.get_object("v1", "ConfigMap", "default", "eta-spec")["data"]["revision"] == "1"
    assert env["WOLT_SPEC_CONFIGMAP"]["value"] == "eta-spec" and "WOLT_REVISION" not in env
    assert "s3cr" not in json.dumps(cluster.get_object("apps/v1", "Deployment", "default", "eta"))

    # the record names the store; a shell with other settings still reads (and redeploys to) that one
    monkeypatch.setenv("WOLT_RESPONSE_STORE_URL", "postgresql://other@db.elsewhere/x")
    assert store_url("eta") == notebook_store
    dry = shell.run_line_magic(
        "wolt_deploy", f"eta --model {models['champion']} --ab {models['v2']}=10 --dry-run"
    )
    for shown in (
        repr(dry),
        dry._repr_html_(),
        json.dumps(dry.to_dict()),
        json.dumps(as_json(dry)),
        dry.diff,
    ):
        assert "s3cr" not in shown and "elsewhere" not in shown
    assert dry.manifests[0]["stringData"] == {"WOLT_RESPONSE_STORE_URL": "****"}
    assert "WOLT_RESPONSE_STORE_URL: '****'" in repr(dry)
    shell.run_line_magic("wolt_undeploy", "eta")
    assert store_url("eta") == notebook_store  # an undeployed deployment's log is still found


@pytest.mark.parametrize(
    ("store", "cluster_store", "why"),
    [
        (None, None, "is a file on this machine"),
        ("postgresql://wolt:pw@127.0.0.1:5432/wolt", None, "this machine's loopback"),
        ("postgresql://wolt:pw@db.ml:5432/wolt", "postgresql://wolt@/wolt", "a Unix socket of this machine"),
    ],
)
def test_a_store_pods_cannot_share_is_refused_before_anything_is_applied(
    shell, cluster, models, monkeypatch, store, cluster_store, why
) -> None:
    for name, value in (
        ("WOLT_RESPONSE_STORE_URL", store),
        ("WOLT_CLUSTER_RESPONSE_STORE_URL", cluster_store),
    ):
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    dry = shell.run_line_magic(
        "wolt_deploy", f"eta --model {models['champion']} --target kubernetes --dry-run"
    )
    [line] = [w for w in dry.warnings if "response store" in w]
    assert why in line and "RESPONSE_STORE_URL" in line and ":pw@" not in line
    result = shell.run_cell(f"%wolt_deploy eta --model {models['champion']} --target kubernetes")
    assert not result.success and why in str(result.error_in_exec)
    assert cluster.get_object("apps/v1", "Deployment", "default", "eta") is None
    assert cluster.get_object("v1", "Secret", "default", "eta-credentials") is None
    # a spec that logs nothing needs no store
    spec = {"name": "eta", "variants": [{"name": "main", "model": models["champion"], "traffic": 100}],
            "logging": {"responses": False}}  # fmt: skip
    shell.user_ns["quiet"] = spec
    d = shell.run_line_magic("wolt_deploy", "eta --spec quiet --target kubernetes")
    assert d.status == "ready"
