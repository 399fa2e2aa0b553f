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


def test_feature_vectors_are_stored_as_fixed_width_bytes_and_read_back_as_lists() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    rows = [
        _row(i, {"x": rng.normal(size=(n, 5)), "k": rng.integers(0, 9, size=(n, 2))}, {})
        for i, n in enumerate([4, 1, 7])
    ]
    rows.append(_row(3, {"x": [[1.0, 2.0]], "k": [[1, 2, 3]]}, {}))  # another width: stays a list column
    table = spread(rows[:3])
    stored = pq.read_table(pa.BufferReader(encode(table)))
    assert pa.types.is_fixed_size_binary(stored.schema.field("input.x").type)
    back = decode(encode(table))
    assert (
        back.schema.names == table.schema.names
        and back.schema.field("input.x").type == table.schema.field("input.x").type
    )
    assert back["input.x"].to_pylist() == [list(v) for r in rows[:3] for v in r["inputs"]["x"]]
    assert decode(encode(table), ["input.k"])["input.k"].to_pylist() == table["input.k"].to_pylist()
    ragged = spread(rows)
    stored = pq.read_table(pa.BufferReader(encode(ragged)))
    assert pa.types.is_list(stored.schema.field("input.x").type)
    assert decode(encode(ragged)).to_pylist() == ragged.to_pylist()


@pytest.mark.parametrize("quick", [True, False])
def test_both_stored_forms_read_back_the_same_with_column_selection(quick: bool) -> None:
    rng = np.random.default_rng(5)
    rows = [
        _row(i, {"x": rng.normal(size=(n, 3)), "s": ["a"] * n}, {"y": rng.random(n)})
        for i, n in enumerate([2, 5])
    ]
    table = spread(rows)
    shared = spread(rows, shared=True)  # the writer's form: text fields as dictionaries
    assert str(shared.schema.field("id").type).startswith("dictionary")
    data = encode(shared, quick=quick)
    assert data[:4] == (b"ARRO" if quick else b"PAR1")
    assert decode(data).schema == table.schema  # plain columns again
    assert decode(data).to_pylist() == table.to_pylist()
    part = decode(data, ["time", "id", "output*"])
    assert part.column_names == ["id", "time", "output.y"]
    assert part.to_pylist() == table.select(["id", "time", "output.y"]).to_pylist()


def test_inputs_a_live_and_a_shadow_record_share_are_stored_once() -> None:
    rng = np.random.default_rng(11)
    rows = []
    for i, n in enumerate([300, 100, 1, 250]):  # more than lz4 can see at once (64 KiB)
        x = {
            "x": rng.normal(size=(n, 20)),
            "k": rng.integers(0, 5, size=n),
        }  # one dict: the runtime shares it
        live, shadow = _row(2 * i, x, {"y": rng.random(n)}), _row(2 * i + 1, x, {"y": rng.random(n)})
        shadow["id"], shadow["shadow"] = live["id"], True
        rows += [live, shadow]
    rows.sort(key=lambda r: r["shadow"])  # shadows answer later: their copies are far from the live ones
    plain, shared = spread(rows), spread(rows, shared=True)
    assert str(shared.schema.field("input.x").type).startswith("dictionary")
    assert len(shared["input.x"].combine_chunks().dictionary) == 651  # each request's rows once
    assert not str(shared.schema.field("output.y").type).startswith("dictionary")  # not shared: plain
    stored = encode(shared, quick=True)
    assert decode(stored).to_pylist() == plain.to_pylist()
    assert len(stored) <= len(encode(plain, quick=True))
