"""The spread: numeric arrays take numpy's path, and it must store exactly what the value-by-value path stores."""

from __future__ import annotations

import numpy as np
import pytest

from wolt_jupyter.responses.columnar import decode, encode, spread


def _row(i: int, inputs: dict, outputs: dict) -> dict:
    return {
        "id": f"r{i}", "time": 1000.0 + i, "deployment": "d", "variant": "main" if i % 3 else "b",
        "model_name": "m", "model_version": "1", "shadow": i % 2 == 1, "inputs": inputs, "outputs": outputs,
        "latency_ms": 1.5, "status": 200, "error": None, "revision": 2,
    }  # fmt: skip


def _as_lists(rows: list[dict]) -> list[dict]:
    def plain(payload: dict) -> dict:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in payload.items()}

    return [{**r, "inputs": plain(r["inputs"]), "outputs": plain(r["outputs"])} for r in rows]


CASES = {
    "matrix float": lambda rng, n: {"x": rng.normal(size=(n, 4))},
    "float32 vector": lambda rng, n: {"x": rng.normal(size=n).astype(np.float32)},
    "int and bool": lambda rng, n: {"k": rng.integers(0, 9, size=n), "flag": rng.random(n) > 0.5},
    "int32 matrix": lambda rng, n: {"k": rng.integers(0, 9, size=(n, 3)).astype(np.int32)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_numeric_arrays_spread_like_lists(case: str) -> None:
    rng = np.random.default_rng(7)
    sizes = [3, 1, 5, 2, 100]
    rows = [
        _row(i, CASES[case](rng, n), {"predict": rng.integers(0, 2, size=n), "note": "x"})
        for i, n in enumerate(sizes)
    ]
    fast = spread(rows)
    slow = spread(_as_lists(rows))
    assert fast.num_rows == sum(sizes)
    assert fast.to_pylist() == slow.to_pylist()  # float32 widens exactly, either way
    assert fast.schema.names == slow.schema.names
    # and the stored form reads back the same
    assert decode(encode(fast)).to_pylist() == fast.to_pylist()
    assert fast["_row"].to_pylist()[:4] == [0, 1, 2, 0]
    assert fast["_rows"].to_pylist()[:4] == [3, 3, 3, 1]


def test_mixed_shapes_and_missing_columns_fall_back_to_values() -> None:
    rng = np.random.default_rng(1)
    rows = [
        _row(0, {"x": rng.normal(size=(2, 3))}, {"y": np.array([1, 2])}),
        _row(1, {"x": rng.normal(size=(2, 4))}, {"y": np.array([0.5, 1.5])}),  # another width, another kind
        _row(2, {"z": rng.normal(size=(3, 3))}, {"y": np.array([1, 2, 3])}),  # x missing: nulls
    ]
    fast = spread(rows)
    slow = spread(_as_lists(rows))
    assert fast.to_pylist() == slow.to_pylist()
    assert fast["input.x"].to_pylist()[-3:] == [None, None, None]
    assert fast["output.y"].to_pylist() == [1.0, 2.0, 0.5, 1.5, 1.0, 2.0, 3.0]
