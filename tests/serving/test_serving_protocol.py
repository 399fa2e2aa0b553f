"""V2 protocol conformance over real HTTP against a runtime process serving models from a real MLflow store."""

from __future__ import annotations

import http.client
import json
import socket
import time
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import FEATURES, row_doc


def expected(model, rows) -> list[int]:
    return model.predict(pd.DataFrame(np.asarray(rows, dtype=float), columns=FEATURES)).tolist()


def test_health_and_server_metadata(ab) -> None:
    assert ab.get("/v2/health/live")[0] == 200
    status, _, body = ab.get("/v2/health/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    meta = json.loads(ab.get("/v2")[2])
    assert meta["name"] == "wolt-jupyter" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_lists_signature(ab) -> None:
    status, _, body = ab.get(f"/v2/models/{ab.name}")
    meta = json.loads(body)
    assert status == 200 and meta["name"] == ab.name
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["outputs"][0]["datatype"] == "INT64"
    assert set(meta["versions"]) == {
        "main",
        "challenger",
        "broken",
        "strings",
        "pipe",
        "tensor",
        "nosig",
        "shadow",
    }
    strings = json.loads(ab.get(f"/v2/models/{ab.name}/versions/strings")[2])
    assert [(i["name"], i["datatype"]) for i in strings["inputs"]] == [("city", "BYTES"), ("n", "INT64")]
    assert ab.get(f"/v2/models/{ab.name}/ready")[0] == 200
    assert ab.get(f"/v2/models/{ab.name}/versions/main/ready")[0] == 200


def test_infer_matches_the_registered_model(ab, model_store) -> None:
    rows = np.random.default_rng(1).normal(size=(7, 4)).round(3).tolist()
    for variant, model in (("main", model_store.lr_v1), ("challenger", model_store.lr_v2)):
        status, doc, headers = ab.infer(row_doc(rows, id="req-1"), variant=variant)
        assert status == 200, doc
        assert doc["id"] == "req-1" and doc["model_name"] == ab.name
        assert doc["parameters"]["variant"] == variant and headers["x-wolt-variant"] == variant
        out = doc["outputs"][0]
        assert out["datatype"] == "INT64" and out["shape"] == [7]
        assert out["data"] == expected(model, rows)


def test_model_needing_column_names_keeps_the_dataframe_path(ab, model_store) -> None:
    rows = np.random.default_rng(2).normal(size=(5, 4)).round(3).tolist()
    status, doc, _ = ab.infer(row_doc(rows), variant="pipe")
    assert status == 200, doc
    assert doc["outputs"][0]["data"] == expected(model_store.pipe, rows)


def test_tensor_signature_and_no_signature_models(ab, model_store) -> None:
    rows = np.random.default_rng(4).normal(size=(3, 4)).round(3).tolist()
    want = expected(model_store.lr_v1, rows)
    meta = json.loads(ab.get(f"/v2/models/{ab.name}/versions/tensor")[2])
    assert meta["inputs"][0]["shape"] == [-1, 4] and meta["inputs"][0]["datatype"] == "FP64"
    for variant in ("tensor", "nosig"):
        status, doc, _ = ab.infer(row_doc(rows), variant=variant)
        assert status == 200 and doc["outputs"][0]["data"] == want, (variant, doc)
    three = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [0.0] * 6}]}
    status, doc, _ = ab.infer(three, variant="tensor")
    assert status == 400 and "[-1, 4]" in doc["error"]
    cols = np.asarray(rows).T  # no signature: one tensor per column becomes a DataFrame with those names
    inputs = [
        {"name": f, "shape": [3], "datatype": "FP64", "data": cols[i].tolist()}
        for i, f in enumerate(FEATURES)
    ]
    status, doc, _ = ab.infer({"inputs": inputs}, variant="nosig")
    assert status == 200 and doc["outputs"][0]["data"] == want, doc


def test_one_tensor_per_column_flat_or_column_shaped(ab, model_store) -> None:
    rows = [[0.5, -1.0, 2.0, 0.1], [1.5, 0.2, -0.3, 2.0]]
    cols = np.asarray(rows).T
    inputs = [
        {
            "name": f,
            "shape": [2] if i % 2 else [2, 1],
            "datatype": "FP32" if i == 0 else "FP64",
            "data": cols[i].tolist(),
        }
        for i, f in enumerate(FEATURES)
    ]
    status, doc, _ = ab.infer({"inputs": inputs}, variant="main")
    assert status == 200, doc
    assert doc["outputs"][0]["data"] == expected(model_store.lr_v1, rows)
    assert len(doc["id"]) == 36  # generated when absent


def test_bytes_tensors_and_dataframe_outputs(ab) -> None:
    status, doc, _ = ab.infer(
        {
            "inputs": [
                {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["oslo", "lisboa"]},
                {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [[1], [10]]},
            ]
        },
        variant="strings",
    )
    assert status == 200, doc
    outs = {o["name"]: o for o in doc["outputs"]}
    assert outs["length"]["data"] == [5, 16] and outs["upper"]["data"] == ["OSLO", "LISBOA"]
    assert outs["upper"]["datatype"] == "BYTES"


def test_requested_outputs_are_selected(ab) -> None:
    body = {
        "inputs": [
            {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["a"]},
            {"name": "n", "shape": [1], "datatype": "INT64", "data": [1]},
        ],
        "outputs": [{"name": "upper"}],
    }
    status, doc, _ = ab.infer(body, variant="strings")
    assert status == 200 and [o["name"] for o in doc["outputs"]] == ["upper"]
    body["outputs"] = [{"name": "nope"}]
    status, doc, _ = ab.infer(body, variant="strings")
    assert status == 400 and "nope" in doc["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v2/models/other/infer", None, 404, "unknown model"),
        ("/v2/models/{m}/versions/nope/infer", None, 404, "no variant"),
        ("/v2/models/{m}/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/{m}/infer", {}, 400, "inputs"),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2]}]},
            400,
            "needs 4",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            400,
            "expected",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]},
            400,
            "column",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": ["a", "b"]}]},
            400,
            "strings",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "f0", "shape": [1], "datatype": "FP64", "data": [1]}]},
            400,
            "missing input 'f1'",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "x", "shape": [0, 4], "datatype": "FP64", "data": []}]},
            400,
            "no rows",
        ),
        ("/v2/models/{m}/versions/main", None, 200, ""),
        ("/v2/nothing", None, 404, "no route"),
        # a stored id must fit the response log (256 characters made a PostgreSQL batch fail)
        ("/v2/models/{m}/infer", row_doc([[1, 2, 3, 4]], id="x" * 129), 400, "at most 128"),
        ("/v2/models/{m}/infer", row_doc([[1, 2, 3, 4]], id="x" * 128), 200, ""),
    ],
)
def test_errors_are_4xx_json_with_a_reason(ab, path, body, status, needle) -> None:
    path = path.replace("{m}", ab.name)
    if body is None and path.endswith("/infer"):
        body = row_doc([[1, 2, 3, 4]])
    if body is None:
        got, _, raw = ab.get(path)
    else:
        got, _, raw = ab.post(path, body)
    assert got == status, raw
    if status >= 400:
        assert needle in json.loads(raw)["error"]


def test_get_on_infer_is_405(ab) -> None:
    assert ab.get(f"/v2/models/{ab.name}/infer")[0] == 405


def test_body_over_the_limit_is_413(ab) -> None:
    rows = np.zeros((5000, 4)).tolist()  # ~100 kB of JSON; the fixture limits bodies to 200 kB
    assert ab.infer(row_doc(rows), variant="main")[0] == 200
    status, doc, _ = ab.infer(row_doc(np.zeros((20000, 4)).tolist()), variant="main")
    assert status == 413 and "200000" in doc["error"]


def test_model_that_raises_is_500_and_counted(ab) -> None:
    def errors() -> float:
        for line in ab.metrics().splitlines():
            if line.startswith('wolt_model_errors_total{deployment="ab-test",variant="broken"}'):
                return float(line.split()[-1])
        return 0.0

    before = errors()
    status, doc, _ = ab.infer(row_doc([[1, 2, 3, 4]]), variant="broken")
    assert status == 500 and "boom: cannot score 1 rows" in doc["error"]
    assert errors() == before + 1
    assert 'code="500"' in ab.metrics()
    assert ab.infer(row_doc([[1, 2, 3, 4]]), variant="main")[0] == 200  # the server is fine


def test_keep_alive_and_pipelining_answer_in_order(ab, model_store) -> None:
    u = urlparse(ab.url)
    rows = [[[float(i), 0.0, -float(i), 1.0]] for i in range(-3, 4)]
    raw = b""
    for i, r in enumerate(rows):
        body = json.dumps(row_doc(r, id=f"p{i}")).encode()
        raw += (
            f"POST /v2/models/{ab.name}/versions/main/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(raw)  # all requests in one write: the server must answer each, in order
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b'"id":"p') < len(rows) and time.monotonic() < deadline:
            data += s.recv(65536)
    ids = [chunk.split(b'"', 1)[0].decode() for chunk in data.split(b'"id":"')[1:]]
    assert ids == [f"p{i}" for i in range(len(rows))]
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    for r in rows:
        conn.request("POST", f"/v2/models/{ab.name}/versions/main/infer", json.dumps(row_doc(r)))
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["outputs"][0]["data"] == expected(model_store.lr_v1, r)
    conn.close()


def test_tritonclient_http_unchanged(ab, model_store) -> None:
    """tritonclient's defaults: binary input tensors and binary outputs."""
    import tritonclient.http as tc

    client = tc.InferenceServerClient(urlparse(ab.url).netloc)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(ab.name)
        meta = client.get_model_metadata(ab.name)
        assert [i["name"] for i in meta["inputs"]] == FEATURES
        x = np.random.default_rng(3).normal(size=(5, 4))
        inp = tc.InferInput("x", list(x.shape), "FP64")
        inp.set_data_from_numpy(x)  # binary by default
        result = client.infer(ab.name, [inp], model_version="main", request_id="t-1")
        np.testing.assert_array_equal(result.as_numpy("predict"), expected(model_store.lr_v1, x))
        assert result.get_response()["id"] == "t-1"
        for algorithm in ("gzip", "deflate"):
            result = client.infer(
                ab.name, [inp], model_version="main", request_compression_algorithm=algorithm
            )
            np.testing.assert_array_equal(result.as_numpy("predict"), expected(model_store.lr_v1, x))
        inp32 = tc.InferInput("x", list(x.shape), "FP32")
        inp32.set_data_from_numpy(x.astype(np.float32), binary_data=False)
        out = tc.InferRequestedOutput("predict", binary_data=False)
        result = client.infer(ab.name, [inp32], outputs=[out], model_version="challenger")
        assert result.get_response()["outputs"][0]["data"] == expected(
            model_store.lr_v2, x.astype(np.float32)
        )
        city = tc.InferInput("city", [2], "BYTES")
        city.set_data_from_numpy(np.array([b"oslo", b"rome"], dtype=object))
        n = tc.InferInput("n", [2], "INT64")
        n.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
        result = client.infer(ab.name, [city, n], model_version="strings")
        assert result.as_numpy("length").tolist() == [5, 6]
        assert result.as_numpy("upper").tolist() == [b"OSLO", b"ROME"]
    finally:
        client.close()


datatypes = st.sampled_from(["FP64", "FP32", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP16", "bad"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=3)
)
tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", *FEATURES, "city", "n", "zz"]), "datatype": datatypes},
    optional={
        "shape": st.lists(st.integers(-1, 5), max_size=3),
        "data": st.lists(scalars | st.lists(scalars, max_size=5), max_size=6),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 16)}),
    },
)
bodies = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda ins, o: json.dumps({"inputs": ins, **o}).encode(),
        st.lists(tensors, max_size=4),
        st.sampled_from(
            [{}, {"outputs": [{"name": "predict"}]}, {"outputs": "x"}, {"id": 5}, {"parameters": []}]
        ),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=bodies,
    variant=st.sampled_from([None, "main", "strings", "shadow"]),
    hl=st.none() | st.integers(0, 60),
)
def test_malformed_bodies_never_500(ab, body, variant, hl) -> None:
    headers = {} if hl is None else {"Inference-Header-Content-Length": str(hl)}
    path = f"/v2/models/{ab.name}" + (f"/versions/{variant}" if variant else "") + "/infer"
    status, _, raw = ab.post(path, body, headers)
    assert status in (200, 400), raw
    if status == 400:
        assert json.loads(raw)["error"]


def test_expect_100_continue_is_answered(ab) -> None:
    """curl sends `Expect: 100-continue` for bodies over 1 kB and waits a second unless the server answers."""
    u = urlparse(ab.url)
    body = json.dumps(row_doc(np.zeros((40, 4)).tolist(), id="cont")).encode()
    head = (
        f"POST /v2/models/{ab.name}/versions/main/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(head)
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        data = b""
        while b'"id":"cont"' not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_rejected_requests_are_counted_by_code(ab) -> None:
    def count() -> float:
        total = 0.0
        for line in ab.metrics().splitlines():
            if line.startswith("seldon_api_executor_server_requests_seconds_count") and 'code="400"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = count()
    assert ab.post(f"/v2/models/{ab.name}/infer", b"nope")[0] == 400
    assert count() == before + 1


def test_concurrent_requests_each_get_their_own_rows_back(ab, model_store) -> None:
    """Concurrent requests are micro-batched into one predict: each must still get exactly its own answer."""
    import threading

    rng = np.random.default_rng(7)
    work = [rng.normal(size=(int(rng.integers(1, 4)), 4)).round(3).tolist() for _ in range(240)]
    wrong: list[tuple] = []

    def run(chunk: list) -> None:
        u = urlparse(ab.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        try:
            for i, rows in chunk:
                conn.request(
                    "POST", f"/v2/models/{ab.name}/versions/main/infer", json.dumps(row_doc(rows, id=str(i)))
                )
                doc = json.loads(conn.getresponse().read())
                if doc.get("id") != str(i) or doc["outputs"][0]["data"] != expected(model_store.lr_v1, rows):
                    wrong.append((i, rows, doc))
        finally:
            conn.close()

    items = list(enumerate(work))
    threads = [threading.Thread(target=run, args=(items[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []


def test_compressed_bodies_are_bounded_and_checked(ab) -> None:
    import gzip

    path = f"/v2/models/{ab.name}/versions/main/infer"
    ok = gzip.compress(json.dumps(row_doc([[1, 2, 3, 4]])).encode())
    assert ab.post(path, ok, {"Content-Encoding": "gzip"})[0] == 200
    bomb = gzip.compress(b" " * 5_000_000)  # tiny on the wire, 25x the runtime's 200 kB limit unpacked
    status, _, raw = ab.post(path, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in json.loads(raw)["error"]
    assert ab.post(path, b"not gzip", {"Content-Encoding": "gzip"})[0] == 400
    assert ab.post(path, ok, {"Content-Encoding": "br"})[0] == 400


def test_declared_oversized_body_is_refused_before_it_is_sent(ab) -> None:
    u = urlparse(ab.url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(
            f"POST /v2/models/{ab.name}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        data = s.recv(4096)  # no body sent: the answer must not wait for it
    assert data.startswith(b"HTTP/1.1 413") and b"200000" in data
