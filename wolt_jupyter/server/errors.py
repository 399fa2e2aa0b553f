"""The one mapping from domain errors to HTTP answers of the REST API.

Every handler goes through :func:`http_status`, so the lab extension sees the same status for the same kind of
failure everywhere: the caller's mistake is 400, something that does not exist 404, a store or cluster that
cannot be reached 503, a feature this server does not have 501.
"""

from __future__ import annotations

from wolt_jupyter.errors import InvalidArgument, NotFound, TrackingUnavailable, WoltError


class NotAvailable(WoltError):
    """The server knows the route but not the feature behind it yet (answered with 501)."""


def http_status(exc: BaseException) -> int:
    """The HTTP status for ``exc``; 500 for anything not raised on purpose."""
    from wolt_jupyter.monitoring.data import SourceError

    if isinstance(exc, InvalidArgument):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, NotAvailable):
        return 501
    if isinstance(exc, (TrackingUnavailable, SourceError, ConnectionError, TimeoutError)):
        return 503
    return 500  # includes ConfigError: the server's own settings are wrong, not the caller's request


def http_message(exc: BaseException) -> str:
    """One readable line: a domain error's own message, otherwise the exception's type and text."""
    if isinstance(exc, WoltError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
