"""The fast JSON decoder must decode exactly what the general path decodes, and refuse exactly what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wolt_jupyter.serving.tensors as tensors
from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.fastjson import decode

pytest.importorskip("simdjson")  # a dependency: installed wherever the tests run

NUMBER_TYPES = [
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT32",
    "UINT64",
    "BOOL",
]
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.sampled_from(["1.5", "[", "x"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63), st.floats(allow_nan=False, allow_infinity=False)
)


@st.composite
def tensors_(draw) -> dict:
    rows, width = draw(st.integers(0, 4)), draw(st.integers(1, 4))
    leaf = draw(st.sampled_from([numbers, scalars]))
    nested = draw(st.booleans())
    if nested:
        data = [[draw(leaf) for _ in range(width)] for _ in range(rows)]
        if rows and draw(st.integers(0, 4)) == 0:  # ragged, or a list hidden among the numbers
            i = draw(st.integers(0, rows - 1))
            data[i] = draw(st.sampled_from([data[i][:-1], [*data[i][:-1], [1]], [[0], *data[i][1:]]]))
    else:
        data = [draw(leaf) for _ in range(rows * width)]
        if data and draw(st.integers(0, 4)) == 0:
            data[0] = [data[0]]
    shape = draw(st.sampled_from([[rows, width], [rows * width], [rows * width + 1]]))
    return {"name": draw(st.sampled_from(["x", "a[b", "é"])), "shape": shape,
            "datatype": draw(st.sampled_from(NUMBER_TYPES)), "data": data}  # fmt: skip


def _general(body: bytes):
    real = tensors.fast_decode
    tensors.fast_decode = lambda _body: None
    try:
        return _outcome(body)
    finally:
        tensors.fast_decode = real


def _outcome(body: bytes):
    try:
        req = tensors.parse_request(body)
    except ProtocolError as exc:
        return ("refused", exc.status)
    return ("ok", [(t.name, t.datatype, t.array.dtype.str, t.array.shape, t.array.tobytes()) for t in req.inputs],
            req.parameters, req.output_names)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tensors_(), min_size=1, max_size=3, unique_by=lambda t: t["name"]), st.booleans())
def test_the_fast_decoder_agrees_with_the_general_path(inputs, with_extras) -> None:
    doc = {"inputs": inputs}
    if with_extras:
        doc |= {"id": "r[1]", "parameters": {"a": [1, [2]]}, "outputs": [{"name": "y"}]}
    body = json.dumps(doc, ensure_ascii=False).encode()
    assert _outcome(body) == _general(body)


def test_a_plain_request_takes_the_fast_path_and_a_doubtful_one_does_not() -> None:
    data = np.random.default_rng(0).normal(size=(100, 20))
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [100, 20], "datatype": "FP64", "data": data.tolist()}]}
    )
    fast = decode(body.encode())
    assert fast is not None and np.array_equal(fast["inputs"][0]["data"].reshape(100, 20), data)
    for doubtful in (
        b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[[1],2]}]}',  # a hidden list
        b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,[2]],[3,4]]}]}',
        b'{"inputs":[{"name":"x\\u005b","shape":[2],"datatype":"FP32","data":[1,2]}]}',  # an escape
        b'{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}]}',
        b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,null]}]}',
        b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]',
    ):
        assert decode(doubtful) is None
    # and the parser is still usable after all of them
    assert decode(body.encode()) is not None
