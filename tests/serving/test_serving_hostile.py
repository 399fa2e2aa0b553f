"""Hostile clients (issue 12): every reproducer as a regression test, the HTTP limits, and a fuzz suite.

One runtime process (``hostile``) with small limits so slow-sender cases finish in seconds. The fuzz tests
use fixed example budgets (``derandomize``: the same cases on every CI run) and check what a hostile client
must never get: a 5xx for its own input, a hang, an unhealthy server afterwards, or unbounded memory.
"""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import free_port, row_doc, spawn_runtime, stop_runtime

LIMIT_ARGS = [
    *("--max-body-bytes", "2000000", "--max-header-count", "50", "--max-header-bytes", "16384"),
    *("--max-url-bytes", "4096", "--header-timeout", "1", "--body-timeout", "2", "--idle-timeout", "30"),
    *("--max-connections", "60"),
]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def hostile(runtime_factory):
    """main/challenger (90/10) and a shadow, response log on; small limits; gRPC on ``hostile.grpc``."""
    spec = {
        "name": "hostile-test",
        "variants": [
            {"name": "main", "model": "models:/wolt-lr/1", "traffic": 90},
            {"name": "challenger", "model": "models:/wolt-lr/2", "traffic": 10},
            {"name": "shadow", "model": "models:/wolt-lr/2", "shadow": True},
        ],
        "logging": {"responses": True, "sample": 1.0},
        "_args": [*LIMIT_ARGS, "--grpc-port", str(free_port())],
    }
    [rt] = runtime_factory(spec)
    return rt


def raw(rt, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers before closing (or timeout)."""
    host, port = rt.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def healthy(rt) -> bool:
    return rt.get("/v2/health/ready")[0] == 200 and rt.infer(row_doc([[0, 0, 0, 1]]))[0] == 200


def rss_mb(rt) -> float:
    import psutil

    return psutil.Process(rt.proc.pid).memory_info().rss / 2**20


# -- the reproducers ---------------------------------------------------------------------------------
def test_non_ascii_digit_in_inference_header_length_is_400(hostile) -> None:
    body = b"{}"
    answer = raw(
        hostile,
        b"POST /v2/models/hostile-test/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Inference-Header-Content-Length: \xb2\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert status_of(answer) == 400 and "Inference-Header-Content-Length" in body_of(answer)["error"]
    for value in ("99999999999999999999999999", "-1", "1e3", "\xb3"):
        status, doc, _ = hostile.infer(
            row_doc([[0, 0, 0, 1]]), headers={"Inference-Header-Content-Length": value}
        )
        assert status == 400, (value, doc)


@pytest.mark.parametrize(("datatype", "value"), [("FP16", 70000), ("FP32", 1e300)])
def test_a_value_the_datatype_cannot_hold_is_400_naming_the_input(hostile, datatype, value) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": datatype, "data": [value, 0, 0, 1]}]}
    status, answer, _ = hostile.infer(doc)
    assert status == 400 and "input 'x'" in answer["error"] and datatype in answer["error"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_binary_values_the_model_rejects_are_400_naming_the_input(hostile, bad) -> None:
    data = np.array([[bad, 0, 0, 1]], dtype="<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}
            ]
        }
    ).encode()
    status, _, body = hostile.post(
        "/v2/models/hostile-test/versions/main/infer",
        header + data,
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    error = json.loads(body)["error"]
    assert status == 400 and "input 'x'" in error and "NaN or infinite" in error


def test_feedback_needs_its_token_and_bad_items_are_400(hostile) -> None:
    from wolt_jupyter.client import EndpointError, feedback_token, send_feedback

    path = "/v2/models/hostile-test/feedback"
    item = {"feedback": [{"id": "a", "ground_truth": 1}]}
    status, headers, body = hostile.post(path, item)
    assert (
        status == 401
        and headers["www-authenticate"] == "Bearer"
        and "feedback.token" in json.loads(body)["error"]
    )
    assert hostile.post(path, item, {"Authorization": "Bearer wrong"})[0] == 401
    token = feedback_token("hostile-test", hostile.state_dir)
    assert token != hostile.token  # its own credential, not the admin token
    auth = {"Authorization": f"Bearer {token}"}
    status, _, body = hostile.post(path, {"feedback": [{"id": "a", "ground_truth": 1, "time": "x"}]}, auth)
    assert status == 400 and "'time'" in json.loads(body)["error"]
    for bad in ({"id": "a" * 300, "ground_truth": 1}, {"id": "a", "ground_truth": 1, "time": 10**400}, [1]):
        assert hostile.post(path, {"feedback": [bad]}, auth)[0] == 400, bad
    assert hostile.post(path, item, auth)[0] == 200
    assert hostile.post(path, item, {"Authorization": f"Bearer {hostile.token}"})[0] == 200  # admin may too
    assert send_feedback(hostile.url, "hostile-test", [{"id": "b", "ground_truth": [1]}], token=token) == 1
    with pytest.raises(EndpointError, match="401"):
        send_feedback(hostile.url, "hostile-test", [{"id": "b", "ground_truth": 1}], token="nope")


def test_admin_spec_of_the_wrong_shape_is_one_line_400(hostile) -> None:
    for spec, field in (
        ({"resources": [1]}, "resources"),
        ({"logging": {"sample": "abc"}}, "logging.sample"),
    ):
        doc = {
            "name": "hostile-test",
            "variants": [{"name": "main", "model": "models:/wolt-lr/1", "traffic": 100}],
        }
        status, answer = hostile.admin("spec", {"spec": {**doc, **spec}})
        assert status == 400 and field in answer["error"] and "\n" not in answer["error"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"logging": {"sample": "abc"}}, "logging.sample"),
        ({"resources": [1, 2]}, "resources"),
        (
            {"variants": [{"name": "main", "model": "models:/wolt-lr/1", "traffic": 100, "timeout": -1}]},
            "variant 'main': timeout must be a number of seconds above 0 and at most 3600 (e.g. 0.5), got -1",
        ),
    ],
)
def test_a_bad_spec_file_is_one_line_and_exit_2(model_store, tmp_path, change, field) -> None:
    spec = {"name": "bad-spec", "variants": [{"name": "main", "model": "models:/wolt-lr/1", "traffic": 100}]}
    rt = spawn_runtime(model_store, {**spec, **change}, tmp_path)
    try:
        code = rt.proc.wait(60)
    finally:
        stop_runtime(rt)
    text = rt.log.read_text()
    assert code == 2 and "Traceback" not in text and field in text
    assert len([line for line in text.splitlines() if line.strip()]) == 1


# -- limits --------------------------------------------------------------------------------------------------
def test_too_many_or_too_large_headers_are_431(hostile) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    answer = raw(hostile, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status_of(answer) == 431 and "headers" in body_of(answer)["error"]
    big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
    answer = raw(hostile, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert status_of(answer) == 431


def test_a_long_url_is_414_and_never_echoed(hostile) -> None:
    answer = raw(hostile, b"GET /v2/models/" + b"m" * 50_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 414 and len(answer) < 1000 and b"mmmm" not in answer
    # a URL under the limit gets a 404 that quotes a bounded prefix of it, not all of it
    status, _, body = hostile.get("/v2/nothing/" + "n" * 4000)
    assert status == 404 and len(body) < 1000


def _open(rt) -> socket.socket:
    host, port = rt.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server said before closing the connection, or None if it stayed open ``within`` seconds."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def test_slow_senders_are_cut_off_with_408(hostile) -> None:
    slow_headers = [_open(hostile) for _ in range(20)]
    for s in slow_headers:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ")  # and never the rest (slowloris)
    half_body = _open(hostile)
    half_body.sendall(b"POST /v2/models/hostile-test/infer HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
    try:
        for s in slow_headers:
            said = _closed_by_server(s, within=15)
            assert said is not None and said.startswith(b"HTTP/1.1 408")
        said = _closed_by_server(half_body, within=15)
        assert said is not None and said.startswith(b"HTTP/1.1 408") and b"body" in said
    finally:
        for s in [*slow_headers, half_body]:
            s.close()
    assert healthy(hostile)


def test_connections_above_the_cap_close_the_oldest_idle_ones_not_refuse(hostile) -> None:
    """80 idle connections against a cap of 60: the oldest idle ones are closed to make way, nobody gets a 503,
    and a new client is served (issue 25: the 1,025th socket used to lock everybody out for the idle timeout).
    Refusing when every connection is busy is ``test_serving_backpressure``'s."""
    held = []
    try:
        for _ in range(80):
            held.append(_open(hostile))
            time.sleep(0.002)  # accepted in this order
        time.sleep(0.3)  # let the server accept them all
        said = []
        for s in held:
            s.settimeout(0.05)
            try:
                said.append(s.recv(4096))
            except TimeoutError:
                said.append(None)  # still open
            except ConnectionResetError:
                said.append(b"")
        assert not [x for x in said if x], said  # closed without a word, never a 503
        still_open = [i for i, x in enumerate(said) if x is None]
        assert len(still_open) <= 60 and still_open == list(range(80 - len(still_open), 80))
        assert healthy(hostile)
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert healthy(hostile)


def test_a_big_body_is_decoded_off_the_loop_and_answered(hostile, model_store) -> None:
    rows = np.random.default_rng(3).normal(size=(20_000, 4)).round(4)
    status, doc, _ = hostile.infer(row_doc(rows.tolist()), variant="main")  # ~1.3 MB of JSON
    import pandas as pd
    from serving_support import FEATURES

    assert status == 200
    assert (
        doc["outputs"][0]["data"] == model_store.lr_v1.predict(pd.DataFrame(rows, columns=FEATURES)).tolist()
    )


def test_shutdown_answers_503_shutting_down_with_retry_after(tmp_path) -> None:
    from wolt_jupyter.serving.dataplane import DataPlane
    from wolt_jupyter.serving.http import Request
    from wolt_jupyter.serving.rest import RestApi
    from wolt_jupyter.spec import DeploymentSpec

    spec = DeploymentSpec.from_dict(
        {"name": "bye", "variants": [{"name": "main", "model": "models:/m/1", "traffic": 100}]}
    )
    plane = DataPlane(spec, tmp_path, log_responses=False)
    plane.ready = True
    plane.begin_shutdown()
    rt = RestApi(plane)
    for method, path in (
        ("POST", "/v2/models/bye/infer"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/bye"),
    ):
        answers: list = []
        rt.handle(Request(method, path, "", {}, b"{}"), answers.append)
        [resp] = answers
        assert resp.status == 503 and "shutting down" in json.loads(resp.body)["error"]
        assert ("retry-after", "5") in resp.headers and "loading" not in json.loads(resp.body)["error"]
    answers = []
    rt.handle(Request("GET", "/v2/health/live", "", {}, b""), answers.append)
    assert answers[0].status == 200  # still alive while it drains


# -- fuzz: raw HTTP --------------------------------------------------------------------------------------------
_TOKENS = st.sampled_from(
    [
        "hostile-test",
        "main",
        "challenger",
        "shadow",
        "infer",
        "ready",
        "versions",
        "feedback",
        "",
        "%00",
        "..",
        "²",
    ]
)
_PATHS = st.one_of(
    st.lists(_TOKENS, min_size=0, max_size=5).map(lambda p: "/v2/models/" + "/".join(p)),
    st.sampled_from(
        ["/v2", "/v2/health/ready", "/metrics", "/admin/spec", "/admin/traffic", "/v2/openapi.json"]
    ),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(lambda t: "/" + t),
)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "f0", "input-0", ""]),
        "shape": st.lists(st.integers(-1, 5), max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "FP16", "INT8", "UINT8", "INT64", "BOOL", "BYTES", "X"]),
        "data": _JSONISH,
    },
    optional={"parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-2, 64)})},
)
_BODIES = st.one_of(
    st.builds(lambda ts: json.dumps({"inputs": ts}).encode(), st.lists(_TENSOR, max_size=3)),
    _JSONISH.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.builds(lambda t, b: json.dumps({"inputs": [t]}).encode() + b, _TENSOR, st.binary(max_size=64)),
)
_HEADER_VALUES = st.one_of(
    st.integers(-5, 400).map(str), st.binary(min_size=1, max_size=6).map(lambda b: b.decode("latin-1"))
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=_PATHS,
    body=_BODIES,
    header_length=st.none() | _HEADER_VALUES,
    encoding=st.none() | st.sampled_from(["gzip", "deflate", "br", "identity"]),
    auth=st.booleans(),
)
def test_fuzz_raw_http_never_5xx(hostile, method, path, body, header_length, encoding, auth) -> None:
    head = [
        f"{method} {path.replace(' ', '%20')} HTTP/1.1",
        "Host: x",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    if header_length is not None:
        head.append(
            f"Inference-Header-Content-Length: {header_length.replace(chr(13), '').replace(chr(10), '')}"
        )
    if encoding:
        head.append(f"Content-Encoding: {encoding}")
    if auth:
        head.append(f"Authorization: Bearer {hostile.token}")
    answer = raw(hostile, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    assert answer, "no answer"
    assert status_of(answer) < 500, answer[:300]


def test_after_the_http_fuzz_the_runtime_is_healthy_and_small(hostile) -> None:
    before = rss_mb(hostile)
    test_fuzz_raw_http_never_5xx(hostile)  # the whole budget again: memory must not keep growing
    assert healthy(hostile)
    assert rss_mb(hostile) < before + 150


# -- fuzz: gRPC ------------------------------------------------------------------------------------------------
def _grpc_call(rt, rpc: str, request):
    import grpc

    from wolt_jupyter.serving.grpc_service import _RPCS, MESSAGES

    with grpc.insecure_channel(rt.grpc) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{rpc}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=MESSAGES[_RPCS[rpc][1]].FromString,
        )
        try:
            call(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _infer_request(
    name: str, datatype: str, shape: list[int], field: str, values: list, raw: bytes | None = None
):
    from wolt_jupyter.serving.grpc_service import MESSAGES

    req = MESSAGES["ModelInferRequest"](model_name="hostile-test", model_version="main")
    t = req.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw is not None:
        req.raw_input_contents.append(raw)
    elif field:
        getattr(t.contents, field).extend(values)
    return req


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [("INT8", "int_contents", 300), ("UINT8", "uint_contents", 256), ("INT16", "int_contents", -40000)],
)
def test_grpc_out_of_range_ints_are_invalid_argument(hostile, datatype, field, value) -> None:
    import grpc

    code, details = _grpc_call(
        hostile, "ModelInfer", _infer_request("x", datatype, [1, 4], field, [value, 0, 0, 1])
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input 'x'" in details


def test_grpc_non_finite_values_and_odd_names(hostile) -> None:
    import grpc

    from wolt_jupyter.serving.grpc_service import MESSAGES

    req = _infer_request("x", "FP64", [1, 4], "fp64_contents", [float("nan"), 0, 0, 1])
    code, details = _grpc_call(hostile, "ModelInfer", req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input 'x'" in details
    for name in ("m/infer", "hostile-test/versions/main", "a?b"):
        code, _ = _grpc_call(hostile, "ModelMetadata", MESSAGES["ModelMetadataRequest"](name=name))
        assert code == grpc.StatusCode.NOT_FOUND, name
        code, _ = _grpc_call(hostile, "ModelReady", MESSAGES["ModelReadyRequest"](name=name))
        assert code == grpc.StatusCode.NOT_FOUND, name


_GRPC_FIELDS = {
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bool_contents": st.booleans(),
    "bytes_contents": st.binary(max_size=8),
}


@st.composite
def _grpc_requests(draw):
    field = draw(st.sampled_from(["", *_GRPC_FIELDS]))
    values = draw(st.lists(_GRPC_FIELDS[field], max_size=12)) if field else []
    raw = draw(st.none() | st.binary(max_size=64))
    return _infer_request(
        draw(st.sampled_from(["x", "f0", ""])),
        draw(
            st.sampled_from(
                ["FP64", "FP32", "FP16", "INT8", "INT16", "UINT8", "INT64", "UINT64", "BOOL", "BYTES", "Q"]
            )
        ),
        draw(st.lists(st.integers(-1, 5), max_size=3)),
        field,
        values,
        raw,
    )


@FUZZ
@given(request=_grpc_requests())
def test_fuzz_grpc_never_unknown_or_internal(hostile, request) -> None:
    import grpc

    code, details = _grpc_call(hostile, "ModelInfer", request)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
        code,
        details,
    )


def test_after_the_grpc_fuzz_the_runtime_is_healthy(hostile) -> None:
    import grpc

    from wolt_jupyter.serving.grpc_service import MESSAGES

    code, _ = _grpc_call(hostile, "ServerReady", MESSAGES["ServerReadyRequest"]())
    assert code == grpc.StatusCode.OK and healthy(hostile)
    big = _infer_request("x", "FP64", [300_000, 4], "", [], raw=b"\0" * (300_000 * 32))
    code, _ = _grpc_call(hostile, "ModelInfer", big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # 9.6 MB > the 2 MB body limit


# -- fuzz: schemathesis over the runtime's own OpenAPI document ------------------------------------------------
def _runtime_schema():
    """The document the runtime serves (the test below checks it is the same one)."""
    import schemathesis

    from wolt_jupyter.serving.openapi import document

    return schemathesis.openapi.from_dict(document())


schema = _runtime_schema()


def test_the_runtime_serves_its_openapi_document(hostile) -> None:
    from wolt_jupyter.serving.openapi import document

    status, headers, body = hostile.get("/v2/openapi.json")
    doc = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json" and doc == document()
    assert doc["openapi"].startswith("3.") and "/v2/models/{model_name}/infer" in doc["paths"]


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_schemathesis_never_5xx(case, hostile) -> None:
    if "model_name" in (case.path_parameters or {}):
        case.path_parameters["model_name"] = "hostile-test"  # reach the handlers, not only the 404
    if "model_version" in (case.path_parameters or {}):
        case.path_parameters["model_version"] = "main"
    token = hostile.token if case.path.startswith("/admin") else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=hostile.url, headers=headers, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])


# -- private state of a running runtime ------------------------------------------------------------------------
def test_the_runtime_state_is_private(hostile) -> None:
    import os
    import stat

    def mode(path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    assert hostile.infer(row_doc([[0, 0, 0, 1]]))[0] == 200
    assert hostile.admin("flush")[0] == 200  # the response log is on disk now
    folder = hostile.state_dir / "deployments" / hostile.name
    assert mode(hostile.state_dir) == 0o700 and mode(folder) == 0o700
    assert mode(folder / "admin.token") == 0o600 and mode(folder / "feedback.token") == 0o600
    responses = hostile.state_dir / "responses"
    assert mode(responses) == 0o700
    files = list(responses.glob(f"{hostile.name}.db*"))
    assert files and all(mode(f) == 0o600 for f in files), [(f.name, oct(mode(f))) for f in files]


def test_feedback_beside_the_writer_keeps_read_your_writes(hostile) -> None:
    """Storing feedback in the runtime's process must not disturb the response writer's SQLite locks
    (closing any descriptor of the file drops them): every answer is still readable after a flush."""
    from wolt_jupyter import responses
    from wolt_jupyter.client import send_feedback

    url = responses.default_store_url(hostile.name, hostile.state_dir)
    before = [f"ryw-a-{i}" for i in range(20)]
    after = [f"ryw-b-{i}" for i in range(20)]
    for rid in before:
        assert hostile.infer(row_doc([[0.1, 0.2, 0.3, 0.4]], id=rid))[0] == 200
    assert hostile.admin("flush")[0] == 200
    items = [{"id": rid, "ground_truth": 1} for rid in before]
    assert send_feedback(hostile.url, hostile.name, items, token=hostile.feedback_token) == 20
    for rid in after:
        assert hostile.infer(row_doc([[0.1, 0.2, 0.3, 0.4]], id=rid))[0] == 200
    assert hostile.admin("flush")[0] == 200
    df = responses.read_frame(hostile.name, url=url)
    live = set(df[~df["shadow"].astype(bool)]["id"])
    assert set(before + after) <= live
