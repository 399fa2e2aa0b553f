"""The response log: every prediction the serving runtime makes, for A/B analysis in a notebook.

The serving runtime builds a :class:`ResponseRecord` per request and variant and hands it to a
:class:`ResponseWriter`, whose background thread inserts batches into SQLite (default: one file per
deployment under the state dir) or PostgreSQL. :func:`responses` reads the log back as a DataFrame with
feedback from :func:`add_feedback` joined by request id.

Importing this package imports neither pandas nor SQLAlchemy.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from wolt_jupyter.responses.feedback import add_feedback
from wolt_jupyter.responses.query import parse_time, responses
from wolt_jupyter.responses.record import ResponseRecord, sampled_in
from wolt_jupyter.responses.store import ResponseStoreError, default_store_url
from wolt_jupyter.responses.writer import ResponseWriter

__all__ = [
    "ResponseRecord",
    "ResponseStoreError",
    "ResponseWriter",
    "add_feedback",
    "default_store_url",
    "parse_time",
    "responses",
    "sampled_in",
]


class _CallableModule(types.ModuleType):
    """``wolt_jupyter.responses(...)`` reads the log, and ``wolt_jupyter.responses.ResponseWriter`` is still
    this package: the documented reader is the package itself called."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from wolt_jupyter.deployments import responses as read  # the one rule: flush a running runtime first

        return read(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
