"""Prometheus on the cluster: a real Prometheus (upstream's, built here: Debian's has no Kubernetes discovery)
finds the `kubernetes` target's pods through the API server (`kubernetes_sd_configs`, role pod, kept and
addressed by the `prometheus.io/*` annotations of the pod template), as a plain cluster's Prometheus does, and
`%wolt_monitor` reading it counts a burst sent right after the deploy exactly, per variant, summed across
replicas."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from cluster_support import events, pods, service_url

from wolt_jupyter.monitoring.prometheus import PrometheusSource

from helpers import FEATURES, register_eta_models
from prometheus_server import (
    kubernetes_pods_job,
    kubernetes_prometheus_binary,
    prometheus_server,
    query,
    wait_for,
)

pytestmark = pytest.mark.cluster

SELDON = "seldon_api_executor_server_requests_seconds"
JOB = "wolt-kubernetes-pods"
REPLICAS = 2
BURST = 200
SCRAPE = "2s"
CONNECTIONS = 20  # the Service balances connections, not requests: a client each, so every replica gets some


def _burst(url: str) -> dict[str, int]:
    """``BURST`` requests at once, one a row, over ``CONNECTIONS`` concurrent clients; the answering variant
    of each, counted."""
    from wolt_jupyter.client import predict_frame

    rows = pd.DataFrame(np.random.default_rng(1).normal(size=(BURST, 3)), columns=FEATURES)
    answered: list[pd.DataFrame] = []
    errors: list[BaseException] = []

    def send(part: pd.DataFrame) -> None:
        try:
            answered.append(predict_frame(url, "eta", part, per_row=True))
        except BaseException as exc:  # reported below, on the test thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(part,)) for part in np.array_split(rows, CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    counts = pd.concat(answered)["variant"].value_counts()
    return {str(v): int(n) for v, n in counts.items()}


def _per_pod(kube_api: Any, namespace: str) -> dict[str, dict[str, float]]:
    """Each pod's own count of answered requests per variant, read from its /metrics."""
    out = {}
    for p in pods(kube_api, namespace, "eta"):
        with urllib.request.urlopen(f"http://{p.status.pod_ip}:8080/metrics", timeout=5) as resp:
            text = resp.read().decode()
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(f"{SELDON}_count{{") and 'code="200"' in line:
                variant = line.split('predictor_name="', 1)[1].split('"', 1)[0]
                counts[variant] = counts.get(variant, 0.0) + float(line.rsplit(" ", 1)[1])
        out[p.metadata.name] = counts
    return out


def _scraped(prometheus: str) -> dict[str, float]:
    promql = f'sum by (predictor_name) ({SELDON}_count{{deployment_name="eta",code="200"}})'
    return {s["metric"]["predictor_name"]: float(s["value"][1]) for s in query(prometheus, promql)}


def _logged() -> int:
    import wolt_jupyter

    return len(wolt_jupyter.read_responses("eta", revision="all"))


def _first_scrapes(prometheus: str) -> dict[str, float]:
    """When Prometheus first scraped each pod of the job (the first sample of its ``up``)."""
    got = query(prometheus, f'up{{job="{JOB}"}}[10m]')
    return {s["metric"]["pod"]: float(s["values"][0][0]) for s in got}


def test_prometheus_finds_the_pods_through_the_api_and_counts_the_first_burst_across_replicas(
    shell: Any,
    on_cluster: dict[str, str],
    kube_cluster: Path,
    kube_api: Any,
    kube_namespace: str,
    undeploy_all: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = register_eta_models(scales=(1.0, 100.0))
    spec = {
        "name": "eta",
        "replicas": REPLICAS,
        "variants": [
            {"name": "main", "model": models["champion"], "traffic": 70},
            {"name": "challenger", "model": models["v2"], "traffic": 30},
        ],
    }
    spec_file = tmp_path / "eta.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    kubeconfig = yaml.safe_load(kube_cluster.read_text())
    api_server = kubeconfig["clusters"][0]["cluster"]["server"]
    # the job's interval differs from the global one (1 s): the panel must find the pods' own
    job = kubernetes_pods_job(api_server, kube_cluster.parent / "pki", kube_namespace, interval=SCRAPE)
    binary = kubernetes_prometheus_binary()
    with prometheus_server(tmp_path / "home", extra_jobs=job, binary=binary) as prometheus:
        # Prometheus runs before the deploy: it must discover the pods as they come
        monkeypatch.setenv("WOLT_PROMETHEUS_URL", prometheus)
        d = shell.run_line_magic("wolt_deploy", f"eta --spec {spec_file} --target kubernetes")
        ready = time.time()
        assert d.status == "ready" and d.target == "kubernetes", (
            d.message,
            events(kube_api, kube_namespace),
        )
        # right away: no scrape waited for. kube-proxy programs a replica's rules a moment (~1 s here) after
        # the Service lists it, so the first burst may all reach one pod: bursts go on until every replica
        # has answered some, and everything sent must be counted
        url = service_url(kube_api, kube_namespace, "eta")
        sent: dict[str, int] = {}
        bursts = 0
        while bursts < 5:
            bursts += 1
            for variant, n in _burst(url).items():
                sent[variant] = sent.get(variant, 0) + n
            per_pod = _per_pod(kube_api, kube_namespace)
            if all(sum(c.values()) > 0 for c in per_pod.values()):
                break
        sent_at = time.time()
        total = bursts * BURST
        assert set(sent) == {"main", "challenger"} and sum(sent.values()) == total, sent

        # every replica answered part of the bursts, and the pods' own counters hold it all
        assert len(per_pod) == REPLICAS and all(sum(c.values()) > 0 for c in per_pod.values()), per_pod
        for variant, n in sent.items():
            assert sum(c.get(variant, 0.0) for c in per_pod.values()) == n, (variant, per_pod)

        wait_for(lambda: _scraped(prometheus) == sent, 60, f"Prometheus did not scrape {sent}", 0.1)
        visible_s = time.time() - sent_at
        # found through the API server: one target per pod in the SD job, none in the file_sd job
        with urllib.request.urlopen(f"{prometheus}/api/v1/targets?state=active", timeout=5) as resp:
            active = json.loads(resp.read())["data"]["activeTargets"]
        assert {t["scrapePool"] for t in active} == {JOB}, active
        assert {t["discoveredLabels"]["__meta_kubernetes_pod_name"] for t in active} == set(per_pod)
        assert all(t["health"] == "up" for t in active), active
        first = _first_scrapes(prometheus)
        assert set(first) == set(per_pod), first

        # the panel checks Prometheus against the cluster's response log, which the pods' writers fill a
        # moment after answering (the notebook cannot flush a pod's log as it does a local runtime's)
        wait_for(lambda: _logged() >= total, 60, "the bursts in the cluster's response log", 0.1)
        logged_s = time.time() - sent_at
        # the pods are this deployment's targets, though no target label names it: their discovered labels do
        assert PrometheusSource(prometheus).scrape_interval("eta") == 2.0

        panel = shell.run_line_magic("wolt_monitor", "eta --refresh 0")
        try:
            assert panel.source_line().startswith(f"source: Prometheus {prometheus}"), panel.source_line()
            assert "checked against the response log" in panel.source_line()
            assert panel.message is None, panel.message  # Prometheus agrees with the cluster's response log
            summary = panel.data.summary
            assert not summary["shadow"].any()
            got = {str(v): summary.loc[v, "requests"] for v in summary.index}
            assert got == sent, (got, sent, per_pod)  # exact: every pod's series was born in the window
            assert sum(summary["share"]) == pytest.approx(1.0)
            assert (summary["error_rate"] == 0).all()
        finally:
            panel.close()
    print(
        f"\nprometheus on the cluster: burst {sent} over {REPLICAS} replicas "
        f"({ {k: dict(v) for k, v in per_pod.items()} }); first scrape of each pod "
        f"{ {k: round(v - ready, 1) for k, v in first.items()} } s after the deploy returned; "
        f"the whole burst visible in Prometheus {visible_s:.1f} s after it was sent, in the response log "
        f"within {logged_s:.1f} s"
    )
