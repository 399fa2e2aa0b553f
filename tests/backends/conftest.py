"""Fixtures of the deploy tests: registered models that answer differently, rows, and a clean-up."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backends_support import FEATURES


@pytest.fixture
def models(wolt_home: Path) -> dict[str, str]:
    """Two registered regression models that answer differently, ``champion`` on version 1."""
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(50, 3)), columns=FEATURES)
    for scale in (1.0, 100.0):
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X.head(3)
        )
    wolt_jupyter.registry.client().set_registered_model_alias("eta", "champion", "1")
    return {"champion": "models:/eta@champion", "v1": "models:/eta/1", "v2": "models:/eta/2"}


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
