"""A private Prometheus for tests and benchmarks: Debian's ``prometheus`` on 127.0.0.1, a temp TSDB, and one
scrape job that follows the local target's ``file_sd`` targets file (so deployments appear as they start).

A missing binary fails with the command that installs it: the monitoring tests are about the real thing.
Debian's build has no Kubernetes service discovery: the cluster tier runs upstream's Prometheus, built once from
the Go module proxy by ``scripts/cluster/build-prometheus.sh`` (:func:`kubernetes_prometheus_binary`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port, stop_server, wait_http

INSTALL = "apt-get update && apt-get install -y --no-install-recommends prometheus"

CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: wolt-local
    honor_labels: true
    scrape_interval: {interval}
    scrape_timeout: {interval}
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 1s
"""


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(f"Debian's prometheus is not installed; install it with: {INSTALL}", pytrace=False)
    return path


def kubernetes_prometheus_binary() -> str:
    """Upstream Prometheus with Kubernetes service discovery: built once into the cluster's cache (the cold
    build is minutes; a cached one answers at once)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "cluster" / "build-prometheus.sh"
    out = subprocess.run(["bash", str(script)], text=True, capture_output=True, check=False, timeout=3600)
    if out.returncode != 0:
        pytest.fail(f"building Prometheus failed:\n{out.stderr[-4000:]}", pytrace=False)
    if "built in" in out.stderr:
        sys.stdout.write(out.stderr.splitlines()[-1] + "\n")
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def prometheus_server(
    home: Path,
    *,
    interval: str = "1s",
    timeout: float = 30.0,
    extra_jobs: str = "",
    binary: str | None = None,
) -> Iterator[str]:
    """Run Prometheus (``binary``, else Debian's) scraping ``<home>/prometheus/targets.json`` every
    ``interval`` (and ``extra_jobs``: more ``scrape_configs`` entries, as YAML list items); yield its base URL."""
    binary = binary or prometheus_binary()
    targets = Path(home) / "prometheus" / "targets.json"
    targets.parent.mkdir(parents=True, exist_ok=True)
    if not targets.exists():
        targets.write_text("[]")
    with tempfile.TemporaryDirectory(prefix="wolt-prometheus-") as tmp:
        root = Path(tmp)
        config = root / "prometheus.yml"
        config.write_text(CONFIG.format(interval=interval, targets=targets) + extra_jobs)
        port = free_port()
        log = root / "prometheus.log"
        cmd = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/-/ready", timeout, proc, log)
            yield url
        finally:
            stop_server(proc, 10)


def kubernetes_pods_job(api_server: str, pki: Path, namespace: str, interval: str = "1s") -> str:
    """A scrape job that finds pods through the Kubernetes API (service discovery, role pod) in ``namespace``
    and scrapes those annotated ``prometheus.io/scrape: "true"`` at their annotated port and path, as a
    cluster's Prometheus does; the runtime's own labels (deployment, variant) are kept."""
    tls = f"""
      tls_config:
        ca_file: {pki / "ca.crt"}
        cert_file: {pki / "admin.crt"}
        key_file: {pki / "admin.key"}"""
    return f"""
  - job_name: wolt-kubernetes-pods
    honor_labels: true
    scrape_interval: {interval}
    scrape_timeout: {interval}
    kubernetes_sd_configs:
      - role: pod
        api_server: {api_server}{tls.replace(chr(10) + "      ", chr(10) + "        ")}
        namespaces:
          names: ["{namespace}"]
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        regex: "true"
        action: keep
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: "(.+);(.+)"
        replacement: "$1:$2"
        target_label: __address__
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        regex: "(.+)"
        target_label: __metrics_path__
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
"""


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result list."""
    data = urllib.parse.urlencode({"query": promql}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/query", data=data, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what} within {timeout:.0f} s (last: {last!r})", pytrace=False)
