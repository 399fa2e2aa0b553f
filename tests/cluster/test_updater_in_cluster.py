"""The update service as a pod on the real cluster: rendered by `wolt-jupyter updater render --target kubernetes`
(its service account and least-privilege Role), applied with the project's own server-side apply (strict field
validation), running the runtime image (no `kubernetes` package: the in-cluster transport), adopting the
deployment the notebook made. A better version registered as the challenger is promoted; a version fine offline
but failing live is rolled back; a load through the Service the whole time fails no request.

The cluster has no storage provisioner: the test gives the service's state claim a hostPath volume, as a
platform team would give it a storage class."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from cluster_support import events, service_url

from deploy_support import FAILS_LIVE, Load, failures
from helpers import FEATURES

pytestmark = pytest.mark.cluster

SERVICE_ACCOUNT = "eta-updater"
# a branch's image (build-images.sh with WOLT_RUNTIME_TAG), read before the fixtures isolate the environment
IMAGE = os.environ.get("WOLT_RUNTIME_IMAGE")


def _register(tmp_path: Path) -> str:
    """v1 (champion): 1.1 x the sum; v2: the sum (better); v3: FAILS_LIVE. Returns the holdout's runs:/ URI."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter._mlflow import mlflow_client

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)), columns=FEATURES)
    for scale in (1.1, 1.0):
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X.head(3)
        )
    code = tmp_path / "fails_live.py"
    code.write_text(FAILS_LIVE)
    holdout = pd.DataFrame(np.random.default_rng(5).normal(size=(200, 3)), columns=FEATURES)
    holdout.assign(y=holdout.sum(axis=1)).to_parquet(tmp_path / "holdout.parquet")
    mlflow.set_experiment("eta-holdout")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "holdout.parquet"))
        mlflow.pyfunc.log_model(name="model", python_model=str(code), registered_model_name="eta",
                                input_example=X.head(3))  # fmt: skip
    mlflow_client().set_registered_model_alias("eta", "champion", "1")
    return f"runs:/{run.info.run_id}/holdout.parquet"


def _policy(dataset: str) -> dict[str, Any]:
    return {
        "deployment": "eta",
        "watch": {"model": "eta", "alias": "challenger", "poll_seconds": 1},
        # a small negative margin: v3 ties v2 (both the exact sum) up to rounding
        "offline": {"dataset": dataset, "target": "y", "metrics": {"rmse": "min"}, "min_improvement": -0.01},
        "rollout": {"shadow": False, "canary": [{"weight": 50, "bake": "5s"}, {"weight": 100, "bake": "5s"}]},
        "guards": {"min_sample": 20, "limit_min_requests": 10, "max_error_rate": 0.05, "step_deadline": "3m"},
    }


@contextlib.contextmanager
def _state_volume(kube_api: Any, namespace: str, folder: Path):
    """A hostPath PersistentVolume bound to the service's state claim (no provisioner here), removed after."""
    from kubernetes import client

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)  # the pod runs as uid 1000; fsGroup does not reach a hostPath
    name = f"{namespace}-updater-state"
    kube_api.core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteOnce"],
                persistent_volume_reclaim_policy="Retain",
                storage_class_name="",
                host_path=client.V1HostPathVolumeSource(path=str(folder), type="Directory"),
                claim_ref=client.V1ObjectReference(namespace=namespace, name="eta-updater-state"),
            ),
        )
    )
    try:
        yield
    finally:
        kube_api.core.delete_persistent_volume(name)


def _can_i(namespace: str, verb: str, what: str) -> bool:
    out = subprocess.run(
        ["kubectl", "auth", "can-i", verb, what, "-n", namespace,
         f"--as=system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"],
        capture_output=True, text=True, env={**os.environ}, check=False,
    )  # fmt: skip
    return out.stdout.strip() == "yes"


def _spec_variants(kube_api: Any, namespace: str) -> list[tuple[str, str, int, bool]]:
    """(name, model, traffic, shadow) of the spec the eta pods serve, from its ConfigMap."""
    cm = kube_api.core.read_namespaced_config_map("eta-spec", namespace)
    spec = yaml.safe_load(cm.data["spec.yaml"])
    return [(v["name"], v["model"], v.get("traffic", 0), bool(v.get("shadow"))) for v in spec["variants"]]


def _updater_pod(kube_api: Any, namespace: str) -> Any | None:
    selector = "app.kubernetes.io/instance=eta,app.kubernetes.io/component=updater"
    items = kube_api.core.list_namespaced_pod(namespace, label_selector=selector).items
    return items[0] if items else None


def _pod_log(kube_api: Any, namespace: str) -> str:
    pod = _updater_pod(kube_api, namespace)
    if pod is None:
        return "(no updater pod)"
    with contextlib.suppress(Exception):
        return kube_api.core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=40)
    return "(no log)"


def _until(what: str, ok, kube_api: Any, namespace: str, timeout: float) -> float:
    """Poll ``ok`` until true; the time it became true. On timeout: the service's log and the events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return time.monotonic()
        time.sleep(0.25)
    raise AssertionError(
        f"timed out after {timeout:g} s waiting for {what}\nupdater log:\n{_pod_log(kube_api, namespace)}\n"
        f"events: {events(kube_api, namespace)[-3000:]}"
    )


def test_the_update_service_in_a_pod_promotes_a_better_version_and_rolls_back_a_failing_one(
    shell: Any,
    on_cluster: dict[str, str],
    kube_api: Any,
    kube_namespace: str,
    undeploy_all: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from wolt_jupyter import steer_rollout
    from wolt_jupyter._mlflow import mlflow_client
    from wolt_jupyter.cli import main
    from wolt_jupyter.kubeclient import KubeCluster
    from wolt_jupyter.updater.control import rollout_status

    ns = kube_namespace
    if IMAGE:
        monkeypatch.setenv("WOLT_RUNTIME_IMAGE", IMAGE)
    dataset = _register(tmp_path)
    d = shell.run_line_magic("wolt_deploy", "eta --model models:/eta@champion --target kubernetes")
    assert d.status == "ready", (d.message, events(kube_api, ns))

    # render exactly as a user does, apply with the project's server-side apply (strict validation)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(_policy(dataset)))
    capsys.readouterr()
    assert main(["updater", "render", "--policy", str(policy_file), "--target", "kubernetes"]) == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {m["kind"] for m in manifests} >= {"ServiceAccount", "Role", "RoleBinding", "Deployment"}
    cluster = KubeCluster(kubeconfig=on_cluster["KUBECONFIG"])

    with _state_volume(kube_api, ns, tmp_path / "updater-state"):
        t_apply = time.monotonic()
        cluster.apply(manifests, namespace=ns)
        # least privilege, as the API server's authorizer answers for the pod's account
        allowed = [("patch", "deployments/eta"), ("get", "configmaps/eta-spec"), ("watch", "deployments/eta"),
                   ("patch", "configmaps/eta-updater-control"),
                   ("list", "pods"), ("get", "pods/log"),
                   ("list", "endpointslices.discovery.k8s.io")]  # fmt: skip
        refused = [("delete", "deployments/eta"), ("create", "deployments"), ("patch", "deployments/other"),
                   ("get", "secrets/other"), ("list", "secrets"), ("create", "pods"), ("delete", "pods"),
                   ("patch", "roles/eta-updater"), ("get", "deployments/eta-updater"),
                   ("list", "namespaces")]  # fmt: skip
        assert [a for a in allowed if not _can_i(ns, *a)] == []
        assert [r for r in refused if _can_i(ns, *r)] == []

        def ready() -> bool:
            pod = _updater_pod(kube_api, ns)
            statuses = (pod.status.container_statuses or []) if pod else []
            return bool(statuses) and all(c.ready for c in statuses)

        t_ready = _until("the updater pod Ready", ready, kube_api, ns, 180)
        _until("the pod adopting eta", lambda: "adopted kubernetes deployment eta" in _pod_log(kube_api, ns),
               kube_api, ns, 60)  # fmt: skip
        _until("the service watching", lambda: "watching eta" in _pod_log(kube_api, ns), kube_api, ns, 60)
        pod = _updater_pod(kube_api, ns)
        assert pod.spec.service_account_name == SERVICE_ACCOUNT
        assert pod.spec.containers[0].image.endswith(IMAGE or "wolt-jupyter-runtime:0.1.0")

        url = service_url(kube_api, ns, "eta")
        with Load(url, "eta", concurrency=3, limit=200_000) as load:
            load.wait_for(30)
            # a better version: v2 takes 100 % and becomes the champion
            t_v2 = time.monotonic()
            mlflow_client().set_registered_model_alias("eta", "challenger", "2")
            # people steer the service in its pod from here, through its ConfigMap: paused at 50 %, the
            # rollout stays there past its bake; resumed, it goes on
            at_half = ("candidate", "models:/eta/2", 50, False)
            _until("v2's canary at 50 %", lambda: at_half in _spec_variants(kube_api, ns), kube_api, ns, 180)
            t_pause = time.monotonic()
            # the service may still be rolling the canary's pods out: it takes the command at its next look
            paused = steer_rollout("eta", "pause", wait=120)
            assert paused.applied_by == "the service in the cluster", paused
            assert paused.outcome.startswith("paused by hand"), paused
            assert rollout_status("eta")["paused"] and "resume" in rollout_status("eta")["commands"]
            time.sleep(8)  # past the step's 5 s bake
            assert at_half in _spec_variants(kube_api, ns)
            resumed = steer_rollout("eta", "resume", wait=60)
            assert resumed.outcome and resumed.applied_by == "the service in the cluster", resumed
            paused_s = time.monotonic() - t_pause
            t_promoted = _until(
                "v2 promoted",
                lambda: _spec_variants(kube_api, ns) == [("main", "models:/eta/2", 100, False)],
                kube_api, ns, 300,
            )  # fmt: skip
            _until("the champion alias on v2",
                   lambda: str(mlflow_client().get_registered_model("eta").aliases.get("champion")) == "2",
                   kube_api, ns, 60)  # fmt: skip

            # a version that passes offline and fails live: canaried, then rolled back to v2
            t_v3 = time.monotonic()
            mlflow_client().set_registered_model_alias("eta", "challenger", "3")
            saw_canary: list[float] = []
            zeroed: list[float] = []

            def rolled_back() -> bool:
                variants = _spec_variants(kube_api, ns)
                if any(v[1] == "models:/eta/3" for v in variants):
                    saw_canary.append(time.monotonic())
                if any(v[1] == "models:/eta/3" and v[2] == 0 and not v[3] for v in variants) and not zeroed:
                    zeroed.append(time.monotonic())  # the rollback's first half: the candidate at weight 0
                return bool(saw_canary) and variants == [("main", "models:/eta/2", 100, False)]

            t_rolled_back = _until("v3 rolled back", rolled_back, kube_api, ns, 300)
            # the Deployment back on v2 everywhere, and the load still answered after it
            from wolt_jupyter.kubeclient import READINESS

            _until(
                "the rollback rolled out",
                lambda: READINESS["Deployment"](cluster.get("apps/v1", "Deployment", "eta", namespace=ns))[0]
                == "ready",
                kube_api, ns, 120,
            )  # fmt: skip
            # recorded in MLflow after the action (its second half, taking the candidate out, rolls pods)
            _until("v3's rollback recorded",
                   lambda: mlflow_client().get_model_version("eta", "3").tags.get("wolt.update.action") == "rollback",
                   kube_api, ns, 120)  # fmt: skip
            n = len(load.outcomes)
            load.wait_for(n + 60)
        log = _pod_log(kube_api, ns)

    outcomes = load.outcomes
    client = mlflow_client()
    tags = {v: client.get_model_version("eta", v).tags for v in ("2", "3")}
    assert tags["2"].get("wolt.update.action") == "promote", (tags, log)
    assert tags["3"].get("wolt.update.action") == "rollback", (tags, log)
    assert "error rate" in tags["3"].get("wolt.update.reason", ""), tags["3"]
    assert str(client.get_registered_model("eta").aliases["champion"]) == "2"
    measured = {
        "apply_to_pod_ready_s": round(t_ready - t_apply, 1),
        "registration_to_promotion_s": round(t_promoted - t_v2 - paused_s, 1),  # the pause not counted
        "paused_s": round(paused_s, 1),
        "registration_to_canary_s": round(saw_canary[0] - t_v3, 1),
        "registration_to_rollback_s": round(t_rolled_back - t_v3, 1),
        # the rollback reaches the pods in place: the candidate's last answer after its weight went to 0
        "weight_0_to_last_candidate_answer_s": round(
            max(o.t for o in outcomes if o.variant == "candidate") - zeroed[0], 2
        )
        if zeroed
        else None,
        "requests": len(outcomes),
        "failed_client_requests": len(failures(outcomes)),
    }
    with capsys.disabled():
        print(f"\nupdate service in a pod: {json.dumps(measured)}")
    assert failures(outcomes) == [], failures(outcomes)[:5]
    assert outcomes[-1].t > t_rolled_back  # the load ran through both rollouts

    # undeploy takes the service along: nothing of eta or of its update service is left
    shell.run_line_magic("wolt_undeploy", "eta")
    selector = "app.kubernetes.io/instance=eta"
    listers = [
        kube_api.apps.list_namespaced_deployment,
        kube_api.core.list_namespaced_pod,
        kube_api.core.list_namespaced_service,
        kube_api.core.list_namespaced_config_map,
        kube_api.core.list_namespaced_secret,
        kube_api.core.list_namespaced_service_account,
        kube_api.rbac.list_namespaced_role,
        kube_api.rbac.list_namespaced_role_binding,
        kube_api.core.list_namespaced_persistent_volume_claim,
    ]

    def left() -> list[str]:
        return [o.metadata.name for lister in listers for o in lister(ns, label_selector=selector).items]

    deadline = time.monotonic() + 90
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == []
