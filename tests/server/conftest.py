"""pytest-jupyter's server fixtures (``jp_fetch``, an in-process Jupyter server) for this folder only: its hooks
run coroutine tests, and stay out of the rest of the suite by living in this conftest."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403

from helpers import register_eta_models


@pytest.fixture
def jp_server_config() -> dict:
    return {"ServerApp": {"jpserver_extensions": {"wolt_jupyter": True}}}


@pytest.fixture
def registered(wolt_home: Path) -> dict[str, str]:
    return register_eta_models()
