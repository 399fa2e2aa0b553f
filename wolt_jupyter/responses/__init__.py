"""The response log: every prediction the serving runtime makes, for A/B analysis in a notebook.

The serving runtime builds a :class:`ResponseRecord` per request and variant and hands it to a
:class:`ResponseWriter`, whose background thread writes each batch as one compact Parquet chunk into SQLite
(default: one file per deployment under the state dir) or PostgreSQL, and whose maintenance thread enforces
retention (:mod:`.retention`) and merges small chunks. :func:`read_frame` reads a store back as a DataFrame
with feedback from :func:`add_feedback` joined by request id, reading only the chunks and columns asked
for; :func:`export` writes it to a Parquet file; :func:`.summary.summary` says how big it is and what was
removed. A notebook reads a deployment's log with :func:`wolt_jupyter.read_responses`, which adds the
deployment's rules (revisions since the last deploy, a running runtime flushed first) to :func:`read_frame`.

Importing this package imports neither pandas nor SQLAlchemy.
"""

from __future__ import annotations

from wolt_jupyter.responses.feedback import add_feedback
from wolt_jupyter.responses.query import export, parse_time, read_frame
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
    "read_frame",
    "sampled_in",
]
