"""gRPC ``inference.GRPCInferenceService`` (the V2 protocol's gRPC form), with the same routing as REST.

Why no generated ``*_pb2`` files: generated code pins a protobuf runtime range, and MLflow pins protobuf
too. The message types are built here at import time from a descriptor written out field by field from the
V2 protocol definition, and served through grpcio's generic handlers. Standard clients (tritonclient.grpc)
see the same wire format as from generated code.

A codec over the data plane (``dataplane.py``), like REST: a request is decoded and routed in a grpcio
worker thread, queued on the event loop (``DataPlane.submit``: micro-batching, champion retry, shadows,
response log, metrics, statistics), encoded there and handed back to the waiting worker. Outputs go back as
``raw_output_contents``, as Triton does. Errors carry the status code of their class (``status_code``).
Besides the six V2 RPCs: ``ModelStatistics`` (Triton's statistics extension) and ``ModelStreamInfer``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from math import prod
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.router import ROUTE_KEY_HEADER, VARIANT_HEADER
from wolt_jupyter.serving.stats import DURATIONS
from wolt_jupyter.serving.tensors import (
    DATATYPE_NAMES,
    DTYPES,
    InferRequest,
    Tensor,
    check_shape,
    checked_cast,
    datatype_of,
    from_binary,
    new_request_id,
    to_binary,
)
from wolt_jupyter.untrusted import shown, shown_value

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_T = {
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
# (message, fields as (name, number, type, repeated)); a type starting with "." is a message,
# "map:" a map<string, InferParameter>
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, "bool", False)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, "bool", False)],
    "ModelReadyRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "ModelReadyResponse": [("ready", 1, "bool", False)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [
        ("name", 1, "string", False),
        ("version", 2, "string", False),
        ("extensions", 3, "string", True),
    ],
    "ModelMetadataRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "ModelMetadataResponse": [
        ("name", 1, "string", False),
        ("versions", 2, "string", True),
        ("platform", 3, "string", False),
        ("inputs", 4, ".inference.ModelMetadataResponse.TensorMetadata", True),
        ("outputs", 5, ".inference.ModelMetadataResponse.TensorMetadata", True),
    ],
    "ModelMetadataResponse.TensorMetadata": [
        ("name", 1, "string", False),
        ("datatype", 2, "string", False),
        ("shape", 3, "int64", True),
    ],
    "ModelInferRequest": [
        ("model_name", 1, "string", False),
        ("model_version", 2, "string", False),
        ("id", 3, "string", False),
        ("parameters", 4, "map:", True),
        ("inputs", 5, ".inference.ModelInferRequest.InferInputTensor", True),
        ("outputs", 6, ".inference.ModelInferRequest.InferRequestedOutputTensor", True),
        ("raw_input_contents", 7, "bytes", True),
    ],
    "ModelInferRequest.InferInputTensor": [
        ("name", 1, "string", False),
        ("datatype", 2, "string", False),
        ("shape", 3, "int64", True),
        ("parameters", 4, "map:", True),
        ("contents", 5, ".inference.InferTensorContents", False),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [
        ("name", 1, "string", False),
        ("parameters", 2, "map:", True),
    ],
    "ModelInferResponse": [
        ("model_name", 1, "string", False),
        ("model_version", 2, "string", False),
        ("id", 3, "string", False),
        ("parameters", 4, "map:", True),
        ("outputs", 5, ".inference.ModelInferResponse.InferOutputTensor", True),
        ("raw_output_contents", 6, "bytes", True),
    ],
    "ModelInferResponse.InferOutputTensor": [
        ("name", 1, "string", False),
        ("datatype", 2, "string", False),
        ("shape", 3, "int64", True),
        ("parameters", 4, "map:", True),
        ("contents", 5, ".inference.InferTensorContents", False),
    ],
    "ModelStreamInferResponse": [
        ("error_message", 1, "string", False),
        ("infer_response", 2, ".inference.ModelInferResponse", False),
    ],
    "ModelStatisticsRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "StatisticDuration": [("count", 1, "uint64", False), ("ns", 2, "uint64", False)],
    "InferStatistics": [
        (name, number, ".inference.StatisticDuration", False)
        for number, name in enumerate(DURATIONS, start=1)
    ],
    "InferBatchStatistics": [
        ("batch_size", 1, "uint64", False),
        ("compute_input", 2, ".inference.StatisticDuration", False),
        ("compute_infer", 3, ".inference.StatisticDuration", False),
        ("compute_output", 4, ".inference.StatisticDuration", False),
    ],
    "ModelStatistics": [
        ("name", 1, "string", False),
        ("version", 2, "string", False),
        ("last_inference", 3, "uint64", False),
        ("inference_count", 4, "uint64", False),
        ("execution_count", 5, "uint64", False),
        ("inference_stats", 6, ".inference.InferStatistics", False),
        ("batch_stats", 7, ".inference.InferBatchStatistics", True),
    ],
    "ModelStatisticsResponse": [("model_stats", 1, ".inference.ModelStatistics", True)],
    "InferParameter": [  # one of these (oneof parameter_choice)
        ("bool_param", 1, "bool", False),
        ("int64_param", 2, "int64", False),
        ("string_param", 3, "string", False),
        ("double_param", 4, "double", False),
        ("uint64_param", 5, "uint64", False),
    ],
    "InferTensorContents": [
        ("bool_contents", 1, "bool", True),
        ("int_contents", 2, "int32", True),
        ("int64_contents", 3, "int64", True),
        ("uint_contents", 4, "uint32", True),
        ("uint64_contents", 5, "uint64", True),
        ("fp32_contents", 6, "float", True),
        ("fp64_contents", 7, "double", True),
        ("bytes_contents", 8, "bytes", True),
    ],
}
_RPCS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse"),
}
STREAM_RPC = ("ModelStreamInfer", "ModelInferRequest", "ModelStreamInferResponse")
# V2 datatype -> the typed field of InferTensorContents that carries it
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _add_fields(msg: Any, fields: list[tuple[str, int, str, bool]], owner: str) -> None:
    for name, number, typ, repeated in fields:
        f = msg.field.add(name=name, number=number, label=_REP if repeated else _OPT)
        if typ == "map:":
            entry = msg.nested_type.add(name="ParametersEntry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=_OPT, type=_F.TYPE_STRING)
            entry.field.add(
                name="value",
                number=2,
                label=_OPT,
                type=_F.TYPE_MESSAGE,
                type_name=".inference.InferParameter",
            )
            f.type, f.type_name = _F.TYPE_MESSAGE, f".inference.{owner}.ParametersEntry"
        elif typ.startswith("."):
            f.type, f.type_name = _F.TYPE_MESSAGE, typ
        else:
            f.type = _T[typ]


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(name="wolt_jupyter/grpc_predict_v2.proto", package="inference")
    fdp.syntax = "proto3"
    top: dict[str, Any] = {}
    for full, fields in _MESSAGES.items():
        if "." in full:
            parent, name = full.split(".")
            msg = top[parent].nested_type.add(name=name)
        else:
            msg = top[full] = fdp.message_type.add(name=full)
        _add_fields(msg, fields, full)
    param = top["InferParameter"]
    param.oneof_decl.add(name="parameter_choice")
    for f in param.field:
        f.oneof_index = 0
    service = fdp.service.add(name="GRPCInferenceService")
    for rpc, (req, resp) in _RPCS.items():
        service.method.add(name=rpc, input_type=f".inference.{req}", output_type=f".inference.{resp}")
    rpc, req, resp = STREAM_RPC
    service.method.add(
        name=rpc,
        input_type=f".inference.{req}",
        output_type=f".inference.{resp}",
        client_streaming=True,
        server_streaming=True,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        full: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{full}"))
        for full in _MESSAGES
    }


MESSAGES = _build()
# HTTP status of a ProtocolError/InferResult -> gRPC status code name. What the client sent is never
# UNKNOWN/INTERNAL: any other 4xx is INVALID_ARGUMENT; only the model's own failure (500) is INTERNAL.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def status_code(status: int) -> str:
    """The gRPC status code name for an HTTP-style status."""
    return _STATUS.get(status) or ("INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL")


def param_value(p: Any) -> Any:
    """The Python value an ``InferParameter`` holds (whichever of its oneof is set), or None."""
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def set_param(p: Any, value: Any) -> None:
    """Store a Python value in an ``InferParameter`` (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def decode(request: Any) -> InferRequest:
    """A ModelInferRequest as the runtime's InferRequest; ProtocolError (400) for anything malformed."""
    if not request.inputs:
        raise ProtocolError(400, "request needs 'inputs': at least one tensor")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(
            400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input or none"
        )
    inputs, seen = [], set()
    for i, t in enumerate(request.inputs):
        name, datatype = t.name, t.datatype
        if not name:
            raise ProtocolError(400, f"inputs[{i}] needs a name")
        if name in seen:
            raise ProtocolError(400, f"input {shown_value(name)} is given twice")
        seen.add(name)
        if datatype not in DTYPES:
            raise ProtocolError(
                400,
                f"input {shown_value(name)}: datatype {shown_value(datatype)} is not one of {DATATYPE_NAMES}",
            )
        shape = check_shape(name, list(t.shape))
        if raw:
            arr = from_binary(name, datatype, shape, raw[i])
        else:
            field = _CONTENTS.get(datatype)
            if field is None:
                raise ProtocolError(
                    400, f"input {shown_value(name)}: {datatype} travels only in raw_input_contents"
                )
            values = list(getattr(t.contents, field))
            if datatype == "BYTES":
                arr = np.empty(len(values), dtype=object)
                arr[:] = [_text(v) for v in values]
            else:  # decoded wide, then checked: an INT8 of 300 is a 400 naming the input, not an overflow
                wide = np.asarray(values, dtype=np.float64 if datatype.startswith("FP") else None)
                arr = checked_cast(name, datatype, wide)
            if arr.size != prod(shape):
                raise ProtocolError(
                    400,
                    f"input {shown_value(name)}: shape {shown_value(list(shape))} needs {prod(shape)} elements, got {arr.size}",
                )
            arr = arr.reshape(shape)
        params = {k: param_value(v) for k, v in t.parameters.items()}
        inputs.append(Tensor(name, datatype, shape, arr, params))
    params = {k: param_value(v) for k, v in request.parameters.items()}
    names = [o.name for o in request.outputs] or None
    return InferRequest(
        id=request.id or new_request_id(), inputs=inputs, parameters=params, output_names=names, binary_outputs=set(),
        binary_all=True,
    )  # fmt: skip


def _text(v: bytes) -> Any:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v


class _GrpcReply:
    """Encodes one request's result as a ModelInferResponse (on the event loop) and hands it to the waiting
    grpcio worker through a future."""

    __slots__ = ("future", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.future: concurrent.futures.Future = concurrent.futures.Future()

    def encode(self, result: Any) -> tuple[int, Any]:
        if result.status != 200:
            return result.status, (result.status, result.error or "inference failed")
        adapter, variant = result.adapter, result.variant
        resp = MESSAGES["ModelInferResponse"](model_name=self.name, model_version=variant, id=result.req.id)
        for key, value in (
            ("variant", variant),
            ("registered_model", adapter.model_name),
            ("registered_version", adapter.model_version),
        ):
            set_param(resp.parameters[key], value)
        for name, arr in result.outputs:
            datatype = datatype_of(arr)
            resp.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            resp.raw_output_contents.append(to_binary(arr, datatype))
        return 200, (200, variant, resp)

    def send(self, wire: Any) -> None:
        self.future.set_result(wire)


class Servicer:
    """The V2 RPCs over a :class:`~wolt_jupyter.serving.dataplane.DataPlane` running on ``loop``: a codec
    only — every answer comes from the data plane, as for REST."""

    def __init__(
        self, plane: Any, loop: asyncio.AbstractEventLoop, timeout: float = 60.0, max_streams: int = 4
    ) -> None:
        self.plane, self.loop, self.timeout = plane, loop, timeout
        # each open ModelStreamInfer holds a worker thread for its lifetime: a few, or unary calls starve
        self.max_streams = max_streams
        self.streams = 0
        self._streams_lock = threading.Lock()

    @staticmethod
    def _abort(context: Any, status: int, message: str) -> None:
        import grpc

        context.abort(getattr(grpc.StatusCode, status_code(status)), message)

    def ServerLive(self, request: Any, context: Any) -> Any:
        return MESSAGES["ServerLiveResponse"](live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return MESSAGES["ServerReadyResponse"](ready=self.plane.ready and not self.plane.stopping)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return MESSAGES["ServerMetadataResponse"](**self.plane.server_metadata())

    def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            _variant, ready = self.plane.model_ready(request.name, request.version or None)
        except ProtocolError as exc:
            self._abort(context, exc.status, exc.message)
        return MESSAGES["ModelReadyResponse"](ready=ready)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            doc = self.plane.model_metadata(request.name, request.version or None)
        except ProtocolError as exc:
            self._abort(context, exc.status, exc.message)
        tm = MESSAGES["ModelMetadataResponse.TensorMetadata"]
        return MESSAGES["ModelMetadataResponse"](
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tm(name=str(t["name"]), datatype=t["datatype"], shape=t["shape"]) for t in doc["inputs"]],
            outputs=[
                tm(name=str(t["name"]), datatype=t["datatype"], shape=t["shape"]) for t in doc["outputs"]
            ],
        )

    def ModelStatistics(self, request: Any, context: Any) -> Any:
        """Triton's statistics extension; an empty name means every model (here: every variant)."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def read() -> None:  # on the event loop, which is the thread that updates the counters
            try:
                done.set_result(self.plane.statistics(request.name or None, request.version or None))
            except ProtocolError as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(read)
        try:
            doc = done.result(self.timeout)
        except ProtocolError as exc:
            self._abort(context, exc.status, exc.message)
        except concurrent.futures.TimeoutError:
            self._abort(context, 503, "the runtime did not answer in time")
        return MESSAGES["ModelStatisticsResponse"](model_stats=doc["model_stats"])

    def _infer(self, request: Any, context: Any) -> tuple:
        """(200, variant, response) or (status, message): one request through the data plane."""
        if isinstance(request, Undecodable):  # a stream's message that is not a ModelInferRequest
            return 400, request.message
        plane = self.plane
        t0 = time.perf_counter()
        model, version = request.model_name, request.model_version or None
        try:
            req = decode(request)
            route_key = dict(context.invocation_metadata() or ()).get(ROUTE_KEY_HEADER)
            routed = plane.route(model, version, req, route_key, t0)
        except ProtocolError as exc:
            plane.rejected(model, version, exc.status, t0)
            return exc.status, exc.message
        except Exception as exc:  # only the client's message was read: its fault, never UNKNOWN
            log.debug(
                "decoding a gRPC request failed", exc_info=True
            )  # the client's: no traceback per request
            plane.rejected(model, version, 400, t0)
            return 400, f"cannot decode the request: {type(exc).__name__}: {shown(str(exc))}"
        reply = _GrpcReply(plane.name)
        self.loop.call_soon_threadsafe(plane.submit, routed, reply)
        remaining = context.time_remaining()
        wait = self.timeout if remaining is None else max(0.0, min(self.timeout, remaining))
        try:
            return reply.future.result(wait)
        except concurrent.futures.TimeoutError:
            return 504, f"no answer within {wait:g} s"

    def ModelInfer(self, request: Any, context: Any) -> Any:
        answer = self._infer(request, context)
        if answer[0] != 200:
            self._abort(context, *answer)
        _, variant, resp = answer
        context.set_trailing_metadata(((VARIANT_HEADER, variant),))
        return resp

    def ModelStreamInfer(self, requests: Any, context: Any) -> Any:
        """Bidirectional streaming infer: one ModelStreamInferResponse per request, in order. A request that
        fails gives a response with ``error_message`` (as Triton does); the stream goes on."""
        with self._streams_lock:
            full = self.streams >= self.max_streams
            self.streams += not full
        if full:
            self._abort(
                context,
                429,
                f"too many open ModelStreamInfer streams (limit {self.max_streams}); retry later",
            )
        try:
            stream_response = MESSAGES["ModelStreamInferResponse"]
            for request in requests:
                answer = self._infer(request, context)
                if answer[0] != 200:
                    yield stream_response(error_message=f"{status_code(answer[0])}: {answer[1]}")
                else:
                    yield stream_response(infer_response=answer[2])
        finally:
            with self._streams_lock:
                self.streams -= 1


class Undecodable:
    """What the deserializer hands over for bytes that are not the RPC's message: grpcio would otherwise
    answer INTERNAL and log a traceback for each; the handler answers INVALID_ARGUMENT instead."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def lenient(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: an :class:`Undecodable` for bytes it cannot parse."""

    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError, or nesting past protobuf's recursion limit
            name = message_class.DESCRIPTOR.name
            return Undecodable(f"the message is not a valid {name} ({type(exc).__name__}: {shown(str(exc))})")

    return deserialize


def _checked(method: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def handler(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            Servicer._abort(context, 400, request.message)
        return method(request, context)

    return handler


def start_server(
    plane: Any, loop: asyncio.AbstractEventLoop, host: str, port: int, workers: int = 8, limits: Any = None
) -> Any:
    """Start a grpcio server on a thread pool; returns it (``stop(grace)`` on shutdown). ``limits``
    (:class:`~wolt_jupyter.serving.http.Limits`) bound what clients may keep in progress: calls in all
    (``grpc_max_concurrent_rpcs``: grpcio answers RESOURCE_EXHAUSTED beyond, so a client that never reads its
    answers holds at most that many), HTTP/2 streams of one connection, and open ModelStreamInfer streams."""
    import grpc

    from wolt_jupyter.serving.http import Limits

    limits = limits or Limits()
    servicer = Servicer(plane, loop, max_streams=limits.grpc_max_infer_streams)
    handlers = {
        rpc: grpc.unary_unary_rpc_method_handler(
            _checked(getattr(servicer, rpc)),
            request_deserializer=lenient(MESSAGES[req]),
            response_serializer=MESSAGES[resp].SerializeToString,
        )
        for rpc, (req, resp) in _RPCS.items()
    }
    rpc, req, resp = STREAM_RPC
    handlers[rpc] = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer,
        request_deserializer=lenient(MESSAGES[req]),
        response_serializer=MESSAGES[resp].SerializeToString,
    )
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wolt-grpc"),
        options=[
            ("grpc.max_receive_message_length", plane.max_body),
            ("grpc.max_concurrent_streams", limits.grpc_max_streams_per_connection),
        ],
        maximum_concurrent_rpcs=limits.grpc_max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server
