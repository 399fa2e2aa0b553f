"""Prometheus checked against the response log: the panel says when the two disagree instead of showing a
silent zero.

Both count the same live requests of a local deployment that logs every response: Prometheus from the
runtime's counters as scraped, the response log row by row. They may differ by what a scrape has not seen
yet (the requests of the last scrape interval, ``increase()``'s extrapolation at the window's edges) and a
little more (10 %); beyond that one of them is wrong (a target Prometheus does not scrape, scrapes missed,
log records dropped) and the panel says so, with both counts.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from wolt_jupyter.monitoring.data import MetricSource, MonitorData

if TYPE_CHECKING:
    from wolt_jupyter.config import Settings

log = logging.getLogger(__name__)

RELATIVE_SLACK = 0.10  # what increase()'s extrapolation may add or take, beyond the edge requests


def reference_for(name: str, source: MetricSource, settings: Settings | None = None) -> MetricSource | None:
    """The response log to check ``source`` against: only when ``source`` is Prometheus and ``name`` is a
    deployment made here whose spec logs every live response (else the log is a sample and cannot be a
    reference) to a store this machine reads (a local deployment, or a cluster deployment whose record names
    its shared store). None otherwise."""
    from wolt_jupyter.monitoring.prometheus import PrometheusSource
    from wolt_jupyter.monitoring.responselog import ResponseLogSource
    from wolt_jupyter.revisions import RevisionStore

    if not isinstance(source, PrometheusSource):
        return None
    if settings is None:
        from wolt_jupyter.config import settings as read_settings

        settings = read_settings()
    store = RevisionStore(settings.home)
    if not store.exists(name):
        return None
    try:
        spec, target = store.spec(name), store.record(name).target
    except Exception:  # an unreadable record: no check, the panel still shows Prometheus
        log.warning("cannot read the spec of %s to check Prometheus against its response log", name)
        return None
    if not spec.logging.responses or float(spec.logging.sample) < 1.0:
        return None
    if target != "local" and not store.response_store(name):
        return None  # recorded before the record named its store: its pods logged to their own files
    return ResponseLogSource()


def live_counts(data: MonitorData) -> dict[str, float]:
    """Requests per live variant over the window (NaN counted as 0)."""
    s = data.summary
    if s.empty:
        return {}
    live = s[~s["shadow"].astype(bool)]["requests"]
    return {str(v): float(n) if math.isfinite(float(n)) else 0.0 for v, n in live.items()}


def edge_counts(reference: MonitorData, scrape_s: float) -> dict[str, float]:
    """Requests per live variant logged within a scrape interval (plus a step) of either end of the window:
    the ones a scrape may not have seen yet, or ``increase()`` may extrapolate over."""
    import numpy as np

    req = reference.requests
    if req.empty:
        return {}
    t = np.asarray([ts.timestamp() for ts in req.index], dtype="float64")
    reach = scrape_s + reference.step
    near = (t + reference.step > reference.until - reach) | (t < reference.since + reach)
    return {str(c): float(np.nansum(req[c].to_numpy()[near]) * reference.step) for c in req.columns}


def disagreement(data: MonitorData, reference: MonitorData, scrape_s: float) -> str | None:
    """A message when ``data`` (Prometheus) and ``reference`` (the response log) count the live variants'
    requests more apart than a scrape's worth; None when they agree."""
    got, logged = live_counts(data), live_counts(reference)
    edges = edge_counts(reference, scrape_s)
    names = sorted(set(got) | set(logged))
    off = [
        v
        for v in names
        if abs(got.get(v, 0.0) - logged.get(v, 0.0))
        > RELATIVE_SLACK * max(got.get(v, 0.0), logged.get(v, 0.0)) + edges.get(v, 0.0) + 1
    ]
    if not off:
        return None

    def counts(d: dict[str, float]) -> str:
        return ", ".join(f"{v} {d.get(v, 0.0):.0f}" for v in names)

    if sum(got.values()) == 0:
        why = (
            "Prometheus has not scraped this deployment's traffic: check that it scrapes the runtime (local "
            "deployments are listed in <home>/prometheus/targets.json) and wait a scrape"
        )
    else:
        why = (
            "Prometheus may have missed scrapes (the runtime restarted, or was not scraped for a while), or "
            "the response log dropped records (see its dropped/s)"
        )
    return (
        f"{data.source} and the {reference.source} disagree on {data.deployment!r} in this window: "
        f"Prometheus counts {counts(got)}; the response log {counts(logged)} (more apart than a scrape of "
        f"{scrape_s:g} s explains). {why}."
    )


def checked_snapshot(
    source: MetricSource,
    name: str,
    *,
    since: float,
    until: float,
    step: float,
    reference: MetricSource | None = None,
) -> MonitorData:
    """``source.snapshot(...)``; with a ``reference`` (see :func:`reference_for`) its counts are checked and a
    disagreement becomes the snapshot's ``message`` (replacing "no requests", which would be a silent zero).
    A reference that cannot be read leaves the snapshot as it is."""
    data = source.snapshot(name, since=since, until=until, step=step)
    if reference is None:
        return data
    try:
        ref = reference.snapshot(name, since=since, until=until, step=step)
    except Exception as exc:  # the check is extra: never let it take the panel down
        log.warning("cannot read the %s to check %s: %s", reference.name, source.name, exc)
        return data
    data.checked_against = ref.source
    scrape_interval = getattr(source, "scrape_interval", None)
    scrape_s = float(scrape_interval(name)) if callable(scrape_interval) else 15.0
    note = disagreement(data, ref, scrape_s)
    if note is not None:
        data.message = note
        data.disagrees = True
    return data
