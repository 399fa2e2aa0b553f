"""Fixtures for the Kubernetes tests: a fresh test API server per test, and clients pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .apiserver import TestApiServer


@pytest.fixture
def apiserver() -> Iterator[TestApiServer]:
    """A test API server on 127.0.0.1 with every CRD group served and the controller off."""
    with TestApiServer() as server:
        yield server


@pytest.fixture
def api_client(apiserver: TestApiServer) -> Iterator[Any]:
    """An official `kubernetes` ApiClient talking real HTTP to `apiserver`."""
    client = apiserver.api_client()
    yield client
    client.close()
