"""gRPC ``inference.GRPCInferenceService`` (the V2 protocol's gRPC form), with the same routing as REST.

Why no generated ``*_pb2`` files: generated code pins a protobuf runtime range, and MLflow pins protobuf
too. The message types are built here at import time from a descriptor written out field by field from the
V2 protocol definition, and served through grpcio's generic handlers. Standard clients (tritonclient.grpc)
see the same wire format as from generated code.

Requests are decoded in a grpcio worker thread, handed to the event loop (``Runtime.submit``: routing,
micro-batching, shadows, response log, metrics), and the worker waits for the result and encodes it.
Outputs go back as ``raw_output_contents``, as Triton does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from math import prod
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.router import VARIANT_HEADER
from wolt_jupyter.serving.tensors import (
    DATATYPE_NAMES,
    DTYPES,
    InferRequest,
    Tensor,
    check_shape,
    checked_cast,
    datatype_of,
    from_binary,
    to_binary,
)

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
}
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
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        full: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{full}"))
        for full in _MESSAGES
    }


MESSAGES = _build()
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def _param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _set_param(p: Any, value: Any) -> None:
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
            raise ProtocolError(400, f"input {name!r} is given twice")
        seen.add(name)
        if datatype not in DTYPES:
            raise ProtocolError(400, f"input {name!r}: datatype {datatype!r} is not one of {DATATYPE_NAMES}")
        shape = check_shape(name, list(t.shape))
        if raw:
            arr = from_binary(name, datatype, shape, raw[i])
        else:
            field = _CONTENTS.get(datatype)
            if field is None:
                raise ProtocolError(400, f"input {name!r}: {datatype} travels only in raw_input_contents")
            values = list(getattr(t.contents, field))
            if datatype == "BYTES":
                arr = np.empty(len(values), dtype=object)
                arr[:] = [_text(v) for v in values]
            else:  # decoded wide, then checked: an INT8 of 300 is a 400 naming the input, not an overflow
                wide = np.asarray(values, dtype=np.float64 if datatype.startswith("FP") else None)
                arr = checked_cast(name, datatype, wide)
            if arr.size != prod(shape):
                raise ProtocolError(
                    400, f"input {name!r}: shape {list(shape)} needs {prod(shape)} elements, got {arr.size}"
                )
            arr = arr.reshape(shape)
        params = {k: _param_value(v) for k, v in t.parameters.items()}
        inputs.append(Tensor(name, datatype, shape, arr, params))
    params = {k: _param_value(v) for k, v in request.parameters.items()}
    names = [o.name for o in request.outputs] or None
    return InferRequest(
        id=request.id or _new_id(), inputs=inputs, parameters=params, output_names=names, binary_outputs=set(),
        binary_all=True,
    )  # fmt: skip


def _text(v: bytes) -> Any:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


class Servicer:
    """The six V2 RPCs over a :class:`~wolt_jupyter.serving.app.Runtime` running on ``loop``."""

    def __init__(self, runtime: Any, loop: asyncio.AbstractEventLoop, timeout: float = 60.0) -> None:
        self.runtime, self.loop, self.timeout = runtime, loop, timeout

    def _abort(self, context: Any, status: int, message: str) -> None:
        import grpc

        context.abort(getattr(grpc.StatusCode, _STATUS.get(status, "INTERNAL")), message)

    def ServerLive(self, request: Any, context: Any) -> Any:
        return MESSAGES["ServerLiveResponse"](live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return MESSAGES["ServerReadyResponse"](ready=self.runtime.ready)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        from wolt_jupyter.serving.app import SERVER_NAME, SERVER_VERSION

        return MESSAGES["ServerMetadataResponse"](name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    def _http_json(self, path: str, context: Any) -> dict[str, Any]:
        """Reuse the REST handlers for the metadata RPCs (one code path for names, versions, readiness)."""
        import json

        from wolt_jupyter.serving.http import Request

        box: list[Any] = []
        self.runtime.handle(Request("GET", path, "", {}, b""), box.append)
        doc = json.loads(box[0].body)
        if box[0].status not in (200, 503) or (box[0].status == 503 and "ready" not in doc):
            self._abort(context, box[0].status, doc.get("error", "error"))
        return doc

    def _model_path(self, request: Any, context: Any) -> str:
        """``/v2/models/{name}[/versions/{version}]``; NOT_FOUND for names no model can have (a "/")."""
        for value in (request.name, request.version):
            if "/" in value or "?" in value:
                self._abort(context, 404, f"no model {value[:120]!r}: names hold no '/' or '?'")
        return f"/v2/models/{request.name}" + (f"/versions/{request.version}" if request.version else "")

    def ModelReady(self, request: Any, context: Any) -> Any:
        path = self._model_path(request, context) + "/ready"
        return MESSAGES["ModelReadyResponse"](ready=bool(self._http_json(path, context).get("ready")))

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        doc = self._http_json(self._model_path(request, context), context)
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

    def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            req = decode(request)
        except ProtocolError as exc:
            self._abort(context, exc.status, exc.message)
        meta = dict(context.invocation_metadata() or ())
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(
            self.runtime.submit,
            request.model_name,
            request.model_version or None,
            req,
            meta.get("x-wolt-route-key"),
            future.set_result,
        )
        try:
            result = future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            self._abort(context, 408, f"no answer within {self.timeout:g} s")
        if result.status != 200:
            self._abort(context, result.status, result.error or "inference failed")
        outputs = result.outputs
        if req.output_names is not None:
            by_name = dict(outputs)
            missing = [n for n in req.output_names if n not in by_name]
            if missing:
                self._abort(
                    context,
                    400,
                    f"unknown output(s) {', '.join(missing)}; the model returns {', '.join(by_name)}",
                )
            outputs = [(n, by_name[n]) for n in req.output_names]
        adapter = result.adapter
        resp = MESSAGES["ModelInferResponse"](
            model_name=self.runtime.name, model_version=result.variant, id=req.id
        )
        for key, value in (
            ("variant", result.variant),
            ("registered_model", adapter.model_name),
            ("registered_version", adapter.model_version),
        ):
            _set_param(resp.parameters[key], value)
        for name, arr in outputs:
            datatype = datatype_of(arr)
            resp.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            resp.raw_output_contents.append(to_binary(arr, datatype))
        context.set_trailing_metadata(((VARIANT_HEADER, result.variant),))
        return resp


def start_server(
    runtime: Any, loop: asyncio.AbstractEventLoop, host: str, port: int, workers: int = 8
) -> Any:
    """Start a grpcio server on a thread pool; returns it (``stop(grace)`` on shutdown)."""
    import grpc

    servicer = Servicer(runtime, loop)
    handlers = {
        rpc: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, rpc),
            request_deserializer=MESSAGES[req].FromString,
            response_serializer=MESSAGES[resp].SerializeToString,
        )
        for rpc, (req, resp) in _RPCS.items()
    }
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wolt-grpc"),
        options=[("grpc.max_receive_message_length", runtime.max_body)],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server
