"""Metric sources for the monitoring panel: one interface, two implementations.

- :class:`PrometheusSource` asks a Prometheus (``WOLT_PROMETHEUS_URL``) with PromQL over Seldon-compatible
  metric names, so the same panel watches local deployments and Seldon deployments on a cluster.
- :class:`ResponseLogSource` computes the same series from the response log: the embedded default, which
  needs no server at all.

Both return a :class:`MonitorData`; both raise :class:`SourceError` (a one-line :class:`WoltError`) when they
cannot be read. Importing this module imports neither pandas nor SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wolt_jupyter.monitoring.data import MetricSource, MonitorData, SourceError
from wolt_jupyter.monitoring.prometheus import PrometheusSource, label_value
from wolt_jupyter.monitoring.responselog import ResponseLogSource

if TYPE_CHECKING:
    from wolt_jupyter.config import Settings

__all__ = [
    "MetricSource",
    "MonitorData",
    "PrometheusSource",
    "ResponseLogSource",
    "SourceError",
    "label_value",
    "require_deployment",
    "source_for",
]


def source_for(settings: Settings | None = None) -> MetricSource:
    """Prometheus when a URL is configured, else the response log (the configured store or the SQLite
    file of each deployment under the state dir)."""
    if settings is None:
        from wolt_jupyter.config import settings as read_settings

        settings = read_settings()
    if settings.prometheus_url:
        return PrometheusSource(settings.prometheus_url)
    return ResponseLogSource(settings.response_store_url)


def require_deployment(name: str, settings: Settings | None = None) -> bool:
    """True while ``name`` is deployed, False when it was deployed here once and removed (its log stays
    readable); :class:`NotFound` when it never existed, so a typo is an error, not an empty panel."""
    from wolt_jupyter.errors import NotFound
    from wolt_jupyter.revisions import RevisionStore

    if settings is None:
        from wolt_jupyter.config import settings as read_settings

        settings = read_settings()
    store = RevisionStore(settings.home)
    if store.exists(name):
        return True
    if (store.dir(name) / "removed").is_dir():
        return False
    known = ", ".join(store.names()) or "none"
    raise NotFound(f"no deployment named {name!r}; deployments: {known}")
