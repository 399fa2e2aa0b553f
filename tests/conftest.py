"""Shared fixtures: a fresh state dir per test, a real `mlflow server`, a real IPython shell, registered models
that answer differently, rows for them, the clean-up of local deployments, and the test Kubernetes API server
(kube/) with an official client pointing at it."""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FEATURES, ISOLATED_ENV, free_port, register_eta_models, running_mlflow_server

TIERS = ("unit", "integration", "e2e", "browser", "cluster")
# a test that uses one of these talks to a real server or process: `integration` at least
SERVER_FIXTURES = frozenset({
    "mlflow_server", "models", "undeploy_all", "served", "registered", "deployed",
    "pg_server_url", "pg_url", "private_postgres", "prometheus", "apiserver", "api_client", "jp_fetch",
    "runtime_factory", "runtimes", "model_store", "shared_store", "small_home", "delivering_server",
})  # fmt: skip


def _tier(item: pytest.Item) -> str:
    parts = item.path.parts
    if "browser" in parts:
        return "browser"
    if "cluster" in parts:
        return "cluster"
    if item.path.name.startswith("test_notebook"):
        return "e2e"
    params = getattr(getattr(item, "callspec", None), "params", {})
    if (
        SERVER_FIXTURES & set(item.fixturenames)
        or params.get("store") == "server"
        or "postgresql" in params.values()
    ):
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets one tier: its own marker if it has one (a slow or process-starting test the rules
    below cannot see), else by folder, notebook, or the fixtures it uses."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(_tier(item))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a SQL backend and proxied artifacts."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def _reset_session_state() -> None:
    import mlflow

    from wolt_jupyter import tracking

    while mlflow.active_run() is not None:
        mlflow.end_run()
    tracking.forget_session()
    # MLflow's fluent API keeps the last experiment set in this process: a test on a fresh store would start
    # its runs under another store's experiment id ("No Experiment with id=5 exists"). As a fresh kernel:
    import mlflow.tracking.fluent

    mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture
def wolt_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty state dir; no tracking URI from outside, so the embedded store is used."""
    home = tmp_path / "wolt-home"
    monkeypatch.setenv("WOLT_JUPYTER_HOME", str(home))
    for name in ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    _reset_session_state()
    return home


@pytest.fixture(params=["embedded", "server"])
def store(request: pytest.FixtureRequest, wolt_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using it runs twice: on the embedded SQLite store and against a real MLflow server."""
    if request.param == "server":
        uri = request.getfixturevalue("mlflow_server")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        return uri
    return f"sqlite:///{wolt_home / 'mlflow.db'}"


@pytest.fixture
def shell(wolt_home: Path) -> Iterator[object]:
    """A real IPython InteractiveShell with the extension loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "wolt_jupyter")
    yield ip
    _reset_session_state()
    # IPython registers a reset per shell to run at interpreter exit, each with a full gc.collect: dozens of
    # shells over a large heap kept pytest alive for many minutes after the last test. Nothing to keep here.
    atexit.unregister(ip.atexit_operations)
    if getattr(ip.history_manager, "save_thread", None) is not None:
        ip.history_manager.save_thread.stop()
    InteractiveShell.clear_instance()


@pytest.fixture
def closed_port_uri() -> str:
    """An http URI nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def models(wolt_home: Path) -> dict[str, str]:
    """Three registered versions of one regression model that answer differently (the sum of the features
    times 1, 100 and 3); ``champion`` points at version 1."""
    return register_eta_models(scales=(1.0, 100.0, 3.0))


@pytest.fixture
def rows():
    """200 rows of the models' three features."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame(np.random.default_rng(1).normal(size=(200, 3)), columns=FEATURES)


@pytest.fixture
def undeploy_all(wolt_home: Path):
    """Undeploys every deployment the test left in its state dir."""
    yield
    from wolt_jupyter import deployments

    for name in deployments.revision_store().names():
        with contextlib.suppress(Exception):
            deployments.undeploy(name)


@pytest.fixture
def apiserver() -> Iterator[Any]:
    """A test API server on 127.0.0.1 with every CRD group served and the controller off."""
    from kube.apiserver import TestApiServer

    with TestApiServer() as server:
        yield server


@pytest.fixture
def api_client(apiserver: Any) -> Iterator[Any]:
    """An official `kubernetes` ApiClient talking real HTTP to `apiserver`."""
    client = apiserver.api_client()
    yield client
    client.close()
