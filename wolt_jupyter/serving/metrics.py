"""A tiny Prometheus text-format registry for the hot path.

Why not ``prometheus_client``: each observation there takes a lock and walks label validation; here an
observation is a dict lookup and a bisect. Each label set is written by one thread (the event loop, or one
shadow worker), and the GIL keeps a scrape consistent enough for counters that only grow.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

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

    def render(self) -> bytes:
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.render())
        return ("\n".join(lines) + "\n").encode("utf-8")
