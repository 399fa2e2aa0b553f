"""The REST API's error answers: status and message, both taken from the error itself.

Every handler goes through :func:`http_status`, so the lab extension sees the same status for the same kind of
failure everywhere. The status is the one each domain error declares in the tree of
:mod:`wolt_jupyter.errors` (the caller's mistake 400, something that does not exist 404, a busy deployment
409, a cluster or endpoint that refused 502, a store that cannot be reached 503); anything not raised on
purpose is 500.
"""

from __future__ import annotations

from wolt_jupyter.errors import WoltError
from wolt_jupyter.errors import http_status as http_status  # re-exported: the handlers' one mapping


def http_message(exc: BaseException) -> str:
    """One readable line: a domain error's own message, otherwise the exception's type and text."""
    if isinstance(exc, WoltError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
