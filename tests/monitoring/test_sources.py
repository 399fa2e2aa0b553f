"""Both metric sources against a real local deployment (A/B 70/30 and a shadow, real registered models) and a
real Prometheus scraping it: the panel's numbers must match the traffic the test sent."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from wolt_jupyter.monitoring.prometheus import Query
from wolt_jupyter.monitoring.sources import (
    MonitorData,
    PrometheusSource,
    ResponseLogSource,
    SourceError,
    label_value,
    source_for,
)

from prometheus_server import query, wait_for

FEATURES = ["f0", "f1", "f2"]
N_ROUTED = 80  # routed 70/30 by the runtime, one request a row
N_EXPLICIT = {"main": 10, "challenger": 10}  # extra requests naming the variant
SLOW_S = 0.02


class SlowDouble(mlflow.pyfunc.PythonModel):
    """Sleeps 20 ms and answers twice the feature sum: slower than main, and never agrees with it."""

    def predict(self, context, model_input, params=None):
        time.sleep(SLOW_S)
        return (2.0 * model_input.sum(axis=1)).to_numpy()


@dataclass
class Live:
    name: str
    since: float
    until: float
    sent: dict[str, int]  # requests answered per live variant, warm-up included
    warmup: dict[str, int]
    prometheus: str


def _register(home: Path) -> dict[str, str]:
    import cloudpickle
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter._mlflow import configure

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=FEATURES)
    wolt_jupyter.register(LinearRegression().fit(X, X.sum(axis=1)), name="eta", input_example=X.head(3))
    configure()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the runtime process has no test code
    try:
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model",
                python_model=SlowDouble(),
                registered_model_name="eta",
                signature=infer_signature(X, X.sum(axis=1).to_numpy()),
                pip_requirements=[],  # no requirement inference (a subprocess loading the model)
            )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return {"fast": "models:/eta/1", "slow": "models:/eta/2"}


@pytest.fixture(scope="module")
def live(module_home: Path, prometheus: str) -> Iterator[Live]:
    """Deploy main (fast, 70) / challenger (slow, 30) / shadow (= main's model), send known traffic, and wait
    until Prometheus has scraped all of it."""
    from wolt_jupyter import deployments
    from wolt_jupyter.client import V2Client

    models = _register(module_home)
    name = "eta"
    since = time.time() - 5
    d = deployments.deploy(name, models["fast"], ab=[f"{models['slow']}=30"], shadow=[models["fast"]])
    try:
        # a series per code and model version exists from the start: sum them
        count = f'seldon_api_executor_server_requests_seconds_count{{deployment_name="{name}"}}'
        seldon = f"sum by (predictor_name) ({count})"
        client = V2Client(d.url, name)
        row = pd.DataFrame([[0.5, 1.0, -0.25]], columns=FEATURES)
        warmup = {"main": 1, "challenger": 1}
        for variant in warmup:  # a request naming each variant first
            client.infer(row, variant=variant)

        def scraped(total: dict[str, int]) -> bool:
            got = {s["metric"]["predictor_name"]: float(s["value"][1]) for s in query(prometheus, seldon)}
            return all(got.get(v) == n for v, n in total.items())

        wait_for(lambda: scraped(warmup), 60, "Prometheus did not scrape the warm-up requests")
        rows = pd.DataFrame(np.random.default_rng(1).normal(size=(N_ROUTED, 3)), columns=FEATURES)
        out = deployments.predict(name, rows, per_row=True)
        sent = {v: warmup[v] + int((out["variant"] == v).sum()) for v in warmup}
        for variant, n in N_EXPLICIT.items():
            for i in range(n):
                client.infer(rows.iloc[[i]], variant=variant)
            sent[variant] += n
        client.close()
        assert deployments.backend("local").flush(name)  # response log and shadows caught up
        wait_for(lambda: scraped(sent), 60, "Prometheus did not scrape all requests")
        compared = 'sum(wolt_shadow_comparisons_total{deployment="eta"})'
        wait_for(
            lambda: [s for s in query(prometheus, compared) if float(s["value"][1]) == sum(sent.values())],
            30,
            "Prometheus did not see every shadow comparison",
        )
        # a few more flat scrapes: increase() extrapolates by up to half a scrape interval at each end of the
        # sampled span, which is small against a span of several seconds
        time.sleep(6)
        yield Live(name, since, time.time(), sent, warmup, prometheus)
    finally:
        with contextlib.suppress(Exception):
            deployments.undeploy(name)


def _snapshot(source, live: Live) -> MonitorData:
    data = source.snapshot(live.name, since=live.since, until=live.until, step=2.0)
    assert data.message is None, data.message
    return data


def _check_common(data: MonitorData, live: Live, counts_rel: float) -> None:
    s = data.summary
    assert set(s.index) == {"main", "challenger", "shadow"}, s
    assert list(s["shadow"]) == [False, False, True] or bool(s.loc["shadow", "shadow"])
    total = sum(live.sent.values())
    for v, n in live.sent.items():
        assert s.loc[v, "requests"] == pytest.approx(n, rel=counts_rel), (v, s)
        assert s.loc[v, "share"] == pytest.approx(n / total, abs=0.05), (v, s)
        assert s.loc[v, "error_rate"] == 0.0
    # the slow variant is measurably slower at every quantile
    for q in ("p50", "p95", "p99"):
        assert s.loc["challenger", q] >= 0.015 and s.loc["challenger", q] > 2 * s.loc["main", q], (q, s)
    # the shadow runs main's model: it agrees with main, never with the doubled challenger
    agree = data.agreement
    assert agree["shadow vs main"].max() == pytest.approx(1.0), agree
    assert agree["shadow vs challenger"].dropna().size > 0 and agree["shadow vs challenger"].max() == 0.0
    expected_share = live.sent["main"] / total
    assert s.loc["shadow", "agreement"] == pytest.approx(expected_share, abs=0.08), s
    # a distribution for every variant, shadows included
    assert set(data.predictions.columns) == {"main", "challenger", "shadow"}
    assert data.shadows == ("shadow",)
    # the time series carry the same traffic (requests/s summed over time ≈ requests)
    assert set(data.requests.columns) == {"main", "challenger"}
    assert (data.requests.fillna(0) >= 0).all().all() and data.requests.max().max() > 0
    assert data.latency["p99"]["challenger"].max() >= 0.015


def test_response_log_source_matches_what_was_sent(live: Live) -> None:
    data = _snapshot(ResponseLogSource(), live)
    _check_common(data, live, counts_rel=0)
    s = data.summary
    assert s.loc["shadow", "requests"] == sum(live.sent.values())  # a copy of every live request
    # exact bucket counts: requests/s x step summed over the window is the number of requests
    assert (data.requests.sum() * data.step).round().to_dict() == live.sent
    assert data.predictions.sum().to_dict() == {**live.sent, "shadow": sum(live.sent.values())}
    assert data.log_health["written"].sum() * data.step == pytest.approx(2 * sum(live.sent.values()))


def test_response_log_source_refresh_reuses_settled_buckets(live: Live) -> None:
    source = ResponseLogSource(settle=0.0)
    first = _snapshot(source, live)
    assert source._cache and sum(len(c) for c in source._cache.values()) > 0
    again = _snapshot(source, live)  # answered from the cache: the same numbers
    pd.testing.assert_frame_equal(first.summary, again.summary)


def test_prometheus_source_matches_what_was_sent(live: Live) -> None:
    data = _snapshot(PrometheusSource(live.prometheus, rate_window=10), live)
    # every series exists at 0 from the start, so the warm-up counts too; increase() extrapolates a little
    _check_common(data, live, counts_rel=0.10)
    # every live answer got a shadow copy and was counted as a prediction of its variant
    assert data.summary.loc["shadow", "requests"] == pytest.approx(sum(live.sent.values()), rel=0.10)
    assert 0.0 < data.summary.loc["shadow", "p50"] < 1.0 and data.summary.loc["shadow", "error_rate"] == 0.0
    preds = data.predictions.sum()
    assert preds["main"] == pytest.approx(live.sent["main"], rel=0.10)
    assert data.log_health["written"].max() > 0 and data.log_health["dropped"].fillna(0).max() == 0
    assert data.timings["queries"] >= 10


def test_both_sources_agree(live: Live) -> None:
    a = _snapshot(ResponseLogSource(), live).summary
    b = _snapshot(PrometheusSource(live.prometheus, rate_window=10), live).summary
    assert list(a.index) == list(b.index)
    assert np.allclose(a["share"].dropna(), b["share"].dropna(), atol=0.06)
    assert (a.loc["challenger", "p50"] > a.loc["main", "p50"]) == (
        b.loc["challenger", "p50"] > b.loc["main", "p50"]
    )


def test_prometheus_queries_are_escaped_and_empty_is_a_message(live: Live) -> None:
    assert label_value('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    source = PrometheusSource(live.prometheus)
    data = source.snapshot('no"such\\thing', since=live.since, until=live.until, step=2.0)
    assert data.empty and "has no requests for" in (data.message or "")
    with pytest.raises(SourceError, match=r"rejected a query \(400: .*\): sum\($"):
        source.run(Query("instant", "sum(", ()))


def test_unreachable_or_missing_sources_say_so(live: Live, closed_port_uri: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot reach Prometheus http://127\.0\.0\.1:"):
        PrometheusSource(closed_port_uri, timeout=2).snapshot("eta", since=0, until=60, step=15)
    data = ResponseLogSource(f"sqlite:///{tmp_path / 'none.db'}").snapshot("eta", since=0, until=60, step=15)
    assert data.empty and "no response log for 'eta' yet" in (data.message or "")
    data = ResponseLogSource().snapshot("eta", since=0, until=60, step=15)  # 1970: nothing logged then
    assert data.empty and "no requests logged" in (data.message or "")


def test_source_for_follows_the_settings(monkeypatch: pytest.MonkeyPatch, module_home: Path) -> None:
    from wolt_jupyter.config import settings

    assert isinstance(source_for(settings()), ResponseLogSource)
    monkeypatch.setenv("WOLT_PROMETHEUS_URL", "http://127.0.0.1:9")
    source = source_for()
    assert isinstance(source, PrometheusSource) and source.url == "http://127.0.0.1:9"
    assert not math.isnan(len(source.queries("eta", since=0, until=60, step=15)))


@pytest.mark.parametrize("kind", ["response-log", "prometheus"])
def test_panel_over_the_real_deployment(live: Live, kind: str) -> None:
    import base64
    import io

    from matplotlib.image import imread

    from wolt_jupyter.widgets.monitor import monitor

    source = (
        ResponseLogSource() if kind == "response-log" else PrometheusSource(live.prometheus, rate_window=10)
    )
    panel = monitor(live.name, since="5m", step="2s", refresh=0, source=source)
    try:
        assert panel.message is None, panel.message
        assert set(panel.data.summary.index) == {"main", "challenger", "shadow"}
        for variant in ("main", "challenger", "shadow"):
            assert f"<th>{variant}</th>" in panel.summary_box.value
        image = imread(io.BytesIO(base64.b64decode(panel._repr_mimebundle_()["image/png"])), format="png")
        assert image.shape[0] > 400 and image.std() > 0  # a picture, not a blank canvas
    finally:
        panel.close()


def test_a_missing_prometheus_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import prometheus_server

    monkeypatch.setattr(prometheus_server.shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match=re.escape(prometheus_server.INSTALL)):
        prometheus_server.prometheus_binary()
