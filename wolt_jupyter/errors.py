"""Domain errors. Each one is a single readable line: what went wrong and what to do about it.

They define ``_render_traceback_``, the hook IPython calls to show an exception, so a notebook shows the one
line instead of a traceback through MLflow's internals. Outside IPython they are ordinary exceptions.
"""

from __future__ import annotations


class WoltError(Exception):
    """Base of every error wolt-jupyter raises on purpose."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ConfigError(WoltError):
    """A setting is malformed (bad value, unreadable config file)."""


class InvalidArgument(WoltError, ValueError):
    """The caller asked for something that cannot be done as asked; the message says the fix."""


class NotFound(WoltError, LookupError):
    """A run, model, version or alias does not exist."""


class TrackingUnavailable(WoltError, ConnectionError):
    """The MLflow tracking server or store cannot be reached."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: how a caught failure is reported."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


class IncompatibleVariant(InvalidArgument):
    """A variant or shadow of a deployment cannot take the requests its main variant takes."""
