"""Fixtures of the deploy tests: the project's test API server, a dead cluster, registered models that answer
differently, rows, and a clean-up of local deployments."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from backends_support import FEATURES
from kube.apiserver import TestApiServer


@pytest.fixture
def cluster(tmp_path: Path, wolt_home: Path, monkeypatch: pytest.MonkeyPatch):
    """The test API server, reached through KUBECONFIG; its controller marks workloads ready."""
    with TestApiServer(controller=True, ready_delay=0.05) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        yield server


@pytest.fixture
def unreachable_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
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


@pytest.fixture
def models(wolt_home: Path) -> dict[str, str]:
    """Three registered versions of one regression model that answer differently (the sum of the features
    times 1, 100 and 3); ``champion`` points at version 1."""
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=FEATURES)
    for scale in (1.0, 100.0, 3.0):
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X.head(3)
        )
    wolt_jupyter.registry.mlflow_client().set_registered_model_alias("eta", "champion", "1")
    return {f"v{n}": f"models:/eta/{n}" for n in (1, 2, 3)} | {"champion": "models:/eta@champion"}


@pytest.fixture
def rows() -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(1).normal(size=(200, 3)), columns=FEATURES)


@pytest.fixture
def undeploy_all(wolt_home: Path):
    yield
    from wolt_jupyter import deployments

    for name in deployments._store().names():
        with contextlib.suppress(Exception):
            deployments.undeploy(name)
