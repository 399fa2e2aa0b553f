"""The tolerance of the Prometheus-vs-response-log check: a scrape's worth of requests at the window's edges
and 10 % are not a disagreement; more is, and the message carries both counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wolt_jupyter.monitoring.crosscheck import disagreement, edge_counts
from wolt_jupyter.monitoring.data import SUMMARY_COLUMNS, MonitorData, time_index

SINCE, STEP, BUCKETS = 1_000_000.0, 1.0, 60


def _data(
    source: str, counts: dict[str, float], per_second: dict[str, np.ndarray] | None = None
) -> MonitorData:
    index = time_index(SINCE + STEP * np.arange(BUCKETS))
    data = MonitorData.blank("eta", SINCE, SINCE + BUCKETS * STEP, STEP, source, None)
    rows = {
        v: {c: np.nan for c in SUMMARY_COLUMNS} | {"shadow": False, "requests": n} for v, n in counts.items()
    }
    data.summary = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    data.requests = pd.DataFrame(per_second or {}, index=index, dtype="float64")
    return data


def _log(counts_at: dict[str, dict[int, int]]) -> MonitorData:
    """A response-log snapshot with ``counts_at[variant][bucket]`` requests in those one-second buckets."""
    per_second = {}
    for v, at in counts_at.items():
        arr = np.zeros(BUCKETS)
        for b, n in at.items():
            arr[b] = n / STEP
        per_second[v] = arr
    return _data("response log x", {v: sum(at.values()) for v, at in counts_at.items()}, per_second)


def test_requests_of_the_last_scrape_are_not_a_disagreement() -> None:
    log = _log({"main": {10: 100, 58: 50}})  # 50 requests in the last 2 s: not scraped yet
    assert edge_counts(log, scrape_s=1.0)["main"] == 50
    assert disagreement(_data("Prometheus p", {"main": 100}), log, scrape_s=1.0) is None
    assert disagreement(_data("Prometheus p", {"main": 160}), log, scrape_s=1.0) is None  # within 10 %


def test_more_than_a_scrape_apart_is_said_with_both_counts() -> None:
    log = _log({"main": {10: 300}, "challenger": {20: 100}})
    note = disagreement(_data("Prometheus p", {"main": 300, "challenger": 40}), log, scrape_s=1.0)
    assert note is not None and "Prometheus counts challenger 40, main 300" in note
    assert "the response log challenger 100, main 300" in note and "missed scrapes" in note
    nothing = disagreement(_data("Prometheus p", {}), log, scrape_s=1.0)
    assert nothing is not None and "has not scraped this deployment" in nothing
    # a long scrape interval covers the whole window: then nobody can tell
    assert disagreement(_data("Prometheus p", {}), log, scrape_s=60.0) is None
