"""A tiny Prometheus text-format registry for the hot path.

Why not ``prometheus_client``: each observation there takes a lock and walks label validation; here an
observation is a dict lookup and a bisect. Each label set is written by one thread (the event loop, or one
shadow worker), and the GIL keeps a scrape consistent enough for counters that only grow.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VALUE_BUCKETS = (
    -1000.0,
    -100.0,
    -10.0,
    -1.0,
    0.0,
    0.1,
    0.25,
    0.5,
    0.75,
    0.9,
    1.0,
    2.0,
    5.0,
    10.0,
    100.0,
    1000.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _esc(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if isinstance(x, float):
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.label_names = name, doc, labels

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, doc, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, labels: tuple[str, ...] = ()) -> float:
        return self.values.get(labels, 0)

    def touch(self, labels: tuple[str, ...]) -> None:
        """Make the series exist (at 0) without counting anything."""
        self.values.setdefault(labels, 0)

    def render(self) -> list[str]:
        lines = self.header()
        for lv, v in list(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, lv)} {_num(float(v))}")
        return lines


class Gauge(Counter):
    """A value set directly, or computed at scrape time by ``func`` (e.g. a queue depth)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...] = (),
        func: Callable[[], Iterable[tuple[tuple[str, ...], float]]] | None = None,
        kind: str = "gauge",
    ) -> None:
        super().__init__(name, doc, labels)
        self.func = func
        self.kind = kind  # "counter" for a total read from elsewhere at scrape time

    def set(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = value

    def render(self) -> list[str]:
        if self.func is not None:
            for lv, v in self.func():
                self.values[lv] = v
        return super().render()


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS
    ):
        super().__init__(name, doc, labels)
        self.buckets = tuple(float(b) for b in buckets)
        # label values -> [count per bucket (non-cumulative, last is +Inf), sum]
        self.series: dict[tuple[str, ...], list] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [[0] * (len(self.buckets) + 1), 0.0]
        s[0][bisect_left(self.buckets, value)] += 1
        s[1] += value

    def observe_many(self, labels: tuple[str, ...], values: Any) -> None:
        """``observe`` for every value of a numeric numpy array at once (a 100-row prediction is one call,
        not a hundred): the same buckets, by ``searchsorted`` and ``bincount``."""
        import numpy as np

        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size < 32:  # numpy's per-call overhead is more than a few bisects
            for v in values.tolist():
                self.observe(labels, v)
            return
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [[0] * (len(self.buckets) + 1), 0.0]
        added = np.bincount(np.searchsorted(self.buckets, values), minlength=len(self.buckets) + 1)
        counts = s[0]
        for i in np.flatnonzero(added).tolist():
            counts[i] += int(added[i])
        s[1] += float(values.sum())

    def touch(self, labels: tuple[str, ...]) -> None:
        """Make the series exist (every bucket at 0) without observing anything."""
        if labels not in self.series:
            self.series[labels] = [[0] * (len(self.buckets) + 1), 0.0]

    def count(self, labels: tuple[str, ...]) -> int:
        s = self.series.get(labels)
        return sum(s[0]) if s else 0

    def render(self) -> list[str]:
        lines = self.header()
        for lv, (counts, total) in list(self.series.items()):
            acc = 0
            for b, c in zip((*self.buckets, math.inf), list(counts), strict=False):
                acc += c
                le = 'le="' + _num(b) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, lv, le)} {acc}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, lv)} {_num(float(total))}")
            lines.append(f"{self.name}_count{_labels(self.label_names, lv)} {acc}")
        return lines


M = TypeVar("M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: M) -> M:
        self.metrics.append(metric)
        return metric

    def get(self, name: str) -> _Metric | None:
        """The metric called ``name``, or None."""
        return next((m for m in self.metrics if m.name == name), None)

    def render(self) -> bytes:
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.render())
        return ("\n".join(lines) + "\n").encode("utf-8")


# -- the runtime's series that the monitoring panel reads ------------------------------------------------------
SELDON_SECONDS = "seldon_api_executor_server_requests_seconds"
SHADOW_SECONDS = "wolt_shadow_request_seconds"
# codes a live variant's request is counted under once it reached the variant: 200; 400 (an output the request
# named does not exist); 500 (the model failed, or its output cannot be encoded)
SERVED_CODES = ("200", "400", "500")
# requests refused before the model answered, counted with blank model labels: 400 (a body that does not
# decode, or input the model rejects as the request's fault)
REFUSED_CODES = ("400",)
SHADOW_CODES = ("200", "500")


def add_shadow_latency(registry: Registry) -> Histogram:
    """``wolt_shadow_request_seconds``: each shadow copy's predict time and outcome (``code`` 200 or 500).

    Shadows are kept out of the Seldon-compatible series on purpose: those mean live traffic, what a client
    was answered, on local runtimes and on Seldon Core alike."""
    return registry.add(
        Histogram(
            SHADOW_SECONDS,
            "Shadow copy predict latency in seconds, by outcome (shadows answer nobody)",
            ("deployment", "variant", "model_name", "model_version", "code"),
        )
    )


class _Adapter(Protocol):
    model_name: str
    model_version: str


class _Variant(Protocol):
    name: str
    model: str
    shadow: bool


class _Spec(Protocol):
    @property
    def variants(self) -> Sequence[_Variant]: ...


def prime_series(
    registry: Registry, deployment: str, spec: _Spec, models: Mapping[str, _Adapter] | None = None
) -> None:
    """Create, at 0, every labelled series a request to ``spec`` can touch: each live variant by the codes it
    answers, each shadow, each (shadow, live) comparison pair.

    Why: a series born at its first request is first scraped with that request already counted, and
    ``increase()``/``rate()`` have no earlier sample to measure the jump from, so a burst right after a deploy
    or a traffic change showed as nothing. Call it before the runtime takes traffic and after every routing or
    model change; series that exist already are left as they are. Model labels come from the loaded adapter,
    else from the pinned ``models:/NAME/VERSION`` URI (the same rule the adapter follows)."""
    from wolt_jupyter.serving.models import _name_version

    models = models or {}

    def model_labels(v: _Variant) -> tuple[str, str]:
        adapter = models.get(v.name)
        return (adapter.model_name, adapter.model_version) if adapter is not None else _name_version(v.model)

    def metric(name: str) -> Any:
        return registry.get(name) or _Nothing()

    seldon, shadow_seconds = metric(SELDON_SECONDS), metric(SHADOW_SECONDS)
    predictions, batch = metric("wolt_predictions"), metric("wolt_batch_requests")
    model_errors, shadow_errors = metric("wolt_model_errors_total"), metric("wolt_shadow_errors_total")
    timeouts, queue_full = metric("wolt_model_timeouts_total"), metric("wolt_variant_queue_full_total")
    shadow_drops = metric("wolt_shadow_dropped_total")
    pairs = (metric("wolt_shadow_comparisons_total"), metric("wolt_shadow_disagreements_total"))
    live = [v for v in spec.variants if not v.shadow]
    for v in live:
        name, version = model_labels(v)
        for code in SERVED_CODES:
            seldon.touch((deployment, v.name, name, version, code))
        for code in REFUSED_CODES:
            seldon.touch((deployment, v.name, "", "", code))
        predictions.touch((deployment, v.name, "false"))
        batch.touch((deployment, v.name))
        model_errors.touch((deployment, v.name))
        timeouts.touch((deployment, v.name))
        queue_full.touch((deployment, v.name))
    for s in (v for v in spec.variants if v.shadow):
        name, version = model_labels(s)
        for code in SHADOW_CODES:
            shadow_seconds.touch((deployment, s.name, name, version, code))
        predictions.touch((deployment, s.name, "true"))
        shadow_errors.touch((deployment, s.name))
        shadow_drops.touch((deployment, s.name))
        for v in live:
            for counter in pairs:
                counter.touch((deployment, s.name, v.name))


class _Nothing:
    """Stands in for a metric this registry does not declare (a trimmed registry in a benchmark)."""

    def touch(self, labels: tuple[str, ...]) -> None:
        pass
