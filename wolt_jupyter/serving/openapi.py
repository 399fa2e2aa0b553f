"""The runtime's REST API as an OpenAPI 3.0 document, served at ``GET /v2/openapi.json``.

Request and response shapes follow the Open Inference Protocol (V2) REST definition (KServe's
``open_inference_rest.yaml``: ``InferenceRequest``, ``RequestInput``, ``RequestOutput``, the metadata and
error objects); the feedback and ``/admin`` routes are this runtime's own. Clients and API tools read it, and
the fuzz tests (schemathesis) generate requests from it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from wolt_jupyter.serving.tensors import DTYPES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_ERROR = {"description": "what was wrong, in one line", **_json(_ref("Error"))}
_ERRORS = {str(code): _ERROR for code in (400, 404, 405, 413, 414, 431)}
_SHUTTING_DOWN = {"503": {"description": "loading, or shutting down (Retry-After)", **_json(_ref("Error"))}}
_MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
_BEARER = [{"bearer": []}]
_UNAUTHORIZED = {"401": {"description": "missing or wrong bearer token", **_json(_ref("Error"))}}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Parameters": {"type": "object", "additionalProperties": True},
    "Tensor": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": list(DTYPES)},
            "parameters": _ref("Parameters"),
            "data": {},  # nested lists of numbers, booleans or strings (any JSON: the runtime checks it)
        },
    },
    "RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _ref("Parameters")},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "inputs": {"type": "array", "items": _ref("Tensor")},
            "outputs": {"type": "array", "items": _ref("RequestOutput")},
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "outputs": {"type": "array", "items": _ref("Tensor")},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            "parameters": _ref("Parameters"),
        },
    },
    "Feedback": {
        "type": "object",
        "required": ["feedback"],
        "properties": {
            "feedback": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "ground_truth"],
                    "properties": {
                        "id": {"type": "string", "description": "the request id the runtime answered"},
                        "ground_truth": {},
                        "time": {"type": "number", "description": "epoch seconds (default: now)"},
                    },
                },
            }
        },
    },
    "Routing": {"type": "object", "additionalProperties": True},
}


def _get(summary: str, ok: dict[str, Any], params: list | None = None, **more: Any) -> dict[str, Any]:
    op = {"summary": summary, "responses": {"200": ok, **_ERRORS, **_SHUTTING_DOWN}, **more}
    if params:
        op["parameters"] = params
    return {"get": op}


def _post(summary: str, body: dict[str, Any], ok: dict[str, Any], params: list | None = None, **more: Any):
    op = {
        "summary": summary,
        "requestBody": {"required": True, **_json(body)},
        "responses": {"200": ok, **_ERRORS, **_SHUTTING_DOWN},
        **more,
    }
    if params:
        op["parameters"] = params
    return {"post": op}


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the runtime's REST routes."""
    from wolt_jupyter._version import __version__

    ready = {"description": "ready", **_json({"type": "object"})}
    meta = {"description": "model metadata", **_json(_ref("ModelMetadata"))}
    infer_ok = {
        "description": "outputs (the answering variant in parameters.variant and x-wolt-variant)",
        **_json(_ref("InferenceResponse")),
    }
    infer_responses = {
        "500": {"description": "the model failed on valid input", **_json(_ref("Error"))},
        "503": {
            "description": "loading, shutting down, the log's disk is full, or the variant's queue is full or "
            "its predicts hung (Retry-After)",
            **_json(_ref("Error")),
        },
        "504": {"description": "the variant did not answer within its timeout", **_json(_ref("Error"))},
    }
    admin = {"security": _BEARER}
    routing = {"description": "the routing after the change", **_json(_ref("Routing"))}
    stats = {
        "description": "model_stats: per variant, rows, executions, success/fail/queue/compute durations",
        **_json(
            {"type": "object", "required": ["model_stats"], "properties": {"model_stats": {"type": "array"}}}
        ),
    }
    paths: dict[str, Any] = {
        "/v2": _get(
            "server metadata", {"description": "name, version, extensions", **_json({"type": "object"})}
        ),
        "/v2/health/live": _get("the process answers", ready),
        "/v2/health/ready": _get("every variant is loaded", ready),
        "/v2/openapi.json": _get(
            "this document", {"description": "OpenAPI 3.0", **_json({"type": "object"})}
        ),
        "/v2/models/{model_name}": _get("deployment metadata", meta, [_MODEL]),
        "/v2/models/{model_name}/ready": _get("deployment ready", ready, [_MODEL]),
        "/v2/models/{model_name}/versions/{model_version}": _get(
            "variant metadata", meta, [_MODEL, _VERSION]
        ),
        "/v2/models/{model_name}/versions/{model_version}/ready": _get(
            "variant ready", ready, [_MODEL, _VERSION]
        ),
        "/v2/models/stats": _get("statistics of every variant (Triton's statistics extension)", stats),
        "/v2/models/{model_name}/stats": _get("statistics of every variant", stats, [_MODEL]),
        "/v2/models/{model_name}/versions/{model_version}/stats": _get(
            "statistics of one variant (a variant name or the registry version it serves)",
            stats,
            [_MODEL, _VERSION],
        ),
        "/v2/models/{model_name}/infer": _post(
            "infer (routed by the traffic split)", _ref("InferenceRequest"), infer_ok, [_MODEL]
        ),
        "/v2/models/{model_name}/versions/{model_version}/infer": _post(
            "infer on one variant", _ref("InferenceRequest"), infer_ok, [_MODEL, _VERSION]
        ),
        "/v2/models/{model_name}/feedback": _post(
            "ground truth for earlier requests (feedback.token or admin.token)",
            _ref("Feedback"),
            {"description": "how many were stored", **_json({"type": "object"})},
            [_MODEL],
            security=_BEARER,
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
        "/admin/routing": _get("current routing", routing, **admin),
        "/admin/traffic": _post("set weights", {"type": "object"}, routing, **admin),
        "/admin/promote": _post("one variant takes all traffic", {"type": "object"}, routing, **admin),
        "/admin/rollback": _post("the previous routing", {"type": "object"}, routing, **admin),
        "/admin/spec": _post("route by a whole new spec", {"type": "object"}, routing, **admin),
        "/admin/flush": _post("wait for shadows and the response log", {"type": "object"}, routing, **admin),
    }
    for route in ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer"):
        paths[route]["post"]["responses"].update(infer_responses)
    for route, item in paths.items():
        if route.startswith("/admin/") or route.endswith("/feedback"):
            for op in item.values():
                op["responses"].update(_UNAUTHORIZED)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "wolt-jupyter runtime (V2 / Open Inference Protocol)",
            "version": __version__,
            "description": "One deployment: {model_name} is the deployment, {model_version} a variant.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@lru_cache(maxsize=1)
def openapi_json() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()
