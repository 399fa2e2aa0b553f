"""pytest-jupyter's server fixtures (``jp_fetch``, an in-process Jupyter server) for this folder only: its hooks
run coroutine tests, and stay out of the rest of the suite by living in this conftest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403

FEATURES = ["f0", "f1", "f2"]


@pytest.fixture
def jp_server_config() -> dict:
    return {"ServerApp": {"jpserver_extensions": {"wolt_jupyter": True}}}


@pytest.fixture
def registered(wolt_home: Path) -> dict[str, str]:
    """Two registered regression models that answer differently, ``champion`` on version 1."""
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=FEATURES)
    for scale in (1.0, 100.0):
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X.head(3)
        )
    wolt_jupyter.registry.client().set_registered_model_alias("eta", "champion", "1")
    return {"v1": "models:/eta/1", "v2": "models:/eta/2"}
