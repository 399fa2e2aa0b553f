"""The router, as a pure function: split proportions, stickiness, atomic changes, rollback."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.serving.router import BUCKETS, Router, RoutingTable, stable_bucket
from wolt_jupyter.spec import DeploymentSpec


def spec(weights: dict[str, int], sticky: str | None = None, shadow: bool = True) -> DeploymentSpec:
    variants = [
        {"name": n, "model": f"models:/m/{i + 1}", "traffic": w} for i, (n, w) in enumerate(weights.items())
    ]
    if shadow:
        variants.append({"name": "shadow", "model": "models:/m/9", "shadow": True})
    return DeploymentSpec.from_dict(
        {"name": "dep", "variants": variants, "routing": {"sticky_key": sticky} if sticky else {}}
    )


@pytest.mark.parametrize("weights", [{"a": 90, "b": 10}, {"a": 50, "b": 30, "c": 20}, {"a": 1, "b": 99}])
def test_random_split_honours_weights(weights: dict[str, int]) -> None:
    table = RoutingTable.from_spec(spec(weights))
    rng = random.Random(42)
    n = 50_000
    counts = Counter(table.choose(rng=rng) for _ in range(n))
    for name, w in weights.items():
        p = w / 100
        tolerance = 5 * (n * p * (1 - p)) ** 0.5 + 1  # five standard deviations
        assert abs(counts[name] - n * p) <= tolerance, (name, counts)
    assert "shadow" not in counts


def test_zero_weight_variant_never_chosen() -> None:
    table = RoutingTable.from_spec(spec({"a": 100, "b": 0}))
    assert {table.choose(rng=random.Random(i)) for i in range(500)} == {"a"}
    assert {table.choose(key=f"user-{i}") for i in range(500)} == {"a"}


def test_sticky_key_always_same_variant_and_split_holds_over_keys() -> None:
    table = RoutingTable.from_spec(spec({"a": 70, "b": 30}, sticky="user_id"))
    keys = [f"user-{i}" for i in range(20_000)]
    first = [table.choose(key=k) for k in keys]
    assert first == [table.choose(key=k) for k in keys]  # deterministic
    share_b = first.count("b") / len(keys)
    assert abs(share_b - 0.30) < 0.02, share_b


def test_stable_hash_is_process_independent() -> None:
    """Python's hash() is salted per process; the router's must not be."""
    keys = ["alice", "bob", "ünïcode", ""]
    here = [stable_bucket(k) for k in keys]
    code = (
        f"from wolt_jupyter.serving.router import stable_bucket; print([stable_bucket(k) for k in {keys!r}])"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == str(here), out.stderr
    assert all(0 <= b < BUCKETS for b in here)


def test_weight_change_moves_only_keys_whose_bucket_changed_owner() -> None:
    router = Router(spec({"a": 50, "b": 50}, sticky="k"))
    keys = [str(i) for i in range(5000)]
    before = {k: router.table.choose(key=k) for k in keys}
    router.set_traffic({"a": 80, "b": 20})
    after = {k: router.table.choose(key=k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "b" and after[k] == "a" for k in moved)  # b's keys partly move to a, never back
    assert 0.2 < len(moved) / len(keys) < 0.4


def test_changes_swap_a_new_immutable_table_and_rollback_restores() -> None:
    router = Router(spec({"a": 90, "b": 10}))
    t0 = router.table
    t1 = router.set_traffic({"a": 40, "b": 60})
    assert router.table is t1 and t1 is not t0
    assert t0.weights == {"a": 90, "b": 10}  # the old table is untouched: in-flight requests keep it
    assert t1.weights == {"a": 40, "b": 60} and t1.generation == t0.generation + 1
    t2 = router.promote("b")
    assert t2.live == ("b",) and t2.shadows == ("shadow",)
    assert router.rollback().weights == {"a": 40, "b": 60}
    assert router.rollback().weights == {"a": 90, "b": 10}
    with pytest.raises(InvalidArgument, match="nothing to roll back"):
        router.rollback()


@pytest.mark.parametrize(
    "weights", [{"a": 50, "b": 10}, {"a": 101}, {"nope": 100}, {"shadow": 100}, {"a": "50", "b": 50}, {}]
)
def test_bad_traffic_is_refused_and_table_unchanged(weights: dict) -> None:
    router = Router(spec({"a": 90, "b": 10}))
    before = router.table
    with pytest.raises(InvalidArgument):
        router.set_traffic(weights)
    assert router.table is before


def test_promote_shadow_makes_it_the_only_live_variant() -> None:
    router = Router(spec({"a": 90, "b": 10}))
    t = router.promote("shadow")
    assert t.live == ("shadow",) and t.shadows == () and t.choose() == "shadow"
