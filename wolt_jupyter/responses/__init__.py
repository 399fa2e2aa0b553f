"""The response log: every prediction the serving runtime makes, for A/B analysis in a notebook.

The serving runtime builds a :class:`ResponseRecord` per request and variant and hands it to a
:class:`ResponseWriter`, whose background thread writes each batch as one compact Parquet chunk into SQLite
(default: one file per deployment under the state dir) or PostgreSQL, and whose maintenance thread enforces
retention (:mod:`.retention`) and merges small chunks. :func:`responses` reads the log back as a DataFrame
with feedback from :func:`add_feedback` joined by request id, reading only the chunks and columns asked
for; :func:`export` writes it to a Parquet file; :func:`.summary.summary` says how big it is and what was removed.

Importing this package imports neither pandas nor SQLAlchemy.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from wolt_jupyter.responses.feedback import add_feedback
from wolt_jupyter.responses.query import export, parse_time, responses
from wolt_jupyter.responses.record import ResponseRecord, sampled_in
from wolt_jupyter.responses.retention import Retention
from wolt_jupyter.responses.store import ResponseStoreError, default_store_url
from wolt_jupyter.responses.summary import LogSummary
from wolt_jupyter.responses.writer import ResponseWriter

__all__ = [
    "LogSummary",
    "ResponseRecord",
    "ResponseStoreError",
    "ResponseWriter",
    "Retention",
    "add_feedback",
    "default_store_url",
    "export",
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
