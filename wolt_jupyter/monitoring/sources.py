"""Metric sources for the monitoring panel: one interface, two implementations.

- :class:`PrometheusSource` asks a Prometheus (``WOLT_PROMETHEUS_URL``) with PromQL over Seldon-compatible
  metric names, so the same panel watches local deployments and Seldon deployments on a cluster.
- :class:`ResponseLogSource` computes the same series from the response log: the embedded default, which
  needs no server at all.

For a local deployment the panel checks Prometheus against the response log
(:mod:`wolt_jupyter.monitoring.crosscheck`) and says when they disagree.

Both return a :class:`MonitorData`; both raise :class:`SourceError` (a one-line :class:`WoltError`) when they
cannot be read. Importing this module imports neither pandas nor SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument, SourceError
from wolt_jupyter.monitoring.data import MetricSource, MonitorData
from wolt_jupyter.monitoring.prometheus import PrometheusSource, label_value
from wolt_jupyter.monitoring.responselog import ResponseLogSource
from wolt_jupyter.untrusted import shown_value

if TYPE_CHECKING:
    from wolt_jupyter.config import Settings

__all__ = [
    "MetricSource",
    "MonitorData",
    "PrometheusSource",
    "ResponseLogSource",
    "SourceError",
    "deployment_state",
    "label_value",
    "parse_duration",
    "reading_revisions",
    "require_known",
    "source_for",
]


def source_for(settings: Settings | None = None) -> MetricSource:
    """Prometheus when a URL is configured, else the response log (each deployment's store, the one its
    record names: :func:`~wolt_jupyter.responses.store.store_url`)."""
    if settings is None:
        from wolt_jupyter.config import settings as read_settings

        settings = read_settings()
    if settings.prometheus_url:
        return PrometheusSource(settings.prometheus_url)
    return ResponseLogSource()


def reading_revisions(source: MetricSource, name: str, revision: Any) -> MetricSource:
    """``source`` set to read ``revision`` (as ``deployments.revisions_for`` takes it), checked now: a wrong
    number is an error, not a message at every refresh. The notebook panel and the lab view both read so.
    Only the response log knows revisions: Prometheus's series carry none."""
    from wolt_jupyter.deployments import revisions_for
    from wolt_jupyter.revisions import SINCE_DEPLOY

    revisions_for(name, revision)
    if isinstance(source, ResponseLogSource):
        if source.revision is None:  # a source made without a choice takes the caller's
            source.revision = revision
    elif not (isinstance(revision, str) and revision == SINCE_DEPLOY):
        raise InvalidArgument(
            f"revision={revision!r} needs the response log: {source.name}'s series carry no revision "
            "(unset WOLT_PROMETHEUS_URL to read the log)"
        )
    return source


def parse_duration(value: Any, name: str) -> float:
    """Seconds from ``"15s"``, ``"30m"``, ``"1h"``… or a number of seconds."""
    from wolt_jupyter.units import positive_seconds

    seconds = positive_seconds(value)
    if seconds is not None:
        return seconds
    raise InvalidArgument(
        f'{name}={shown_value(value)} is not a duration; use e.g. "15s", "30m", "1h", "24h" or seconds'
    )


def deployment_state(name: str, settings: Settings | None = None) -> str:
    """``"live"`` while ``name`` is deployed from this machine, ``"removed"`` once undeployed (its log stays
    readable), ``"unknown"`` when it was never deployed here (it may still run elsewhere, e.g. on a cluster
    that Prometheus watches)."""
    from wolt_jupyter.revisions import RevisionStore

    if settings is None:
        from wolt_jupyter.config import settings as read_settings

        settings = read_settings()
    store = RevisionStore(settings.home)
    if store.exists(name):
        return "live"
    return "removed" if (store.dir(name) / "removed").is_dir() else "unknown"


def require_known(name: str, state: str, data: MonitorData | None) -> None:
    """Raise :class:`NotFound` for a deployment never made here that the source knows nothing about either:
    a typo is an error, not an empty panel that polls forever. ``data`` is None when the source failed (then
    nobody can tell, and the panel shows the source's message)."""
    from wolt_jupyter.errors import NotFound

    if state == "unknown" and data is not None and data.empty:
        from wolt_jupyter.config import settings
        from wolt_jupyter.revisions import RevisionStore

        known = ", ".join(RevisionStore(settings().home).names()) or "none"
        raise NotFound(f"no deployment named {name!r} (and no metrics for it); deployments: {known}")
