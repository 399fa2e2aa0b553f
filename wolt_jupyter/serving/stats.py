"""Per-variant inference statistics in the shape of Triton's statistics extension.

The fields are those of Triton's ``model_statistics`` extension (``docs/protocol/extension_statistics.md`` of
triton-inference-server/server), the REST and gRPC forms alike: ``inference_count`` counts rows,
``execution_count`` model executions (one micro-batch is one), ``inference_stats`` holds ``{count, ns}``
durations for successes, failures, queueing and compute, ``batch_stats`` the executions per batch size.
Here ``version`` is the variant; shadow predictions count for the shadow variant.
"""

from __future__ import annotations

from typing import Any

_NS = 1_000_000_000
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
             "cache_miss")  # fmt: skip


class VariantStats:
    """Counters for one variant. Each instance is written by one thread at a time (the event loop for a live
    variant, its worker for a shadow); a read takes the data plane's lock only to copy."""

    __slots__ = ("batches", "durations", "execution_count", "inference_count", "last_inference_ms")

    def __init__(self) -> None:
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.durations = {k: [0, 0] for k in DURATIONS}  # name -> [count, ns]
        self.batches: dict[int, list[int]] = {}  # batch size (requests) -> [executions, compute ns]

    def _add(self, key: str, seconds: float, count: int = 1) -> None:
        d = self.durations[key]
        d[0] += count
        d[1] += int(seconds * _NS)

    def batch(self, requests: int, rows: int, seconds: float) -> None:
        """One model execution over ``requests`` requests holding ``rows`` rows."""
        self.execution_count += 1
        self.inference_count += rows
        self._add("compute_infer", seconds, requests)
        b = self.batches.setdefault(requests, [0, 0])
        b[0] += 1
        b[1] += int(seconds * _NS)

    def queued(self, seconds: float) -> None:
        self._add("queue", max(seconds, 0.0))

    def done(self, ok: bool, seconds: float, now: float) -> None:
        """A request answered (end to end inside the runtime)."""
        self._add("success" if ok else "fail", seconds)
        self.last_inference_ms = int(now * 1000)

    def shadow(self, ok: bool, seconds: float, now: float) -> None:
        """A shadow copy predicted (alone) by this variant's worker."""
        if ok:
            self.execution_count += 1
            self._add("compute_infer", seconds)
        self.done(ok, seconds, now)

    def doc(self, model: str, variant: str) -> dict[str, Any]:
        return {
            "name": model,
            "version": variant,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in self.durations.items()},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": n, "ns": 0},
                    "compute_infer": {"count": n, "ns": ns},
                    "compute_output": {"count": n, "ns": 0},
                }
                for size, (n, ns) in sorted(self.batches.items())
            ],
        }
