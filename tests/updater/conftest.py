"""Fixtures of the update service's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP server that keeps what it receives; answers with its ``status``."""
    server = WebhookReceiver()
    try:
        yield server
    finally:
        server.close()
