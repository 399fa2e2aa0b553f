"""The V2 tensor codec: JSON and binary tensors in, JSON and binary tensors out, 400 for anything wrong."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.tensors import DTYPES, encode_response, parse_request


def doc(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


@pytest.mark.parametrize("datatype", [d for d in DTYPES if d not in ("BYTES", "BOOL")])
def test_numeric_datatypes_flat_and_nested(datatype: str) -> None:
    for data in ([1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]):
        req = parse_request(doc({"name": "x", "shape": [2, 3], "datatype": datatype, "data": data}))
        arr = req.inputs[0].array
        assert arr.shape == (2, 3) and arr.dtype == DTYPES[datatype]
        assert arr.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_bool_and_bytes() -> None:
    req = parse_request(
        doc(
            {"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "s", "shape": [2, 1], "datatype": "BYTES", "data": [["x"], ["yz"]]},
        )
    )
    assert req.inputs[0].array.tolist() == [True, False]
    assert req.inputs[1].array.reshape(-1).tolist() == ["x", "yz"]


def test_id_echoed_or_generated() -> None:
    one = {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}
    assert parse_request(doc(one, id="req-7")).id == "req-7"
    a, b = parse_request(doc(one)).id, parse_request(doc(one)).id
    assert a != b and len(a) == 36


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", "inputs"),
        (doc({"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2]}), "needs 3 elements"),
        (doc({"name": "x", "shape": [2], "datatype": "FP64", "data": ["a", "b"]}), "strings"),
        (doc({"name": "x", "shape": [2], "datatype": "FP64", "data": ["1.5", "2"]}), "strings"),
        (doc({"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}), "floats"),
        (doc({"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}), "out of range"),
        (doc({"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}), "datatype"),
        (doc({"name": "x", "shape": [-1], "datatype": "FP64", "data": [1]}), "shape"),
        (doc({"name": "x", "shape": [2], "datatype": "FP64", "data": [[1], [2, 3]]}), "ragged"),
        (doc({"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}), "strings"),
        (doc({"name": "x", "shape": [1], "datatype": "FP64"}), "neither"),
        (doc({"name": "x", "shape": [1], "datatype": "FP64", "data": [None]}), "nulls"),
    ],
)
def test_bad_requests_are_400_with_a_reason(body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        parse_request(body)
    assert info.value.status == 400


def test_binary_extension_round_trip() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    strings = [b"ab", "é".encode()]
    raw_s = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    header = doc(
        {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw_s)}},
    )
    req = parse_request(header + x.tobytes() + raw_s, len(header))
    np.testing.assert_array_equal(req.inputs[0].array, x)
    assert req.inputs[1].array.tolist() == ["ab", "é"]
    with pytest.raises(ProtocolError, match="runs past"):
        parse_request(header + x.tobytes(), len(header))
    with pytest.raises(ProtocolError, match="belong to no input"):
        parse_request(header + x.tobytes() + raw_s + b"xx", len(header))


def test_encode_binary_outputs_on_request() -> None:
    out = [("p", np.array([1.5, 2.5])), ("s", np.array(["a", "bc"], dtype=object))]
    body, hl = encode_response(
        model_name="m", model_version="v", req_id="i", outputs=out, parameters={}, binary_outputs={"p"}
    )
    head = json.loads(body[:hl])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert "data" not in head["outputs"][0] and head["outputs"][1]["data"] == ["a", "bc"]
    np.testing.assert_array_equal(np.frombuffer(body[hl:], "<f8"), [1.5, 2.5])
    body, hl = encode_response(model_name="m", model_version="v", req_id="i", outputs=out, parameters={})
    assert hl is None and json.loads(body)["outputs"][0]["data"] == [1.5, 2.5]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
tensor_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=4) | st.integers(),
        "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
        "datatype": st.sampled_from([*DTYPES, "FP128", ""]) | json_values,
        "data": json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 40)})
        | json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=64),
        st.builds(lambda d: json.dumps(d).encode(), json_values),
        st.builds(lambda ins: json.dumps({"inputs": ins}).encode(), st.lists(tensor_like, max_size=3)),
    ),
    header_length=st.none() | st.integers(-5, 80),
)
def test_any_body_parses_or_is_a_400(body: bytes, header_length: int | None) -> None:
    try:
        req = parse_request(body, header_length)
    except ProtocolError as exc:
        assert exc.status == 400 and exc.message
    else:
        assert req.inputs and all(t.array.shape == t.shape for t in req.inputs)


def test_request_ids_are_version_4_uuids_unique_across_a_fork() -> None:
    import os
    import uuid

    from wolt_jupyter.serving.tensors import new_request_id

    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in list(ids)[:100])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not repeat the parent's sequence
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read), os.close(write)
    assert child != new_request_id()
    assert uuid.UUID(child).version == 4
