"""Monitoring fixtures: a state dir that lives for a whole test module, and a real Prometheus scraping it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ISOLATED_ENV
from prometheus_server import prometheus_server


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh state dir shared by one module's tests (a deployment is too slow to make per test)."""
    home = tmp_path_factory.mktemp("monitoring") / "wolt-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WOLT_JUPYTER_HOME", str(home))
        for name in ISOLATED_ENV:
            mp.delenv(name, raising=False)
        yield home


@pytest.fixture(scope="module")
def prometheus(module_home: Path) -> Iterator[str]:
    """Debian's prometheus on 127.0.0.1, scraping the module's local deployments every second."""
    with prometheus_server(module_home) as url:
        yield url
