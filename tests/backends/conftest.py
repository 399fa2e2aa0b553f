"""Fixtures of the cluster-target tests: the project's test API server reached through KUBECONFIG, and a dead
cluster (registered models, rows and the clean-up of local deployments are shared: ../conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kube.apiserver import TestApiServer

# the cluster's response store: as this machine reaches it (a port-forward) and as the pods do (a Service)
NOTEBOOK_STORE = "postgresql://wolt:s3cr%40t@127.0.0.1:55432/wolt"
POD_STORE = "postgresql://wolt:s3cr%40t@postgres.ml:5432/wolt"


@pytest.fixture
def cluster_store(monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings naming a PostgreSQL response store the pods reach (a kubernetes deploy logging responses
    refuses anything else); the pods' URL."""
    monkeypatch.setenv("WOLT_RESPONSE_STORE_URL", NOTEBOOK_STORE)
    monkeypatch.setenv("WOLT_CLUSTER_RESPONSE_STORE_URL", POD_STORE)
    return POD_STORE


@pytest.fixture
def cluster(tmp_path: Path, wolt_home: Path, monkeypatch: pytest.MonkeyPatch, cluster_store: str):
    """The test API server, reached through KUBECONFIG; its controller marks workloads ready."""
    with TestApiServer(controller=True, ready_delay=0.05) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        yield server


@pytest.fixture
def unreachable_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster_store: str) -> str:
    """KUBECONFIG pointing at a port nothing listens on; returns the server URL."""
    from helpers import free_port

    server = f"http://127.0.0.1:{free_port()}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kc").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kc"))
    return server
