"""Domain errors: the one tree. Each one is a single readable line: what went wrong and what to do about it.

Every error wolt-jupyter raises on purpose is a :class:`WoltError`, and carries the HTTP status it maps to
(``status``), so the server extension, the runtime and the CLI decide by type, never by matching text::

    WoltError (500)                        raised on purpose; the message says the fix
    ├── ConfigError (500)                  a setting is malformed: the server's own, not the caller's
    ├── InvalidArgument (400), ValueError  the caller asked for something that cannot be done as asked
    │   ├── PolicyError (400)              an update policy field is missing or malformed
    │   └── IncompatibleVariant (400)      a variant does not accept the main variant's inputs
    ├── NotFound (404), LookupError        a run, model, version, alias or deployment does not exist
    ├── DeploymentBusy (409)               another process holds the deployment's lock
    ├── ProtocolError (4xx, per instance)  the V2 runtime refuses a request
    ├── DeployFailed (500)                 a local runtime did not come up (reason + log tail)
    ├── EndpointError (502)                a deployment's endpoint answered with an error, or not at all
    ├── ClusterError (502)                 the Kubernetes API refused (forbidden, conflict, invalid, ...)
    │   └── ClusterUnreachable (503)       the Kubernetes API did not answer
    └── Unavailable (503)                  a store or service we read cannot be reached
        ├── TrackingUnavailable (503), ConnectionError  the MLflow tracking server or store
        ├── ResponseStoreError (503), ConnectionError   the response log's database
        ├── LogFull (503)                               the response log cannot keep a record (full disk)
        └── SourceError (503)                           a metric source (Prometheus, the response log)

They define ``_render_traceback_``, the hook IPython calls to show an exception, so a notebook shows the one
line instead of a traceback through MLflow's internals. Outside IPython they are ordinary exceptions.
This module imports nothing: the runtime, the core and the server extension all use it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ClusterError",
    "ClusterUnreachable",
    "ConfigError",
    "DeployFailed",
    "DeploymentBusy",
    "EndpointError",
    "IncompatibleVariant",
    "InvalidArgument",
    "LogFull",
    "NotFound",
    "PolicyError",
    "ProtocolError",
    "ResponseStoreError",
    "SourceError",
    "TrackingUnavailable",
    "Unavailable",
    "WoltError",
    "http_status",
    "one_line",
]


class WoltError(Exception):
    """Base of every error wolt-jupyter raises on purpose."""

    status: ClassVar[int] = 500  # the HTTP status the error maps to

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ConfigError(WoltError):
    """A setting is malformed (bad value, unreadable config file)."""


class InvalidArgument(WoltError, ValueError):
    """The caller asked for something that cannot be done as asked; the message says the fix."""

    status = 400


class PolicyError(InvalidArgument):
    """A policy field is missing or malformed; the message names the field and what is accepted."""


class IncompatibleVariant(InvalidArgument):
    """A variant or shadow of a deployment cannot take the requests its main variant takes."""


class NotFound(WoltError, LookupError):
    """A run, model, version or alias does not exist."""

    status = 404


class DeploymentBusy(WoltError):
    """Another process is changing the deployment; the message names it."""

    status = 409


class ProtocolError(WoltError):
    """A request the runtime refuses: ``status`` is the HTTP code, the message says what was expected."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # per instance: 400, 404, 413, 422, ...
        self.message = message


class DeployFailed(WoltError):
    """The runtime did not come up; the message carries the reason and the tail of its log."""


class EndpointError(WoltError):
    """The endpoint answered with an error (its ``{"error": ...}`` is the message) or did not answer."""

    status = 502


class ClusterError(WoltError):
    """The cluster refused or could not be reached; the message is one line that says what and where."""

    status = 502


class ClusterUnreachable(ClusterError):
    """The Kubernetes API could not be reached (refused, timed out, unknown host); trying later may work."""

    status = 503


class Unavailable(WoltError):
    """Something the request needs (a store, a metric source) cannot be reached now; trying later may work."""

    status = 503


class TrackingUnavailable(Unavailable, ConnectionError):
    """The MLflow tracking server or store cannot be reached."""


class ResponseStoreError(Unavailable, ConnectionError):
    """The response store cannot be opened or read (server down, bad credentials, corrupt file)."""


class LogFull(Unavailable):
    """The response log cannot keep a record now (its disk is full); ``logging.on_full: refuse`` answers 503."""


class SourceError(Unavailable):
    """A metric source cannot answer (unreachable, timed out, rejected the query); the message says why."""


def http_status(exc: BaseException) -> int:
    """The HTTP status for ``exc``: a domain error's own; 503 for a connection failure; else 500."""
    if isinstance(exc, WoltError):
        return exc.status
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return 503
    return 500


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: how a caught failure is reported."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]
