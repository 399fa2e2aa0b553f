"""The operators' published CRDs on the real API server: every render of the ``kserve`` target passes a server-side dry run with strict field validation (``dryRun=All``, ``fieldValidation=Strict``), which
is the API server's own structural-schema validation, defaulting and pruning, and ``--dry-run`` asks it.

The CRDs come from the operators' Go modules at the releases the package's schemas were derived from
(scripts/cluster/fetch-crds.sh, cached by version) and are installed once per session by server-side apply.
They stay installed afterwards: they are cluster-scoped, another session may be using them, and they change
nothing for a test that does not render those kinds. Seldon's module is not served by the Go module proxy
(403, in SELDON-MISSING): the ``seldon`` target has no server-side test until its CRD can be fetched here.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wolt_jupyter.backends.render import ClusterContext, render_kserve
from wolt_jupyter.errors import ClusterError, InvalidArgument
from wolt_jupyter.kubeclient import KubeCluster
from wolt_jupyter.spec import DeploymentSpec

REPO = Path(__file__).resolve().parents[2]
FETCH = REPO / "scripts" / "cluster" / "fetch-crds.sh"
KSERVE_KINDS = ("InferenceService", "ServingRuntime", "ClusterServingRuntime")
MAIN = {"name": "main", "model": "models:/eta/3", "traffic": 100}
SPECS = {
    "single": {"variants": [MAIN]},
    "single-quiet": {"variants": [MAIN], "logging": {"responses": False}},
    "canary": {
        "variants": [{**MAIN, "traffic": 90}, {"name": "canary", "model": "models:/eta/9", "traffic": 10}]
    },
    "resources": {
        "variants": [MAIN],
        "replicas": 2,
        "resources": {"cpu": "500m", "memory": "512Mi"},
        "logging": {"responses": True},
    },
}
ARTIFACTS = {
    v: f"s3://models/eta/{n}/artifacts"
    for v, n in (("main", 3), ("canary", 9), ("challenger", 7), ("shadow", 8))
}


def _kubectl(kubeconfig: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        text=True, capture_output=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def operator_crds(kube_control_plane: Path) -> dict[str, Any]:
    """Fetch (cached by version) and install the published CRDs; wait until the API server serves them."""
    fetched = subprocess.run(["bash", str(FETCH)], text=True, capture_output=True, timeout=900, check=False)
    assert fetched.returncode == 0, fetched.stderr[-4000:]
    crd_dir = Path(fetched.stdout.strip().splitlines()[-1])
    files = sorted(crd_dir.glob("*.yaml"))
    assert len(files) >= len(KSERVE_KINDS), f"{crd_dir}: {files}"
    # server-side: the InferenceService CRD (1.9 MB) is past client-side apply's annotation limit
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=wolt-jupyter-tests"]
    for f in files:
        applied = _kubectl(kube_control_plane, *args, "-f", str(f))
        assert applied.returncode == 0, f"{f.name}: {applied.stderr}"
    names = [f.stem.split("_", 1)[1] + "." + f.stem.split("_", 1)[0] for f in files]
    query = (
        '{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\\n"}{end}'
    )
    deadline = time.monotonic() + 60
    while True:  # `kubectl wait` fails on a CRD whose status the server has not written yet
        listed = _kubectl(kube_control_plane, "get", "crd", "-o", f"jsonpath={query}")
        established = {
            line.partition("=")[0] for line in listed.stdout.splitlines() if line.endswith("=True")
        }
        if set(names) <= established:
            break
        assert time.monotonic() < deadline, f"not established in 60 s: {set(names) - established}"
        time.sleep(0.2)
    missing = crd_dir / "SELDON-MISSING"
    return {"dir": crd_dir, "seldon_missing": missing.read_text() if missing.exists() else None}


@pytest.fixture
def crd_namespace(kube_control_plane: Path, operator_crds: dict[str, Any]) -> Iterator[str]:
    name = f"t-crd-{uuid.uuid4().hex[:8]}"
    made = _kubectl(kube_control_plane, "create", "namespace", name)
    assert made.returncode == 0, made.stderr
    yield name
    _kubectl(kube_control_plane, "delete", "namespace", name, "--wait=false")


@pytest.fixture
def cluster(kube_control_plane: Path) -> KubeCluster:
    return KubeCluster(kubeconfig=str(kube_control_plane))


def _ctx(namespace: str) -> ClusterContext:
    return ClusterContext(
        namespace=namespace,
        tracking_uri="http://mlflow.ml:5000",
        artifacts=ARTIFACTS,
        request_logger_url=f"http://eta-logger.{namespace}.svc/",
        service_account="models-reader",
    )


def _lost(rendered: Any, answered: Any, path: str = "") -> list[str]:
    """Every leaf we rendered that the server's answer lacks or changed: what pruning or a bad default did."""
    if isinstance(rendered, dict):
        if not isinstance(answered, dict):
            return [f"{path}: {answered!r}"]
        return [p for k, v in rendered.items() for p in _lost(v, answered.get(k), f"{path}.{k}")]
    if isinstance(rendered, list):
        if not isinstance(answered, list) or len(answered) != len(rendered):
            return [f"{path}: {answered!r}"]
        return [
            p
            for i, (a, b) in enumerate(zip(rendered, answered, strict=True))
            for p in _lost(a, b, f"{path}[{i}]")
        ]
    return [] if rendered == answered else [f"{path}: rendered {rendered!r}, server kept {answered!r}"]


def _dry_run_keeps_everything(cluster: KubeCluster, manifests: list[dict], namespace: str) -> None:
    answered = cluster.apply(manifests, namespace=namespace, dry_run=True)
    assert len(answered) == len(manifests)
    for rendered, obj in zip(manifests, answered, strict=True):
        assert obj["kind"] == rendered["kind"]
        assert obj["metadata"]["namespace"] == namespace
        assert _lost(rendered["spec"], obj["spec"], "spec") == []
        # dryRun=All persisted nothing
        assert (
            cluster.get(
                rendered["apiVersion"], rendered["kind"], rendered["metadata"]["name"], namespace=namespace
            )
            is None
        )


@pytest.mark.cluster
def test_kserve_crds_are_served(operator_crds: dict[str, Any], cluster: KubeCluster) -> None:
    for kind in KSERVE_KINDS:
        assert cluster.serves(
            "serving.kserve.io/v1alpha1" if "Runtime" in kind else "serving.kserve.io/v1beta1", kind
        )


@pytest.mark.cluster
@pytest.mark.parametrize("shape", sorted(SPECS))
def test_every_kserve_render_passes_strict_server_dry_run(
    shape: str, cluster: KubeCluster, crd_namespace: str
) -> None:
    manifests = render_kserve(DeploymentSpec.from_dict({"name": "eta", **SPECS[shape]}), _ctx(crd_namespace))
    _dry_run_keeps_everything(cluster, manifests, crd_namespace)


@pytest.mark.cluster
def test_strict_validation_refuses_an_unknown_field(cluster: KubeCluster, crd_namespace: str) -> None:
    """The check can fail: a misspelt field is refused by the CRD's schema, not silently pruned."""
    [isvc] = render_kserve(DeploymentSpec.from_dict({"name": "eta", **SPECS["single"]}), _ctx(crd_namespace))
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(ClusterError, match=r"storageURI"):
        cluster.apply([isvc], namespace=crd_namespace, dry_run=True)
    # and a value the schema refuses (canaryTrafficPercent is an integer)
    [isvc] = render_kserve(DeploymentSpec.from_dict({"name": "eta", **SPECS["single"]}), _ctx(crd_namespace))
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    with pytest.raises(ClusterError, match=r"^invalid: .*canaryTrafficPercent"):
        cluster.apply([isvc], namespace=crd_namespace, dry_run=True)


@pytest.mark.cluster
def test_dry_run_of_the_kserve_target_asks_the_cluster(
    kube_control_plane: Path, crd_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``deploy --dry-run --target kserve`` with a reachable cluster: the result says the API server checked it;
    nothing is created; an unreachable cluster makes the same check say NOT RUN."""
    from wolt_jupyter import deployments

    monkeypatch.setenv("WOLT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(kube_control_plane))
    monkeypatch.setenv("WOLT_NAMESPACE", crd_namespace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = {"name": "eta", "variants": [{**MAIN, "model": "runs:/0123456789abcdef/model"}]}
    started = time.monotonic()
    d = deployments.deploy("eta", spec=spec, target="kserve", dry_run=True)
    assert d.status == "dry-run"
    asked = [c for c in d.checks if c.startswith("server-side dry run")]
    assert asked == ["server-side dry run (dryRun=All, fieldValidation=Strict) (asked the cluster)"], d.checks
    assert any(c.endswith("(offline)") for c in d.checks), d.checks
    assert time.monotonic() - started < 30
    cluster = KubeCluster(kubeconfig=str(kube_control_plane))
    assert (
        cluster.get("serving.kserve.io/v1beta1", "InferenceService", "eta", namespace=crd_namespace) is None
    )

    # a namespace the API server does not have: the check could not run, and says so
    monkeypatch.setenv("WOLT_NAMESPACE", f"absent-{uuid.uuid4().hex[:6]}")
    d = deployments.deploy("eta", spec=spec, target="kserve", dry_run=True)
    [line] = [c for c in d.checks if c.startswith("server-side dry run")]
    assert "NOT RUN, needs the cluster" in line and "not found" in line


@pytest.mark.cluster
def test_dry_run_refused_by_the_server_fails_the_dry_run(
    kube_control_plane: Path, crd_namespace: str, cluster: KubeCluster, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    from wolt_jupyter.backends.kubernetes import KServeBackend
    from wolt_jupyter.config import settings

    monkeypatch.setenv("WOLT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(kube_control_plane))
    be = KServeBackend(settings(), namespace=crd_namespace)
    [isvc] = render_kserve(DeploymentSpec.from_dict({"name": "eta", **SPECS["single"]}), _ctx(crd_namespace))
    isvc["spec"]["predictor"]["minReplicas"] = "two"  # the CRD's schema: an int32
    with pytest.raises(InvalidArgument, match=r"refused the kserve render: invalid: .*minReplicas"):
        be.server_dry_run([isvc], {})


@pytest.mark.cluster
def test_the_logger_service_passes_strict_server_dry_run(cluster: KubeCluster, crd_namespace: str) -> None:
    """The logger service rendered beside an operator deployment (Secret, Deployment, Service): admitted by
    the API server under strict validation, with the store's URL put in only at apply time."""
    from wolt_jupyter.backends.render import credentials, render_request_logger, with_credentials

    spec = DeploymentSpec.from_dict({"name": "eta", **SPECS["single"]})
    store = "postgresql+psycopg://wolt:pw@10.233.0.1/r"
    ctx = dataclasses.replace(_ctx(crd_namespace), response_store_url=store)
    manifests = render_request_logger(spec, ctx)
    assert [m["kind"] for m in manifests] == ["Secret", "Deployment", "Service"]
    real = with_credentials(manifests, credentials(spec, ctx))
    answered = cluster.apply(real, namespace=crd_namespace, dry_run=True)
    deployment = answered[1]
    # the server defaulted the pod template (e.g. the restart policy) and kept every field we rendered
    assert deployment["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert _lost(manifests[1]["spec"], deployment["spec"], "spec") == []
    assert _lost(manifests[2]["spec"], answered[2]["spec"], "spec") == []
    assert cluster.get("apps/v1", "Deployment", "eta-logger", namespace=crd_namespace) is None
