"""The panel's series from Prometheus's HTTP API, over Seldon-compatible metric names.

Request counts, errors and latency come from ``seldon_api_executor_server_requests_seconds`` (labels
``deployment_name``, ``predictor_name`` = variant, ``code``), which both this project's runtime and Seldon
Core's executor export, so one panel serves local and cluster deployments alike; they mean live traffic only.
Shadow copies are counted and timed in ``wolt_shadow_request_seconds`` (labels ``variant`` = the shadow,
``code``). Prediction values, shadow agreement and response-log health come from the runtime's own ``wolt_*``
metrics too (absent on Seldon: those plots stay empty there).

Totals over the window are :func:`grown`: ``increase()`` for series that existed when the window began, the
whole value for a series born inside it (a deployment or a traffic change within the window). A refresh sends all its queries at once from a thread pool: its wall time is that
of the slowest query, not the sum.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter.monitoring.data import (
    HEALTH_COLUMNS,
    QUANTILES,
    SUMMARY_COLUMNS,
    MetricSource,
    MonitorData,
    SourceError,
    time_index,
)

if TYPE_CHECKING:
    import pandas as pd

SELDON = "seldon_api_executor_server_requests_seconds"
SHADOW = "wolt_shadow_request_seconds"
DEFAULT_SCRAPE_S = 15.0  # Prometheus's own default, when the targets API does not say
TOKEN_ENV = "WOLT_PROMETHEUS_TOKEN"
MAX_POINTS = 11_000  # Prometheus refuses longer range queries
POD_INSTANCE = "__meta_kubernetes_pod_label_app_kubernetes_io_instance"  # Kubernetes discovery's meta label


def label_value(value: str) -> str:
    """A PromQL double-quoted string literal for ``value`` (backslash, quote and newline escaped)."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds (``1500ms``), at least 1 ms."""
    return f"{max(1, round(seconds * 1000))}ms"


def grown(selector: str, window: str) -> str:
    """PromQL for how much the counters of ``selector`` grew over ``window`` up to the query time.

    ``increase()`` needs two samples of a series inside the window: a series first scraped after a burst (born
    at its first request, or pre-created at 0 but not scraped before the traffic came) has the burst in its
    first sample, and ``increase()`` would miss all of it. Such a series did not exist when the window began,
    and counters start at 0 in the process that creates them, so its current value is its growth. The
    metric name does not take part in ``or``'s matching, so each series is counted once."""
    return f"(({selector} unless {selector} offset {window}) or increase({selector}[{window}]))"


@dataclass(frozen=True)
class Query:
    kind: str  # "range" or "instant"
    promql: str
    params: tuple[tuple[str, str], ...]


class PrometheusSource(MetricSource):
    """Series from the Prometheus at ``url``. ``rate_window`` (seconds) is the ``rate()`` range of the time
    series (at least one ``step``); ``timeout`` bounds each HTTP query."""

    def __init__(self, url: str, *, rate_window: float = 60.0, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.rate_window = float(rate_window)
        self.timeout = float(timeout)
        from wolt_jupyter.config import mask_url

        self.name = f"Prometheus {mask_url(self.url)}"
        self._scrape: dict[str, float] = {}

    # -- queries ----------------------------------------------------------------------------------------------
    def queries(self, deployment: str, *, since: float, until: float, step: float) -> dict[str, Query]:
        """Every query one refresh sends, by name (public for the benchmark and for curious users)."""
        start, end, step = _range(since, until, step)
        dep = label_value(deployment)
        req = f'{SELDON}_count{{deployment_name={dep},predictor_name!=""}}'
        err = f'{SELDON}_count{{deployment_name={dep},predictor_name!="",code=~"5.."}}'
        bucket = f'{SELDON}_bucket{{deployment_name={dep},predictor_name!=""}}'
        sh_req = f"{SHADOW}_count{{deployment={dep}}}"
        sh_err = f'{SHADOW}_count{{deployment={dep},code=~"5.."}}'
        sh_bucket = f"{SHADOW}_bucket{{deployment={dep}}}"
        cmp_ = f"wolt_shadow_comparisons_total{{deployment={dep}}}"
        dis = f"wolt_shadow_disagreements_total{{deployment={dep}}}"
        w = duration(max(self.rate_window, step))
        whole = duration(until - since)
        by_v, by_s, by_sh = "sum by (predictor_name)", "sum by (shadow, live)", "sum by (variant)"

        def ratio_missing_as_zero(by: str, fn: str, num: str, den: str, rng: str) -> str:
            n, d = f"{by} ({fn}({num}[{rng}]))", f"{by} ({fn}({den}[{rng}]))"
            return f"({n} or {d} * 0) / {d}"

        total_cmp = f"sum by (shadow) ({grown(cmp_, whole)})"
        rng = (("start", repr(start)), ("end", repr(end)), ("step", repr(step)))
        at = (("time", repr(until)),)
        out = {
            "requests": Query("range", f"{by_v} (rate({req}[{w}]))", rng),
            "error_rate": Query("range", ratio_missing_as_zero(by_v, "rate", err, req, w), rng),
            "disagreement": Query("range", ratio_missing_as_zero(by_s, "rate", dis, cmp_, w), rng),
            "queued": Query("range", f"sum(wolt_response_log_queued{{deployment={dep}}})", rng),
            "written": Query(
                "range", f"sum(rate(wolt_response_log_written_total{{deployment={dep}}}[{w}]))", rng
            ),
            "dropped": Query(
                "range", f"sum(rate(wolt_response_log_dropped_total{{deployment={dep}}}[{w}]))", rng
            ),
            "total_requests": Query("instant", f"{by_v} ({grown(req, whole)})", at),
            "total_errors": Query("instant", f"{by_v} ({grown(err, whole)})", at),
            "total_shadow_requests": Query("instant", f"{by_sh} ({grown(sh_req, whole)})", at),
            "total_shadow_errors": Query("instant", f"{by_sh} ({grown(sh_err, whole)})", at),
            "total_compared": Query("instant", f"sum by (shadow) ({grown(cmp_, whole)})", at),
            "total_disagreement": Query(
                "instant",
                f"(sum by (shadow) ({grown(dis, whole)}) or {total_cmp} * 0) / {total_cmp}",
                at,
            ),
            "predictions": Query(
                "instant",
                f"sum by (variant, shadow, le) ({grown(f'wolt_predictions_bucket{{deployment={dep}}}', whole)})",
                at,
            ),
        }
        for k, q in QUANTILES.items():
            out[k] = Query(
                "range", f"histogram_quantile({q}, sum by (le, predictor_name) (rate({bucket}[{w}])))", rng
            )
            out[f"total_{k}"] = Query(
                "instant",
                f"histogram_quantile({q}, sum by (le, predictor_name) ({grown(bucket, whole)}))",
                at,
            )
            out[f"total_shadow_{k}"] = Query(
                "instant", f"histogram_quantile({q}, sum by (le, variant) ({grown(sh_bucket, whole)}))", at
            )
        return out

    def scrape_interval(self, deployment: str) -> float:
        """Seconds between two scrapes of ``deployment``: its target's (targets API), else the global
        ``scrape_interval`` of the configuration, else Prometheus's default. Remembered per deployment."""
        if deployment not in self._scrape:
            self._scrape[deployment] = self._read_scrape_interval(deployment)
        return self._scrape[deployment]

    def _read_scrape_interval(self, deployment: str) -> float:
        from wolt_jupyter.units import duration_seconds

        def seconds(value: object) -> float | None:
            return duration_seconds(str(value)) or None

        targets = (self._get("/api/v1/targets?state=active") or {}).get("activeTargets")
        mine = [
            seconds(t.get("scrapeInterval"))
            for t in (targets if isinstance(targets, list) else [])
            if isinstance(t, dict) and _scrapes(t, deployment)
        ]
        if any(mine):
            return max(m for m in mine if m)
        # not a target (yet): it would be scraped at the global interval
        import yaml

        config = (self._get("/api/v1/status/config") or {}).get("yaml")
        try:
            doc = yaml.safe_load(config) if isinstance(config, str) else None
        except yaml.YAMLError:
            doc = None
        glob = doc.get("global") if isinstance(doc, dict) else None
        return (seconds(glob.get("scrape_interval")) if isinstance(glob, dict) else None) or DEFAULT_SCRAPE_S

    def _request(self, path: str, body: bytes | None = None) -> Any:
        """A request to the HTTP API at ``path`` (POST with ``body``), with ``WOLT_PROMETHEUS_TOKEN`` if set."""
        import urllib.request

        req = urllib.request.Request(self.url + path, data=body, method="GET" if body is None else "POST")
        token = os.environ.get(TOKEN_ENV)
        if token:
            req.add_header("authorization", f"Bearer {token}")
        return req

    def _get(self, path: str) -> dict[str, Any] | None:
        """``data`` of a GET on the HTTP API; None when it cannot be read (the caller has a default)."""
        import urllib.request

        req = self._request(path)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read()).get("data")
        except (OSError, ValueError, AttributeError):
            return None
        return data if isinstance(data, dict) else None

    def run(self, query: Query) -> list[dict[str, Any]]:
        """Send one query; its ``data.result`` list. :class:`SourceError` with a readable reason otherwise."""
        import urllib.error
        import urllib.parse
        import urllib.request

        import orjson

        path = "/api/v1/query_range" if query.kind == "range" else "/api/v1/query"
        body = urllib.parse.urlencode((("query", query.promql), *query.params)).encode()
        req = self._request(path, body)
        req.add_header("content-type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error") or exc.reason
            except ValueError:
                reason = exc.reason
            raise SourceError(
                f"{self.name} rejected a query ({exc.code}: {reason}): {query.promql}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SourceError(
                f"cannot reach {self.name} ({reason}); is it running? Check WOLT_PROMETHEUS_URL "
                "or unset it to monitor from the response log"
            ) from None
        try:
            doc = orjson.loads(raw)  # results are big (a point per step and series): parse fast
        except orjson.JSONDecodeError:
            raise SourceError(
                f"{self.name} did not answer like Prometheus's HTTP API (not JSON): check WOLT_PROMETHEUS_URL"
            ) from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            error = doc.get("error") if isinstance(doc, dict) else doc
            raise SourceError(f"{self.name} failed a query ({error}): {query.promql}")
        return doc["data"]["result"]

    def run_all(self, queries: dict[str, Query]) -> dict[str, list[dict[str, Any]]]:
        """Send every query at once (one thread each); the first failure is raised after all are done."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(queries)), thread_name_prefix="wolt-prom") as pool:
            futures = {name: pool.submit(self.run, q) for name, q in queries.items()}
            return {name: f.result() for name, f in futures.items()}

    # -- the snapshot -----------------------------------------------------------------------------------------
    def snapshot(self, deployment: str, *, since: float, until: float, step: float) -> MonitorData:
        import time

        t0 = time.perf_counter()
        queries = self.queries(deployment, since=since, until=until, step=step)
        results = self.run_all(queries)
        t1 = time.perf_counter()
        start, end, step = _range(since, until, step)
        index = time_index([start + i * step for i in range(round((end - start) / step) + 1)])
        data = _build(deployment, since, until, step, self.name, results, index)
        data.timings = {"queries_s": t1 - t0, "build_s": time.perf_counter() - t1, "queries": len(queries)}
        return data


def _scrapes(target: dict[str, Any], deployment: str) -> bool:
    """Whether an active target of the targets API is a runtime of ``deployment``: a local target's labels
    name it (file_sd); a pod found through the Kubernetes API (a scrape job or a PodMonitor) carries the
    ``app.kubernetes.io/instance`` label the kubernetes target gives its pods, whatever the job relabels."""
    labels, discovered = target.get("labels") or {}, target.get("discoveredLabels") or {}
    return labels.get("deployment_name") == deployment or discovered.get(POD_INSTANCE) == deployment


def _range(since: float, until: float, step: float) -> tuple[float, float, float]:
    """Start, end and step of the range queries: aligned to ``step`` (as the response log's buckets) and
    no more than :data:`MAX_POINTS` points."""
    step = round(max(float(step), (until - since) / (MAX_POINTS - 1), 0.001), 3)
    start = round(math.floor(since / step) * step, 3)  # whole milliseconds, as Prometheus answers
    end = max(start, round(math.floor(until / step) * step, 3))
    return start, end, step


def _value(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _matrix(result: list[dict[str, Any]], key: Any, index: pd.DatetimeIndex) -> pd.DataFrame:
    """A wide frame (a column per ``key(labels)``) from a range result, on ``index``."""
    import numpy as np
    import pandas as pd

    cols: dict[str, Any] = {}
    pos = {round(t.timestamp() * 1000): i for i, t in enumerate(index)}
    for series in result:
        name = key(series.get("metric", {}))
        arr = np.full(len(index), np.nan)
        for ts, val in series.get("values", []):
            i = pos.get(round(float(ts) * 1000))
            if i is not None:
                arr[i] = _value(val)
        cols[name] = arr
    return pd.DataFrame(dict(sorted(cols.items())), index=index, dtype="float64")


def _vector(result: list[dict[str, Any]], key: Any) -> dict[Any, float]:
    return {key(s.get("metric", {})): _value(s.get("value", [0, "NaN"])[1]) for s in result}


def _build(
    deployment: str,
    since: float,
    until: float,
    step: float,
    label: str,
    r: dict[str, list[dict[str, Any]]],
    index: pd.DatetimeIndex,
) -> MonitorData:
    import numpy as np
    import pandas as pd

    def variant(m: dict[str, str]) -> str:
        return m.get("predictor_name", "")

    def pair(m: dict[str, str]) -> str:
        return f"{m.get('shadow', '')} vs {m.get('live', '')}"

    requests = _matrix(r["requests"], variant, index)
    error_rate = _matrix(r["error_rate"], variant, index)
    latency = {k: _matrix(r[k], variant, index) for k in QUANTILES}
    agreement = 1.0 - _matrix(r["disagreement"], pair, index)
    log_health = pd.DataFrame(
        {k: _matrix(r[k], lambda m: "v", index).get("v", np.nan) for k in HEALTH_COLUMNS}, index=index
    )[list(HEALTH_COLUMNS)]

    totals = _vector(r["total_requests"], variant)
    errors = _vector(r["total_errors"], variant)
    live_total = sum(v for v in totals.values() if math.isfinite(v))
    rows = {}
    for v, n in totals.items():
        rows[v] = {
            "shadow": False,
            "requests": n,
            "share": n / live_total if live_total else math.nan,
            "error_rate": errors.get(v, 0.0) / n if n else math.nan,
            "agreement": math.nan,
            **{k: _vector(r[f"total_{k}"], variant).get(v, math.nan) for k in QUANTILES},
        }
    compared = _vector(r["total_compared"], lambda m: m.get("shadow", ""))
    disagreement = _vector(r["total_disagreement"], lambda m: m.get("shadow", ""))
    predictions, shadows = _predictions(r["predictions"])
    shadow_requests = _vector(r["total_shadow_requests"], lambda m: m.get("variant", ""))
    shadow_errors = _vector(r["total_shadow_errors"], lambda m: m.get("variant", ""))
    shadow_latency = {k: _vector(r[f"total_shadow_{k}"], lambda m: m.get("variant", "")) for k in QUANTILES}
    shadow_names = sorted(set(compared) | set(shadows) | set(shadow_requests))
    for s in shadow_names:
        # copies the shadow answered (a runtime without wolt_shadow_request_seconds: the ones compared)
        n = shadow_requests.get(s, compared.get(s, math.nan))
        rows[s] = {
            "shadow": True,
            "requests": n,
            "share": math.nan,
            "error_rate": shadow_errors.get(s, 0.0) / n if s in shadow_requests and n else math.nan,
            "agreement": 1.0 - disagreement.get(s, math.nan),
            **{k: shadow_latency[k].get(s, math.nan) for k in QUANTILES},
        }
    # series exist at 0 from a runtime's start: a variant nothing reached in the window has no row, as in
    # the response log (which has no row to show for it)
    rows = {v: row for v, row in rows.items() if row["requests"] > 0}
    shadow_names = [s for s in shadow_names if s in rows]
    summary = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    summary.index.name = "variant"
    summary = summary.sort_index().astype({"shadow": bool})
    data = MonitorData(
        deployment=deployment,
        since=since,
        until=until,
        step=step,
        source=label,
        requests=requests,
        error_rate=error_rate,
        latency=latency,
        predictions=predictions,
        agreement=agreement,
        log_health=log_health,
        summary=summary,
        shadows=tuple(shadow_names),
    )
    if data.empty:
        data.message = (
            f"{label} has no requests for {deployment!r} in this window: send some traffic, or check that "
            "Prometheus scrapes the deployment (local deployments are listed in <home>/prometheus/targets.json; "
            "a cluster's pods are found through the Kubernetes API by their prometheus.io/scrape annotation)"
        )
    return data


def _predictions(result: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """Per-bucket counts (not cumulative) by variant from ``wolt_predictions_bucket`` increases."""
    import numpy as np
    import pandas as pd

    cum: dict[str, dict[float, float]] = {}
    shadows = set()
    for s in result:
        m = s.get("metric", {})
        name = m.get("variant", "")
        if m.get("shadow") == "true":
            shadows.add(name)
        cum.setdefault(name, {})[_value(m.get("le", "NaN"))] = _value(s["value"][1])
    if not cum:
        return pd.DataFrame(index=pd.Index([], dtype="float64", name="le"), dtype="float64"), []
    edges = sorted({le for d in cum.values() for le in d if not math.isnan(le)})
    cols = {}
    for name, d in sorted(cum.items()):
        c = np.array([d.get(le, np.nan) for le in edges], dtype="float64")
        c = np.maximum.accumulate(np.nan_to_num(c))  # cumulative counts never decrease
        cols[name] = np.diff(c, prepend=0.0)
    return pd.DataFrame(cols, index=pd.Index(edges, name="le"), dtype="float64"), sorted(shadows)
