"""Routing: which live variant answers a request, and which shadows get a copy. Pure: no I/O, no models.

The current routing is one immutable :class:`RoutingTable`; a traffic change, promotion or rollback builds a
new table and swaps a single reference. A request reads the reference once, so it is routed entirely by the
old table or entirely by the new one, and nothing in flight can fail because of the change.

Sticky routing hashes the key with BLAKE2b (stable across processes and restarts, unlike ``hash``) into one of
10,000 buckets laid out in variant order by weight. Over many keys the buckets give the weights; one key
always lands in the same bucket, and when weights change only the keys whose bucket changed owner move.
"""

from __future__ import annotations

import hashlib
import random
import threading
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import DeploymentSpec
from wolt_jupyter.untrusted import shown_value

BUCKETS = 10_000
ROUTE_KEY_HEADER = "x-wolt-route-key"  # the sticky key, when not in the request's parameters
VARIANT_HEADER = "x-wolt-variant"  # names the variant that answered (REST header, gRPC trailing metadata)
RETRIED_HEADER = "x-wolt-retried-from"  # the challenger the champion answered for (REST header)


def stable_bucket(key: str) -> int:
    """A bucket in ``[0, BUCKETS)`` that depends only on ``key``."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class RoutingTable:
    """One immutable routing decision table, built from a validated spec."""

    spec: DeploymentSpec
    live: tuple[str, ...]
    bounds: tuple[int, ...]  # cumulative upper bucket bound of each live variant
    shadows: tuple[str, ...]
    sticky_key: str | None
    generation: int = 0

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, generation: int = 0) -> RoutingTable:
        spec.validate()
        live = tuple(v for v in spec.live if v.traffic > 0)
        bounds, acc = [], 0
        for v in live:
            acc += v.traffic * (BUCKETS // 100)
            bounds.append(acc)
        return cls(
            spec=spec,
            live=tuple(v.name for v in live),
            bounds=tuple(bounds),
            shadows=tuple(v.name for v in spec.shadows),
            sticky_key=spec.routing.sticky_key,
            generation=generation,
        )

    @property
    def weights(self) -> dict[str, int]:
        return {v.name: v.traffic for v in self.spec.live}

    def variant_for_bucket(self, bucket: int) -> str:
        return self.live[bisect_right(self.bounds, bucket)]

    def choose(self, key: str | None = None, rng: random.Random | None = None) -> str:
        """The live variant for one request: by ``key`` when given (sticky), else at random by weight."""
        if len(self.live) == 1:
            return self.live[0]
        if key is not None:
            return self.variant_for_bucket(stable_bucket(key))
        r = (rng or random).random()
        return self.variant_for_bucket(int(r * BUCKETS))

    def names(self) -> set[str]:
        return {v.name for v in self.spec.variants}


class Router:
    """Holds the current table and the history that rollback restores; changes are atomic swaps."""

    def __init__(self, spec: DeploymentSpec, history_limit: int = 50) -> None:
        self.table = RoutingTable.from_spec(spec)
        self._history: list[RoutingTable] = []
        self._limit = history_limit
        self._lock = threading.Lock()  # serialises admin changes, never taken by the request path

    def _apply(self, spec: DeploymentSpec) -> RoutingTable:
        with self._lock:
            new = RoutingTable.from_spec(spec, self.table.generation + 1)
            self._history.append(self.table)
            del self._history[: -self._limit]
            self.table = new  # the one atomic step
            return new

    def replace(self, spec: DeploymentSpec) -> RoutingTable:
        """Route by a whole new (validated) spec; rollback restores the current one."""
        return self._apply(spec)

    def set_traffic(self, weights: Mapping[str, int]) -> RoutingTable:
        if not isinstance(weights, Mapping) or not weights:
            raise InvalidArgument(
                "traffic needs a mapping of live variant name -> weight, e.g. {'main': 90, 'b': 10}"
            )
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int):
                raise InvalidArgument(
                    f"weight of {shown_value(name)} must be a whole number, got {shown_value(w)}"
                )
        return self._apply(self.table.spec.with_traffic(weights))

    def promote(self, variant: str) -> RoutingTable:
        return self._apply(self.table.spec.promoted(variant))

    def rollback(self) -> RoutingTable:
        with self._lock:
            if not self._history:
                raise InvalidArgument("nothing to roll back: the routing has not been changed since start")
            previous = self._history.pop()
            self.table = RoutingTable.from_spec(previous.spec, self.table.generation + 1)
            return self.table
