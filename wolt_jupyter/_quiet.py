"""Routine output of MLflow and libraries kept inside the card, not in red boxes that look like errors.

MLflow announces its work on stderr ("Creating initial MLflow database tables…", "Registered model 'm' already
exists…", "Created version '2'…") and libraries raise FutureWarnings about their own internals; a notebook
shows each as a pink stderr box. Inside :func:`quiet` those lines go to a list the card shows as a collapsed
"log" section. Warnings that concern the user's work (a ``ConvergenceWarning``, a ``UserWarning`` from the
cell) are still shown — once each, after the block — and also kept in the log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

ROUTINE_LOGGERS = ("mlflow", "alembic")
ROUTINE_CATEGORIES = (FutureWarning, DeprecationWarning, PendingDeprecationWarning, ImportWarning)
_MLFLOW_DIR = None


def _mlflow_dir() -> str | None:
    global _MLFLOW_DIR
    if _MLFLOW_DIR is None:
        import importlib.util

        spec = importlib.util.find_spec("mlflow")
        locations = spec.submodule_search_locations if spec else None
        _MLFLOW_DIR = str(Path(next(iter(locations)))) if locations else ""
    return _MLFLOW_DIR or None


def routine(w: warnings.WarningMessage) -> bool:
    """A library's notice about its own internals (deprecations, MLflow's hints), not about the user's work."""
    if issubclass(w.category, ROUTINE_CATEGORIES):
        return True
    root = _mlflow_dir()
    return bool(root and str(w.filename).startswith(root))


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line must never break the user's cell
            self.handleError(record)


class _LineSink(io.TextIOBase):
    """A stderr stand-in that keeps complete lines."""

    def __init__(self, lines: list[str]) -> None:
        self.lines, self._partial = lines, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        self.lines.extend(line for line in done if line.strip())
        return len(text)

    def close_partial(self) -> None:
        if self._partial.strip():
            self.lines.append(self._partial)
        self._partial = ""


@contextlib.contextmanager
def stderr_into(lines: list[str]) -> Iterator[None]:
    """``sys.stderr`` into ``lines`` (MLflow prints "Created version …" there): for phases that run no user code."""
    sink = _LineSink(lines)
    try:
        with contextlib.redirect_stderr(sink):
            yield
    finally:
        sink.close_partial()


@contextlib.contextmanager
def quiet(lines: list[str]) -> Iterator[None]:
    """MLflow's and alembic's logging and routine warnings into ``lines`` for the block; other warnings are
    shown once each when it ends. The user's own prints and stderr are left alone."""
    import mlflow  # noqa: F401 - its import configures its loggers: done first, so they are restored as it left them

    handler = _ListHandler(lines)
    saved = []
    for name in ROUTINE_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]  # levels stay as MLflow set them (alembic: WARNING)
        logger.propagate = False
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught_here:
            warnings.simplefilter("default")  # each warning once per place: a loop of them stays one line
            try:
                yield
            finally:
                caught = list(caught_here)
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        _sort_warnings(caught, lines)


def _sort_warnings(caught: list[warnings.WarningMessage], lines: list[str]) -> None:
    seen: set[tuple[type, str]] = set()
    for w in caught:
        key = (w.category, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{w.category.__name__}: {w.message} ({Path(str(w.filename)).name}:{w.lineno})")
        if not routine(w):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, file=sys.stderr)
