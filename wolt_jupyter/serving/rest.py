"""The REST codec over the data plane: V2 routes in, ``Response`` objects out.

Decoding (JSON, the binary tensor extension, gzip/deflate bodies) and encoding happen here; routing,
batching, shadows, the response log and metrics are the data plane's. Bodies above ``OFFLOAD_BYTES`` are
decoded in a worker thread so one big upload does not stall every other client. Admin routes are
``serving.admin``'s, feedback ``serving.feedback``'s.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.dataplane import DataPlane, InferResult, Routed
from wolt_jupyter.serving.http import Request, Response, error_response, json_response
from wolt_jupyter.serving.router import RETRIED_HEADER, ROUTE_KEY_HEADER, VARIANT_HEADER
from wolt_jupyter.serving.tensors import encode_response, parse_request
from wolt_jupyter.untrusted import shown, shown_value

log = logging.getLogger(__name__)

# bodies above this are decoded in a worker thread, so one big upload does not stall every other client
OFFLOAD_BYTES = 256 * 1024
RETRY_AFTER_S = "5"  # what a client is told to wait on a 503 (shutting down, loading, the log's disk full)
OPENAPI_PATH = "/v2/openapi.json"
Respond = Callable[[Response], None]


def shutting_down_response() -> Response:
    """503 with Retry-After: the runtime is stopping (another replica, or the restarted one, will answer)."""
    return json_response(
        503,
        {"error": "the runtime is shutting down; retry on another replica or after restart"},
        (("retry-after", RETRY_AFTER_S),),
    )


def _header_length(value: str) -> int:
    """``Inference-Header-Content-Length`` as an int; ProtocolError 400 for anything but ASCII digits."""
    v = value.strip()
    if not (v.isascii() and v.isdigit() and len(v) <= 18):
        raise ProtocolError(
            400, f"Inference-Header-Content-Length must be a non-negative integer, got {shown_value(value)}"
        )
    return int(v)


class _RestReply:
    """Encodes one request's :class:`InferResult` as a V2 JSON (or binary-extension) response."""

    __slots__ = ("name", "respond")

    def __init__(self, name: str, respond: Respond) -> None:
        self.name, self.respond = name, respond

    def encode(self, result: InferResult) -> tuple[int, Response]:
        if result.status == 503:  # loading, or the log cannot keep the record: the same request works later
            return 503, json_response(503, {"error": result.error}, (("retry-after", RETRY_AFTER_S),))
        if result.status != 200:
            return result.status, error_response(result.status, result.error or "inference failed")
        req, adapter, variant = result.req, result.adapter, result.variant
        body, header_len = encode_response(
            model_name=self.name,
            model_version=variant,
            req_id=req.id,
            outputs=result.outputs,
            parameters={
                "variant": variant,
                "registered_model": adapter.model_name,
                "registered_version": adapter.model_version,
            },
            binary_outputs=req.binary_outputs,
            binary_all=req.binary_all,
        )
        headers: tuple[tuple[str, str], ...] = ((VARIANT_HEADER, variant),)
        if result.retried_from is not None:  # the champion answered for a challenger that failed or timed out
            headers += ((RETRIED_HEADER, result.retried_from),)
        if header_len is None:
            return 200, Response(200, body, headers=headers)
        headers += (("inference-header-content-length", str(header_len)),)
        return 200, Response(200, body, "application/octet-stream", headers)

    def send(self, wire: Response) -> None:
        self.respond(wire)


class RestApi:
    """``handle(request, respond)`` for the HTTP server: the V2 routes, ``/metrics``, admin and feedback."""

    def __init__(self, plane: DataPlane) -> None:
        from wolt_jupyter.serving.admin import AdminApi
        from wolt_jupyter.serving.feedback import FeedbackApi

        self.plane = plane
        self.admin = AdminApi(plane)
        self.feedback = FeedbackApi(plane)

    def handle(self, request: Request, respond: Respond) -> None:
        plane = self.plane
        path, method = request.path, request.method
        if plane.stopping and not path.startswith(("/v2/health/live", "/metrics")):
            return respond(shutting_down_response())
        if path.startswith("/v2/models/"):
            return self._model_route(request, respond)
        if method == "GET":
            if path == "/v2/health/live":
                return respond(json_response(200, {"live": True}))
            if path == "/v2/health/ready":
                if plane.ready:
                    return respond(json_response(200, {"ready": True}))
                return respond(
                    json_response(
                        503, {"ready": False, "error": plane.load_error or "models are still loading"}
                    )
                )
            if path == "/v2":
                return respond(json_response(200, plane.server_metadata()))
            if path == "/metrics":
                return respond(
                    Response(200, plane.registry.render(), "text/plain; version=0.0.4; charset=utf-8")
                )
            if path == OPENAPI_PATH:
                from wolt_jupyter.serving.openapi import openapi_json

                return respond(Response(200, openapi_json()))
        if path.startswith("/admin/"):
            return self.admin.handle(request, respond)
        return respond(
            error_response(
                404,
                f"no route {method} {shown(path)}; see /v2, {OPENAPI_PATH} and the V2 inference protocol",
            )
        )

    def _model_route(self, request: Request, respond: Respond) -> None:
        path, method = request.path, request.method
        parts = path[len("/v2/models/") :].split("/")
        model, rest, version = parts[0], parts[1:], None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = "/".join(rest)
        if model == "stats" and not rest and method == "GET":  # Triton: GET /v2/models/stats (every model)
            return respond(json_response(200, self.plane.statistics(None, None)))
        if action == "infer":
            if method != "POST":
                return respond(error_response(405, "use POST for infer"))
            return self._infer(request, respond, model, version)
        if action == "feedback":
            if method != "POST":
                return respond(error_response(405, "use POST for feedback"))
            return self.feedback.handle(request, respond, model)
        if method != "GET":
            return respond(error_response(405, f"use GET for {shown(path)}"))
        try:
            if action == "":
                return respond(json_response(200, self.plane.model_metadata(model, version)))
            if action == "ready":
                variant, ready = self.plane.model_ready(model, version)
                return respond(
                    json_response(200 if ready else 503, {"name": model, "version": variant, "ready": ready})
                )
            if action == "stats":
                return respond(json_response(200, self.plane.statistics(model, version)))
        except ProtocolError as exc:
            return respond(error_response(exc.status, exc.message))
        return respond(
            error_response(
                404,
                f"no route {shown(path)}; expected /v2/models/{{m}}[/versions/{{v}}][/infer|/ready|/stats]",
            )
        )

    # -- inference -----------------------------------------------------------------------------------------
    def _infer(self, request: Request, respond: Respond, model: str, version: str | None) -> None:
        plane = self.plane
        t0 = time.perf_counter()
        reply = _RestReply(plane.name, respond)
        table = plane.router.table  # the one read: this request is routed by this table only
        try:
            plane.resolve(model, version, table)
            plane.check_serving()
        except ProtocolError as exc:
            return plane.refuse(model, version, exc, reply, t0)
        args = (request, model, version, table, t0)
        if len(request.body) <= OFFLOAD_BYTES or plane.loop is None:
            return self._decoded(args, self._decode_or_error(*args), reply)
        # a big body: decode it in a worker thread; the loop keeps answering everyone else meanwhile
        future = plane.loop.run_in_executor(None, self._decode_or_error, *args)
        future.add_done_callback(lambda f: self._decoded(args, f.result(), reply))
        return None

    def _decode(self, request: Request, model: str, version: str | None, table: Any, t0: float) -> Routed:
        """Body -> a routed request; ProtocolError for whatever the client got wrong."""
        hl = request.headers.get("inference-header-content-length")
        header_len = None if hl is None else _header_length(hl)
        body = request.body
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            body = self._decompress(body, encoding)
        req = parse_request(body, header_len)
        return self.plane.route(model, version, req, request.headers.get(ROUTE_KEY_HEADER), t0, table)

    def _decode_or_error(self, *args: Any) -> Routed | ProtocolError:
        try:
            return self._decode(*args)
        except ProtocolError as exc:
            return exc
        except Exception as exc:  # only the client's bytes were read: its fault, said as a 400, never lost
            log.debug("decoding a request failed", exc_info=True)  # the client's: no traceback per request
            return ProtocolError(400, f"cannot decode the request: {type(exc).__name__}: {shown(str(exc))}")

    def _decoded(self, args: tuple, decoded: Routed | ProtocolError, reply: _RestReply) -> None:
        if isinstance(decoded, ProtocolError):
            _request, model, version, _table, t0 = args
            return self.plane.refuse(model, version, decoded, reply, t0)
        self.plane.submit(decoded, reply)
        return None

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        """gzip/deflate bodies (tritonclient's request_compression_algorithm), bounded by the body limit."""
        wbits = {"gzip": 31, "deflate": 15}.get(encoding)
        if wbits is None:
            raise ProtocolError(
                400, f"Content-Encoding {shown_value(encoding)} is not supported; use gzip, deflate or none"
            )
        limit = self.plane.max_body
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ProtocolError(400, f"body is not valid {encoding} data: {exc}") from None
        if len(out) > limit:
            raise ProtocolError(413, f"decompressed body is larger than the limit of {limit} bytes")
        return out
