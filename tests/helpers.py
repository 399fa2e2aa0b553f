"""Helpers shared by all test folders (``tests`` is on ``sys.path`` through pytest's ``pythonpath``)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from wolt_jupyter.backends.local import free_port  # noqa: F401  # re-exported for the tests

# settings a developer's own environment might carry into the tests
ISOLATED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_TOKEN",
    "WOLT_DEFAULT_TARGET",
    "WOLT_PROMETHEUS_URL",
    "WOLT_RESPONSE_STORE_URL",
    "WOLT_DEFAULT_EXPERIMENT",
    "WOLT_NAMESPACE",
    "KUBECONFIG",
    "WOLT_KUBE_CONTEXT",
    "WOLT_RUNTIME_IMAGE",
    "WOLT_CLUSTER_TRACKING_URI",
    "WOLT_POD_MONITOR",
    "WOLT_SERVICE_ACCOUNT",
    "WOLT_REQUEST_LOGGER_URL",
    "WOLT_UNREACHABLE_ARTIFACTS",
)


def stop_server(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a server started in its own session (SIGTERM to its group, SIGKILL after ``timeout``) and reap it."""
    from wolt_jupyter.serving.supervisor import stop_process_group

    stop_process_group(proc.pid, timeout)
    proc.wait(5)


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"{url} did not become ready in {timeout}s\n{tail}")


def unique(prefix: str) -> str:
    """A name no other test uses (the MLflow server is shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def shown(capsys: pytest.CaptureFixture[str]) -> str:
    """What a notebook user saw: IPython prints usage errors to stderr and tracebacks to stdout."""
    captured = capsys.readouterr()
    return captured.out + captured.err


FEATURES = ["f0", "f1", "f2"]


def register_eta_models() -> dict[str, str]:
    """Two registered regression models named ``eta`` that answer differently (v2 = 100 × v1), ``champion``
    on version 1, in whatever store the environment points at."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=FEATURES)
    for scale in (1.0, 100.0):
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X.head(3)
        )
    wolt_jupyter.registry.mlflow_client().set_registered_model_alias("eta", "champion", "1")
    return {"champion": "models:/eta@champion", "v1": "models:/eta/1", "v2": "models:/eta/2"}
