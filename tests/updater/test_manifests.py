"""The update service's Kubernetes manifests: every one through ``kubernetes-validate --strict`` (the upstream
schemas, as for the deployments' manifests), the policy the pod reads parsing back to the same policy, secrets
only in the Secret, and what a pod cannot read refused with one line."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from wolt_jupyter.backends.render import ClusterContext
from wolt_jupyter.cli import main
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.updater.manifests import WEBHOOK_PORT, render_updater
from wolt_jupyter.updater.policy import parse

from helpers import strict_errors

HOOK_SECRET = "mlflow-hook-5ec2e7"
NOTIFY_SECRET = "slack-sign-88aa"
TRACKING = "https://ml:p4ssw0rd@mlflow.ml.svc:5000"


def full_policy(**over):
    data = {
        "deployment": "eta",
        "watch": {"model": "eta", "alias": "challenger", "webhook": {"port": 8801, "secret": HOOK_SECRET}},
        "offline": {"dataset": "runs:/abc123/holdout.parquet", "target": "y", "metrics": {"rmse": "min"}},
        "replay": {"requests": 500},
        "rollout": {"shadow": {"requests": 200}, "canary": [{"weight": 10, "bake": "5m"}, {"weight": 100, "bake": "5m"}]},
        "guards": {"max_error_rate": 0.02, "live_metric": {"name": "mae", "min_effect": 0.5}},
        "notify": {"webhook": "https://hooks.example/T/B/x", "secret": NOTIFY_SECRET},
        "retrain": {"command": ["python", "/app/train.py"], "drift_threshold": 0.2, "window": "30m"},
    }  # fmt: skip
    data.update(over)
    return parse(data)


def kinds(manifests):
    return {m["kind"]: m for m in manifests}


def test_every_manifest_validates_and_the_pod_reads_the_same_policy(monkeypatch) -> None:
    policy = full_policy()
    manifests = render_updater(policy, ClusterContext(namespace="ml", image="wolt:1", tracking_uri=TRACKING))
    assert [m["kind"] for m in manifests] == [
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "ConfigMap", "Secret", "PersistentVolumeClaim",
        "Deployment", "Service",
    ]  # fmt: skip
    control = manifests[3]  # people's commands and the rollout's state, written by merge patches
    assert control["metadata"]["name"] == "eta-updater-control" and "data" not in control
    env = {
        e["name"]: e.get("value")
        for e in kinds(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["WOLT_UPDATER_CONTROL"] == "eta-updater-control"
    for m in manifests:
        assert strict_errors(m) is None, strict_errors(m)
        assert (
            m["metadata"]["namespace"] == "ml"
            and m["metadata"]["labels"]["app.kubernetes.io/instance"] == "eta"
        )
    k = kinds(manifests)
    deployment = k["Deployment"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {
        "type": "Recreate"
    }  # never two services
    pod = deployment["template"]["spec"]
    assert pod["serviceAccountName"] == "eta-updater" == k["RoleBinding"]["subjects"][0]["name"]
    # least privilege: the deployment's own objects by name, changed by server-side apply (patch) only; its
    # pods read; nothing created, nothing deleted (tests/cluster/test_updater_in_cluster.py asks the server)
    rules = k["Role"]["rules"]
    assert not {"create", "delete", "deletecollection", "update", "*"} & {
        v for r in rules for v in r["verbs"]
    }
    named = {(res, *r["resourceNames"]) for r in rules if r.get("resourceNames") for res in r["resources"]}
    # the runtime pods' account and the right to read their spec are the target's objects, re-applied with it
    assert named == {("deployments", "eta"), ("services", "eta"), ("configmaps", "eta-spec"),
                     ("secrets", "eta-credentials"), ("configmaps", "eta-updater-control"),
                     ("serviceaccounts", "eta-spec"), ("roles", "eta-spec"), ("rolebindings", "eta-spec")}  # fmt: skip
    unnamed = {r["resources"][0]: r["verbs"] for r in rules if not r.get("resourceNames")}
    assert unnamed == {"pods": ["get", "list", "watch"], "pods/log": ["get"], "endpointslices": ["list"]}
    assert {v["name"]: v for v in pod["volumes"]}["state"]["persistentVolumeClaim"][
        "claimName"
    ] == "eta-updater-state"
    container = pod["containers"][0]
    assert container["args"][:5] == ["python", "-m", "wolt_jupyter.cli", "updater", "run"]
    assert k["Service"]["spec"]["ports"][0]["port"] == WEBHOOK_PORT
    # secrets: in the Secret only, read through env; the rest of the manifests never holds them
    stored = k["Secret"]["stringData"]
    assert set(stored) == {
        "WOLT_UPDATER_NOTIFY_SECRET",
        "WOLT_UPDATER_MLFLOW_WEBHOOK_SECRET",
        "MLFLOW_TRACKING_URI",
    }
    others = yaml.safe_dump_all([m for m in manifests if m["kind"] != "Secret"])
    for secret in (HOOK_SECRET, NOTIFY_SECRET, "p4ssw0rd"):
        assert secret not in others
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == k["Secret"]["metadata"]["name"]
    # the policy the pod reads, with the Secret's values in its environment, is the same policy
    for name, value in stored.items():
        monkeypatch.setenv(name, value)
    in_pod = parse(yaml.safe_load(k["ConfigMap"]["data"]["policy.yaml"]))
    assert in_pod.watch.webhook is not None and in_pod.watch.webhook.host == "0.0.0.0"
    assert in_pod.watch.webhook.secret == HOOK_SECRET and in_pod.notify.secret == NOTIFY_SECRET
    for part in ("offline", "replay", "rollout", "guards", "retrain"):
        assert getattr(in_pod, part) == getattr(policy, part), part
    assert (in_pod.deployment, in_pod.watch.model, in_pod.watch.alias) == ("eta", "eta", "challenger")


def test_a_plain_policy_has_no_secret_and_no_service() -> None:
    policy = parse({"deployment": "eta", "watch": {"model": "eta"}})
    manifests = render_updater(policy, ClusterContext(tracking_uri="http://mlflow.ml:5000"))
    assert "Secret" not in kinds(manifests) and "Service" not in kinds(manifests)
    for m in manifests:
        assert strict_errors(m) is None
    env = kinds(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml:5000"} in env


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"offline": {"dataset": pd.DataFrame({"x": [1.0], "y": [2.0]}), "target": "y", "metrics": {"rmse": "min"}}},
         "'offline.dataset' is a DataFrame"),
        ({"offline": {"dataset": "/home/me/holdout.parquet", "target": "y", "metrics": {"rmse": "min"}}},
         "the local path '/home/me/holdout.parquet'"),
        ({"offline": {"dataset": "runs:/a/b.csv", "target": "y", "metrics": [{"name": len, "direction": "max"}]}},
         "callable"),
        ({"deployment": "a" * 60}, "resource name"),
    ],
)  # fmt: skip
def test_what_a_pod_cannot_read_is_refused_in_one_line(over, words) -> None:
    with pytest.raises(InvalidArgument) as err:
        render_updater(full_policy(**over), ClusterContext())
    assert words in str(err.value) and "\n" not in str(err.value)


def record_cluster_deployment(home, name: str = "eta", target: str = "kubernetes", namespace: str = "ml"):
    """The record a ``--target kubernetes`` deploy leaves in the state dir (its spec as revision 1)."""
    from wolt_jupyter.revisions import DeploymentRecord, RevisionStore
    from wolt_jupyter.spec import DeploymentSpec

    store = RevisionStore(home)
    spec = DeploymentSpec.from_dict(
        {"name": name, "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100},
                                    {"name": "shadow", "model": "models:/eta/2", "shadow": True}]}
    )  # fmt: skip
    store.save_record(
        DeploymentRecord(name=name, target=target, namespace=namespace, revision=store.add_revision(spec))
    )
    return spec


def test_cli_prints_manifests_for_kubectl(tmp_path, wolt_home, capsys, monkeypatch) -> None:
    record_cluster_deployment(wolt_home)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"deployment": "eta", "watch": {"model": "eta", "alias": "challenger"}}))
    monkeypatch.setenv("WOLT_CLUSTER_TRACKING_URI", "http://mlflow.ml:5000")
    assert (
        main(["updater", "render", "--policy", str(path), "--target", "kubernetes", "--namespace", "ml"]) == 0
    )
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs][-1] == "Deployment" and all(
        d["metadata"]["namespace"] == "ml" for d in docs
    )
    for d in docs:
        assert strict_errors(d) is None


def test_the_pod_adopts_the_cluster_deployment_once(tmp_path, wolt_home, monkeypatch) -> None:
    """The pod's state volume starts empty: the ConfigMap carries the deployment (target, namespace, current
    spec), ``updater run --adopt`` records it there, and a restarted pod keeps what its service changed."""
    from wolt_jupyter.revisions import RevisionStore
    from wolt_jupyter.updater.manifests import render_for_cluster
    from wolt_jupyter.updater.run import adopt_deployment

    spec = record_cluster_deployment(wolt_home)
    policy = parse({"deployment": "eta", "watch": {"model": "eta", "alias": "challenger"}})
    docs = kinds(render_for_cluster(policy))
    assert docs["ConfigMap"]["metadata"]["namespace"] == "ml"  # beside the deployment, from its record
    args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--adopt") + 1] == "/etc/wolt-updater/deployment.yaml"
    document = tmp_path / "deployment.yaml"
    document.write_text(docs["ConfigMap"]["data"]["deployment.yaml"])

    pod_home = tmp_path / "pod-state"
    monkeypatch.setenv("WOLT_JUPYTER_HOME", str(pod_home))
    assert adopt_deployment("eta", document) is True
    store = RevisionStore(pod_home)
    rec = store.record("eta")
    assert (rec.target, rec.namespace, rec.revision) == ("kubernetes", "ml", 1)
    assert store.spec("eta").to_dict() == spec.to_dict()
    assert adopt_deployment("eta", document) is False  # a restarted pod: its own record stays
    with pytest.raises(InvalidArgument, match="does not describe the cluster deployment 'other'"):
        adopt_deployment("other", document)


def test_only_a_recorded_cluster_deployment_gets_a_pod(wolt_home) -> None:
    from wolt_jupyter.updater.manifests import render_for_cluster

    policy = parse({"deployment": "eta", "watch": {"model": "eta", "alias": "challenger"}})
    with pytest.raises(InvalidArgument, match="deploy it with --target kubernetes"):
        render_for_cluster(policy)
    record_cluster_deployment(wolt_home, target="local", namespace=None)
    with pytest.raises(InvalidArgument, match="a pod cannot update it"):
        render_for_cluster(policy)
