"""The cluster tier: a real single-node Kubernetes built from upstream (scripts/cluster/cluster.py), the runtime
image built here from the repository's Dockerfile, and the servers its pods use on the cluster bridge's address
(a real `mlflow server` with proxied artifacts, a real PostgreSQL as the response store).

`make test` brings the cluster up before pytest (`make cluster-up`); run alone, the session fixture does it
(cold: builds Kubernetes and the images once, into ~/.cache/wolt-jupyter/cluster). Each test gets a fresh
namespace, deleted afterwards. The images are re-imported when the package source changed, so a test runs
the code of this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ISOLATED_ENV, running_mlflow_server
from pg_server import new_database, running_postgres

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "cluster" / "cluster.py"
KUBECONFIG = Path(os.environ.get("WOLT_CLUSTER_DIR", REPO / ".cluster")) / "kubeconfig"
NODE_IP = "10.233.0.1"  # the bridge's address: what pods reach of this machine (cluster.py NODE_IP)
POD_CIDR = "10.233.0.0/24"


def _cluster(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLUSTER), *args], text=True, capture_output=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def kube_cluster() -> Path:
    """The running cluster's kubeconfig (brought up if it is down), with this checkout's images imported."""
    if _cluster("status").returncode != 0:
        up = _cluster("up")
        if up.returncode != 0:
            pytest.fail(f"cluster up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    else:
        images = _cluster("images")  # a content hash: an unchanged tree is a cache hit
        if images.returncode != 0:
            pytest.fail(f"building the images failed:\n{images.stdout[-4000:]}\n{images.stderr[-4000:]}")
    return KUBECONFIG


@pytest.fixture(scope="session")
def kube_control_plane() -> Path:
    """The running cluster's kubeconfig (brought up if it is down) for tests of the API server alone: no
    image is built or imported. ``WOLT_CLUSTER_DIR`` names another checkout's cluster (a worktree's tests
    against the cluster main's checkout runs); CI's checkout is the cluster's own."""
    if _cluster("status").returncode != 0:
        up = _cluster("up")
        if up.returncode != 0:
            pytest.fail(f"cluster up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    return KUBECONFIG


@pytest.fixture(scope="session")
def kube_api(kube_cluster: Path) -> Any:
    """The official client's CoreV1Api/AppsV1Api on the admin's kubeconfig (for assertions, not for the code under test)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kube_cluster))
    return type("Kube", (), {"core": client.CoreV1Api(api_client), "apps": client.AppsV1Api(api_client),
                             "rbac": client.RbacAuthorizationV1Api(api_client), "client": api_client})  # fmt: skip


@pytest.fixture
def kube_namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace for one test, deleted (and waited for) afterwards."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    kube_api.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # the controller-manager gives every namespace its default service account; pods need it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if kube_api.core.list_namespaced_service_account(name).items:
            break
        time.sleep(0.2)
    yield name
    kube_api.core.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture
def cluster_mlflow(kube_cluster: Path, tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on the bridge's address with proxied artifacts (mlflow-artifacts:/...), which the
    pods download through it: the setup a team gives its cluster. One per test: the tests name their versions
    (models:/eta/2), which a registry shared by the session would have given to an earlier test."""
    root = tmp_path / "cluster-mlflow"
    root.mkdir()
    with running_mlflow_server(root, host=NODE_IP) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_postgres(kube_cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL on loopback and the bridge's address; pods log in with a password."""
    with running_postgres(
        tmp_path_factory.mktemp("cluster-pg"), dbname="responses", also_listen=NODE_IP, password_from=POD_CIDR
    ) as server:
        yield server


@pytest.fixture
def on_cluster(
    wolt_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    kube_cluster: Path,
    kube_namespace: str,
    cluster_mlflow: str,
    cluster_postgres: Any,
) -> dict[str, str]:
    """The notebook's settings for the cluster: its kubeconfig, the namespace, MLflow and the response store
    (the notebook reads the store on loopback, the pods through the bridge with the password); with
    ``WOLT_RUNTIME_TAG`` set (a branch's image beside main's), the pods run that image."""
    tag = os.environ.get("WOLT_RUNTIME_TAG")  # kube_cluster built this checkout's image under that name
    for name in ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    here = new_database(cluster_postgres.url_for("127.0.0.1"))
    env = {
        **({"WOLT_RUNTIME_IMAGE": tag} if tag else {}),
        "KUBECONFIG": str(kube_cluster),
        "WOLT_NAMESPACE": kube_namespace,
        "WOLT_DEFAULT_TARGET": "kubernetes",
        "MLFLOW_TRACKING_URI": cluster_mlflow,
        # a database of its own: every test names its deployment eta, and a shared log would mix their rows
        "WOLT_RESPONSE_STORE_URL": here,
        "WOLT_CLUSTER_RESPONSE_STORE_URL": here.replace(
            cluster_postgres.url_for("127.0.0.1").rsplit("/", 1)[0],
            cluster_postgres.url_for(NODE_IP).rsplit("/", 1)[0],
        ),
        "WOLT_UNREACHABLE_ARTIFACTS": "refuse",  # a test model the pods could not read is a failure here
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
