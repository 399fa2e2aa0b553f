"""The most common notebook flow against a real Prometheus: deploy, send one burst at once, look.

Every series the panel reads exists at 0 from the moment the runtime is ready, and the Prometheus source
counts series born inside the window, so the first burst is counted, after a deploy and after a traffic
change that adds a variant (a blue-green switch in the running runtime) alike. The panel says which source it
reads, and says so when Prometheus and the response log disagree instead of showing a silent zero.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wolt_jupyter.monitoring.prometheus import PrometheusSource
from wolt_jupyter.monitoring.responselog import ResponseLogSource

from prometheus_server import prometheus_server, query, wait_for

FEATURES = ["f0", "f1", "f2"]
BURST = 200
NAME = "burst"
SELDON = "seldon_api_executor_server_requests_seconds"


@dataclass
class Story:
    prometheus: str
    since: float
    url: str = ""
    first: dict[str, int] = field(default_factory=dict)  # first burst, per variant
    second: dict[str, int] = field(default_factory=dict)  # burst after adding a variant
    metrics_before: str = ""  # /metrics right after deploy, before any request
    metrics_after_switch: str = ""  # /metrics right after the traffic change, before any request

    def sent(self) -> dict[str, int]:
        return {v: self.first.get(v, 0) + self.second.get(v, 0) for v in {*self.first, *self.second}}


def _register() -> dict[str, str]:
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=FEATURES)
    for k in (1.0, 2.0, 3.0):  # three versions that answer differently
        wolt_jupyter.register(
            LinearRegression().fit(X, k * X.sum(axis=1)), name="lin", input_example=X.head(3)
        )
    return {"v1": "models:/lin/1", "v2": "models:/lin/2", "v3": "models:/lin/3"}


def _metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _burst(n: int, seed: int) -> dict[str, int]:
    """``n`` requests at once, one a row; the answering variant of each, counted."""
    from wolt_jupyter import deployments

    rows = pd.DataFrame(np.random.default_rng(seed).normal(size=(n, 3)), columns=FEATURES)
    out = deployments.predict(NAME, rows, per_row=True)
    return {str(v): int(c) for v, c in out["variant"].value_counts().items()}


def _scraped(prometheus: str, sent: dict[str, int], timeout: float = 60) -> None:
    """Wait until Prometheus's last sample of the counters holds everything sent (sums over model versions)."""
    promql = f'sum by (predictor_name) ({SELDON}_count{{deployment_name="{NAME}",code="200"}})'

    def done() -> bool:
        got = {s["metric"]["predictor_name"]: float(s["value"][1]) for s in query(prometheus, promql)}
        return all(got.get(v) == n for v, n in sent.items())

    wait_for(done, timeout, f"Prometheus did not scrape {sent}")


@pytest.fixture(scope="module")
def story(module_home: Path, prometheus: str) -> Iterator[Story]:
    from wolt_jupyter import deployments

    models = _register()
    s = Story(prometheus, since=time.time() - 2)
    d = deployments.deploy(NAME, models["v1"], ab=[f"{models['v2']}=30"], shadow=[models["v1"]])
    try:
        s.url = d.url
        s.metrics_before = _metrics(d.url)
        s.first = _burst(BURST, seed=1)  # at once: no scrape is waited for
        assert deployments.backend("local").flush(NAME)
        _scraped(prometheus, s.first)
        # a traffic change that adds a variant with a model not loaded yet: loaded beside, then switched to
        deployments.deploy(
            NAME, models["v1"], ab=[f"{models['v2']}=30", f"third:{models['v3']}=30"], shadow=[models["v1"]]
        )
        s.metrics_after_switch = _metrics(d.url)
        s.second = _burst(BURST, seed=2)
        assert deployments.backend("local").flush(NAME)
        _scraped(prometheus, s.sent())
        yield s
    finally:
        with contextlib.suppress(Exception):
            deployments.undeploy(NAME)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` with exactly ``labels`` in ``text``; None when absent."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_series_exist_at_zero_before_the_first_request(story: Story) -> None:
    text = story.metrics_before
    for variant, version in (("main", "1"), ("challenger", "2")):
        for code in ("200", "400", "500"):
            labels = dict(
                deployment_name=NAME,
                predictor_name=variant,
                model_name="lin",
                model_version=version,
                code=code,
            )
            assert _sample(text, f"{SELDON}_count", **labels) == 0, (variant, code)
            assert _sample(text, f"{SELDON}_bucket", **labels, le="+Inf") == 0
        assert _sample(text, "wolt_predictions_count", deployment=NAME, variant=variant, shadow="false") == 0
        assert _sample(text, "wolt_model_errors_total", deployment=NAME, variant=variant) == 0
        for counter in ("wolt_shadow_comparisons_total", "wolt_shadow_disagreements_total"):
            assert _sample(text, counter, deployment=NAME, shadow="shadow", live=variant) == 0
    shadow = dict(deployment=NAME, variant="shadow", model_name="lin", model_version="1")
    for code in ("200", "500"):
        assert _sample(text, "wolt_shadow_request_seconds_count", **shadow, code=code) == 0
    assert _sample(text, "wolt_shadow_errors_total", deployment=NAME, variant="shadow") == 0
    assert _sample(text, "wolt_predictions_count", deployment=NAME, variant="shadow", shadow="true") == 0
    # the variant added by the traffic change exists at 0 as soon as the switch is done
    after = story.metrics_after_switch
    third = dict(
        deployment_name=NAME, predictor_name="third", model_name="lin", model_version="3", code="200"
    )
    assert _sample(after, f"{SELDON}_count", **third) == 0
    assert (
        _sample(after, "wolt_shadow_comparisons_total", deployment=NAME, shadow="shadow", live="third") == 0
    )
    # and Prometheus scraped the zero series too (the shadow's error series stays 0 all along)
    got = query(story.prometheus, f'wolt_shadow_errors_total{{deployment="{NAME}",variant="shadow"}}')
    assert [float(s["value"][1]) for s in got] == [0.0]


def _panel(story: Story, source):
    from wolt_jupyter.widgets.monitor import monitor

    return monitor(NAME, since=f"{time.time() - story.since + 1:.0f}s", step="1s", refresh=0, source=source)


def test_first_burst_after_deploy_and_after_adding_a_variant_is_counted(story: Story) -> None:
    assert set(story.first) == {"main", "challenger"} and set(story.second) == {"main", "challenger", "third"}
    panel = _panel(story, PrometheusSource(story.prometheus))
    try:
        assert panel.message is None, panel.message  # Prometheus agrees with the response log
        s = panel.data.summary
        for variant, n in story.sent().items():
            assert s.loc[variant, "requests"] == pytest.approx(n, rel=0.10), (variant, n, s)
        # the added variant saw only the second burst, counted from its first request on
        assert s.loc["third", "requests"] == pytest.approx(story.second["third"], rel=0.10), s
        # the shadow answered a copy of every live request, timed in Prometheus like the live ones
        total = sum(story.sent().values())
        assert s.loc["shadow", "requests"] == pytest.approx(total, rel=0.10), s
        assert s.loc["shadow", "error_rate"] == 0.0
        assert 0 < s.loc["shadow", "p50"] <= s.loc["shadow", "p99"] < 5, s
        # the panel names its source and what it is checked against
        assert panel.source_line().startswith("source: Prometheus http://127.0.0.1:")
        assert "checked against the response log" in panel.source_line()
        assert "source: Prometheus" in panel.header.value and "source: Prometheus" in repr(panel)
        assert "<th>shadow</th>" in panel.summary_box.value and "p50 ms" in panel.summary_box.value
    finally:
        panel.close()


def test_prometheus_and_response_log_agree_on_the_same_deployment(story: Story) -> None:
    until = time.time()
    window = dict(since=story.since, until=until, step=1.0)
    prom = PrometheusSource(story.prometheus).snapshot(NAME, **window).summary
    logged = ResponseLogSource().snapshot(NAME, **window).summary
    assert list(prom.index) == list(logged.index) == ["challenger", "main", "shadow", "third"]
    assert list(prom["shadow"]) == list(logged["shadow"])
    for variant in prom.index:
        assert prom.loc[variant, "requests"] == pytest.approx(logged.loc[variant, "requests"], rel=0.10)
        assert prom.loc[variant, "error_rate"] == logged.loc[variant, "error_rate"] == 0.0
    assert np.allclose(prom["share"].dropna(), logged["share"].dropna(), atol=0.03)
    # the response log has every row; Prometheus's requests are within a scrape of the same numbers
    assert logged.loc["shadow", "requests"] == sum(story.sent().values())
    for variant, n in story.sent().items():
        assert logged.loc[variant, "requests"] == n
    # both time the shadow: medians of the same predicts, as histograms of different buckets
    assert prom.loc["shadow", "p50"] > 0 and logged.loc["shadow", "p50"] > 0


def test_a_prometheus_that_does_not_scrape_the_deployment_is_called_out(story: Story, tmp_path: Path) -> None:
    """A second, real Prometheus that scrapes nothing: the panel says it disagrees with the response log."""
    with prometheus_server(tmp_path / "elsewhere") as blind:
        panel = _panel(story, PrometheusSource(blind))
        try:
            assert panel.data.disagrees
            message = panel.message or ""
            assert "disagree" in message and "has not scraped this deployment" in message, message
            for variant, n in story.sent().items():
                assert f"{variant} {n}" in message  # the response log's counts, as they are
            assert "wolt-monitor-error" in panel.message_box._dom_classes
        finally:
            panel.close()
