"""Live windows read from a real response log (SQLite, written by the ResponseWriter), fed to the decision."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from wolt_jupyter.responses import ResponseRecord, ResponseWriter, add_feedback, default_store_url
from wolt_jupyter.updater.decide import Observations, RolloutState, decide
from wolt_jupyter.updater.observe import observe
from wolt_jupyter.updater.policy import parse


def record(rid, t, variant, shadow, x, out, status=200, latency=5.0):
    error = None if status == 200 else "boom"
    outputs = {"predict": out} if status == 200 else {}
    return ResponseRecord(
        rid, t, "eta", variant, "eta", "1", shadow, {"x": x}, outputs, latency, status, error
    )


def test_canary_window_counts_requests_errors_latency_and_labels(wolt_home) -> None:
    url = default_store_url("eta", wolt_home)
    rng = np.random.default_rng(0)
    start = time.time() - 100
    truth = []
    with ResponseWriter(url) as w:
        w.submit(record("old", start - 50, "challenger", False, [1.0], [1.0], status=500))  # before the step
        for i in range(400):
            rid = uuid.uuid4().hex
            canary = i % 10 == 0  # 10% to the challenger
            rows = 2 if i % 3 == 0 else 1
            x = rng.normal(size=rows).tolist()
            y = [2 * v for v in x]
            pred = [v + (0.5 if canary else 0.1) for v in y]
            status = 500 if canary and i % 50 == 0 else 200
            w.submit(
                record(
                    rid,
                    start + i * 0.1,
                    "challenger" if canary else "main",
                    False,
                    x,
                    pred,
                    status,
                    latency=float(i % 20),
                )
            )
            truth.append({"id": rid, "ground_truth": y})
    add_feedback(url, truth)
    window = observe("eta", start, candidate="challenger", champion="main", shadow=False,
                     live_metric=parse({"deployment": "eta", "watch": {"model": "eta"}, "guards": {"live_metric": {"name": "mae", "min_effect": 0.1}}}).guards.live_metric)  # fmt: skip
    cand, champ = window.candidate, window.champion
    assert cand.requests == 40 and champ.requests == 360  # requests, not rows; "old" is outside the window
    assert cand.errors == 8 and champ.errors == 0
    lat = [float(i % 20) for i in range(400) if i % 10 == 0]
    assert cand.p99_ms == pytest.approx(np.percentile(lat, 99))
    assert (
        cand.metric is not None
        and cand.metric.mean == pytest.approx(0.5)
        and champ.metric.mean == pytest.approx(0.1)
    )
    assert cand.metric.n == sum(
        2 if i % 3 == 0 else 1 for i in range(0, 400, 10) if i % 50
    )  # failed ones have no output


def test_shadow_window_pairs_the_same_requests_and_feeds_the_decision(wolt_home) -> None:
    url = default_store_url("eta", wolt_home)
    start = time.time() - 100
    with ResponseWriter(url) as w:
        for i in range(300):
            rid = uuid.uuid4().hex
            w.submit(record(rid, start + i * 0.1, "main", False, [float(i)], [i % 2]))
            if i < 250:  # the shadow was attached a little later than the first requests
                answer = [i % 2] if i % 5 else [1 - i % 2]  # disagrees on every 5th
                w.submit(record(rid, start + i * 0.1 + 0.01, "shadow", True, [float(i)], answer))
    window = observe("eta", start, candidate="shadow", champion="main", shadow=True)
    assert window.candidate.requests == 250 and window.champion.requests == 250  # the same requests only
    assert window.agreement == (200, 250)
    policy = parse(
        {
            "deployment": "eta",
            "watch": {"model": "eta"},
            "rollout": {"shadow": {"requests": 200}},
            "guards": {"min_agreement": 0.9, "min_sample": 100},
        }
    )
    d = decide(policy, RolloutState("2", "1", 0, start), Observations(time.time(), live=window))
    assert d.action == "rollback" and "shadow agreement 0.8" in d.reason


def test_each_arm_counts_its_requests_over_its_own_p99_limit() -> None:
    """The sound p99 limits judge counts of slow requests: the candidate's against ``max_p99_ms``, the
    champion's against ``service.champion_max_p99_ms``; without a limit nothing is counted."""
    import pandas as pd

    from wolt_jupyter.updater.observe import window_from_log

    rows = [(f"c{i}", "candidate", 5.0 if i % 4 else 80.0) for i in range(40)]
    rows += [(f"m{i}", "main", 5.0 if i % 10 else 30.0) for i in range(100)]
    log = pd.DataFrame(
        [{"id": i, "variant": v, "shadow": False, "status": 200, "latency_ms": ms} for i, v, ms in rows]
    )
    w = window_from_log(log, candidate="candidate", champion="main", shadow=False, slow_ms=(50.0, 20.0))
    assert (w.candidate.slow, w.champion.slow) == (10, 10)
    w = window_from_log(log, candidate="candidate", champion="main", shadow=False)
    assert (w.candidate.slow, w.champion.slow) == (None, None)


def test_the_champions_baseline_is_its_p99_before_the_rollout_and_counts_what_is_slower(wolt_home) -> None:
    """``service.champion_max_p99_ratio``: the champion's p99 in the window before the rollout began is read
    from the log (not its rows since), and the step's champion requests over ratio x that are counted."""
    from wolt_jupyter.updater.observe import champion_baseline

    url = default_store_url("eta", wolt_home)
    started = time.time() - 60
    with ResponseWriter(url) as w:
        for i in range(200):  # before: 2-11 ms, one failure that does not count
            w.submit(record(f"b{i}", started - 100 + i * 0.4, "main", False, [1.0], [1.0], latency=2.0 + i % 10))
        w.submit(record("bad", started - 5, "main", False, [1.0], [1.0], status=500, latency=900.0))
        w.submit(record("long-ago", started - 900, "main", False, [1.0], [1.0], latency=500.0))
        for i in range(100):  # during: every fifth answer at 40 ms
            w.submit(record(f"d{i}", started + i * 0.3, "main", False, [1.0], [1.0], latency=40.0 if i % 5 == 0 else 3.0))
            w.submit(record(f"c{i}", started + i * 0.3, "challenger", False, [1.0], [1.0], latency=3.0))
    base = champion_baseline("eta", "main", started, 600.0, 10)
    assert base is not None and base[1] == 200 and base[0] == pytest.approx(11.0, abs=0.1)
    assert champion_baseline("eta", "main", started, 600.0, 500) is None  # too few requests: no baseline
    window = observe("eta", started, candidate="challenger", champion="main", shadow=False,
                     champion_relative_ms=base[0] * 1.5)  # fmt: skip
    assert window.champion.requests == 100 and window.champion.slow_vs_baseline == 20
