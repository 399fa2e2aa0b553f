"""gRPC inference.GRPCInferenceService against the runtime process, with tritonclient.grpc unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from serving_support import FEATURES
from tritonclient.utils import InferenceServerException


def expected(model, x) -> list[int]:
    return model.predict(pd.DataFrame(np.asarray(x, dtype=float), columns=FEATURES)).tolist()


@pytest.fixture
def client(ab):
    assert ab.grpc is not None, "the runtime was started without --grpc-port (is grpcio installed?)"
    c = grpcclient.InferenceServerClient(ab.grpc)
    yield c
    c.close()


def test_descriptor_matches_the_standard_one() -> None:
    """Our hand-built messages have the field numbers and types of tritonclient's generated ones."""
    from tritonclient.grpc import service_pb2

    from wolt_jupyter.serving.grpc_service import MESSAGES

    for full, cls in MESSAGES.items():
        parent, _, nested = full.partition(".")
        theirs = service_pb2.DESCRIPTOR.message_types_by_name[parent]
        if nested:
            theirs = theirs.nested_types_by_name[nested]
        for f in cls.DESCRIPTOR.fields:
            t = theirs.fields_by_name[f.name]
            assert (t.number, t.type) == (f.number, f.type), (full, f.name)


def test_health_and_metadata(ab, client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(ab.name) and client.is_model_ready(ab.name, "strings")
    meta = client.get_model_metadata(ab.name, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == FEATURES and "challenger" in meta["versions"]
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


def test_infer_raw_tensors_matches_the_model(ab, client, model_store) -> None:
    x = np.random.default_rng(5).normal(size=(6, 4))
    for variant, model in (("main", model_store.lr_v1), ("challenger", model_store.lr_v2)):
        inp = grpcclient.InferInput("x", list(x.shape), "FP64")
        inp.set_data_from_numpy(x)
        result = client.infer(ab.name, [inp], model_version=variant, request_id="g-1")
        assert result.as_numpy("predict").tolist() == expected(model, x)
        response = result.get_response(as_json=True)
        assert response["id"] == "g-1" and response["model_version"] == variant
        assert response["parameters"]["variant"]["string_param"] == variant
    city = grpcclient.InferInput("city", [2], "BYTES")
    city.set_data_from_numpy(np.array([b"oslo", b"bergen"], dtype=object))
    n = grpcclient.InferInput("n", [2, 1], "INT64")
    n.set_data_from_numpy(np.array([[1], [2]], dtype=np.int64))
    result = client.infer(ab.name, [city, n], model_version="strings")
    assert result.as_numpy("length").tolist() == [5, 8]
    assert result.as_numpy("upper").tolist() == [b"OSLO", b"BERGEN"]


def test_routed_infer_names_the_variant(ab, client) -> None:
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    seen = {client.infer(ab.name, [inp]).get_response(as_json=True)["model_version"] for _ in range(60)}
    assert seen <= {"main", "challenger"} and "main" in seen


@pytest.mark.parametrize(
    ("version", "shape", "datatype", "match"),
    [
        ("nope", [1, 4], "FP64", "no variant"),
        ("main", [1, 3], "FP64", "expected"),
        ("main", [1, 4], "BYTES", "column"),
        ("broken", [1, 4], "FP64", "boom"),
    ],
)
def test_errors_map_to_grpc_status(ab, client, version, shape, datatype, match) -> None:
    inp = grpcclient.InferInput("x", shape, datatype)
    data = np.zeros(shape, dtype=object if datatype == "BYTES" else np.float64)
    if datatype == "BYTES":
        data[:] = b"a"
    inp.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException, match=match) as info:
        client.infer(ab.name, [inp], model_version=version)
    want = {"nope": "NOT_FOUND", "broken": "INTERNAL"}.get(version, "INVALID_ARGUMENT")
    assert want in info.value.status()


def test_any_infer_message_decodes_or_is_a_400() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from wolt_jupyter.serving import ProtocolError
    from wolt_jupyter.serving.grpc_service import MESSAGES, decode

    datatypes = st.sampled_from(["FP64", "FP32", "INT64", "INT8", "BOOL", "BYTES", "FP16", "x", ""])
    tensors = st.tuples(
        st.sampled_from(["a", "b", ""]),
        datatypes,
        st.lists(st.integers(0, 4), max_size=3),
        st.lists(st.floats(allow_nan=False, width=32), max_size=6),
    )

    @settings(max_examples=200, deadline=None)
    @given(
        tensors=st.lists(tensors, max_size=3), raw=st.none() | st.lists(st.binary(max_size=24), max_size=3)
    )
    def check(tensors, raw) -> None:
        msg = MESSAGES["ModelInferRequest"](model_name="m")
        for name, datatype, shape, values in tensors:
            t = msg.inputs.add(name=name, datatype=datatype, shape=shape)
            t.contents.fp32_contents.extend(values)
        if raw is not None:
            msg.raw_input_contents.extend(raw)
        try:
            req = decode(msg)
        except ProtocolError as exc:
            assert exc.status == 400 and exc.message
        else:
            assert all(t.array.shape == t.shape for t in req.inputs)

    check()
