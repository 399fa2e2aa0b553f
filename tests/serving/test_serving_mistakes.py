"""Every client mistake is a 4xx / INVALID_ARGUMENT with a short message (issue 25), against a real runtime:
undecodable protobuf, deep JSON, lone surrogates and huge shapes on every route (inference, admin,
feedback), no traceback in ``runtime.log`` per bad request, and the log rotated by size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from serving_support import REPO, free_port, lr_spec, row_doc

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"weights": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}"
SURROGATE_FEEDBACK = b'{"feedback": [{"id": "\\ud800", "ground_truth": 1}]}'
QUOTE = 120  # characters of input an error may quote
SHORT = 400  # a whole error message: the quote and the words around it


@pytest.fixture(scope="module")
def rt(runtime_factory):
    """The usual A/B spec with a shadow (``lr_spec``), response log on, gRPC on ``rt.grpc``."""
    [runtime] = runtime_factory({**lr_spec("mistakes-test"), "_args": ["--grpc-port", str(free_port())]})
    return runtime


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def no_traceback(rt) -> None:
    text = rt.log.read_text()
    assert "Traceback" not in text, text[-3000:]


def test_deep_json_and_lone_surrogates_are_400_on_every_route(rt) -> None:
    admin = {"Authorization": f"Bearer {rt.token}"}
    feedback = {"Authorization": f"Bearer {rt.feedback_token}"}
    infer = f"/v2/models/{rt.name}/infer"
    cases = [
        ("/admin/traffic", DEEP, admin, "deeper than 64"),
        ("/admin/traffic", DEEP_OBJECT, admin, "deeper than 64"),
        ("/admin/spec", b'{"spec": {"name": "\\udc00"}}', admin, "surrogate"),
        ("/admin/stage", DEEP, admin, "deeper than 64"),
        ("/admin/flush", DEEP, admin, "flush body"),
        (f"/v2/models/{rt.name}/feedback", DEEP, feedback, "deeper than 64"),
        (f"/v2/models/{rt.name}/feedback", SURROGATE_FEEDBACK, feedback, "surrogate"),
        (infer, DEEP, {}, ""),
        (infer, json.dumps(row_doc([[0, 0, 0, 1]]))[:-1].encode() + b', "id": "\\ud800"}', {}, ""),
    ]
    for path, body, headers, says in cases:
        status, _, answer = rt.post(path, body, headers)
        error = error_of(answer)
        assert status == 400, (path, body[:60], status, error[:300])
        assert says in error and len(error) < SHORT and "\n" not in error, (path, error[:500])
    # the feedback that was refused stored nothing; a good one still goes through
    status, _, answer = rt.post(
        f"/v2/models/{rt.name}/feedback", {"feedback": [{"id": "ok", "ground_truth": 1}]}, feedback
    )
    assert status == 200 and json.loads(answer)["stored"] == 1
    assert rt.infer(row_doc([[0, 0, 0, 1]]))[0] == 200
    no_traceback(rt)


def test_a_huge_shape_or_name_is_never_echoed(rt) -> None:
    """The issue's reproducer: a bad ``shape`` of 200k elements came back in a 1 MB error."""
    long_name = "n" * 200_000
    for tensor in (
        {"name": "x", "shape": [1] * 200_000, "datatype": "FP64", "data": [0, 0, 0, 1]},
        {"name": "x", "shape": ["a"] * 200_000, "datatype": "FP64", "data": [0, 0, 0, 1]},
        {"name": "x", "shape": [1, 4], "datatype": "Q" * 200_000, "data": [0, 0, 0, 1]},
        {"name": long_name, "shape": [1, 4], "datatype": "FP64", "data": [0, 0, 0, "x"]},
        {"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": [0, 0, 0, 1]},
        {"name": long_name, "shape": [1, 3], "datatype": "FP64", "data": [0, 0, 1]},
    ):
        status, doc, _ = rt.infer({"inputs": [tensor]})
        assert status == 400 and len(doc["error"]) < SHORT, (status, doc["error"][:500])
    status, doc, _ = rt.infer({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [0] * 4}],
                               "outputs": [{"name": long_name}]})  # fmt: skip
    assert len(json.dumps(doc)) < 2_000, json.dumps(doc)[:500]
    no_traceback(rt)


def _raw_grpc(rt, rpc: str, payload: bytes):
    import grpc

    with grpc.insecure_channel(rt.grpc) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{rpc}")  # bytes in, bytes out
        try:
            call(payload, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_undecodable_protobuf_is_invalid_argument_without_a_traceback(rt) -> None:
    import grpc

    from wolt_jupyter.serving.grpc_service import MESSAGES

    for rpc in ("ModelInfer", "ModelMetadata", "ModelReady", "ServerLive", "ModelStatistics"):
        for payload in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a" + b"\x80" * 12):
            code, details = _raw_grpc(rt, rpc, payload)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (rpc, payload, code, details)
            assert "not a valid" in details and len(details) < SHORT, details
    # a stream: the bad message gets an error response, the good one after it an answer
    with grpc.insecure_channel(rt.grpc) as channel:
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            response_deserializer=MESSAGES["ModelStreamInferResponse"].FromString,
        )
        good = MESSAGES["ModelInferRequest"](model_name=rt.name)
        good.inputs.add(name="x", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([0, 0, 0, 1])
        answers = list(stream(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=30))
    assert answers[0].error_message.startswith(
        "INVALID_ARGUMENT: the message is not a valid ModelInferRequest"
    )
    assert not answers[1].error_message and answers[1].infer_response.outputs
    # a shape of 200k dimensions over gRPC: refused in a short message
    req = MESSAGES["ModelInferRequest"](model_name=rt.name)
    req.inputs.add(name="x", datatype="FP64", shape=[1] * 200_000).contents.fp64_contents.extend([0, 0, 0, 1])
    code, details = _raw_grpc(rt, "ModelInfer", req.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < SHORT, details[:500]
    no_traceback(rt)


def test_a_supervised_processs_log_is_rotated_by_size(tmp_path) -> None:
    """What the runtime and the update service print goes to a log their supervisor names; past the limit it
    becomes ``<log>.1`` and writing goes on in a fresh file, for logging and plain stderr alike."""
    from wolt_jupyter.processes import stop_process_group

    log = tmp_path / "runtime.log"
    child = (
        "import logging, sys, time\n"
        "from wolt_jupyter.logfile import rotate_by_size\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "assert rotate_by_size() is not None\n"
        "for i in range(3000):\n"
        "    logging.warning('line %d %s', i, 'x' * 100)\n"
        "print('printed after', flush=True)\n"
        "logging.warning('last line')\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "WOLT_LOG_MAX_BYTES": "50000", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "wolt_jupyter.serving.supervisor", "--state", str(tmp_path / "sup.json")),
            *("--log", str(log), "--", sys.executable, "-c", child),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while "last line" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None, "the child did not finish logging"
            time.sleep(0.1)
    finally:
        stop_process_group(proc.pid, 10)
        proc.wait(10)
    older = log.with_name("runtime.log.1")
    assert older.exists() and not log.with_name("runtime.log.2").exists()
    # ~340 kB were written: what is left is the last two files, each about the limit
    assert log.stat().st_size < 60_000 and older.stat().st_size < 60_000
    assert "printed after" in log.read_text() + older.read_text()  # plain stderr/stdout follow the rotation
    assert oct(log.stat().st_mode & 0o777) == "0o600"
