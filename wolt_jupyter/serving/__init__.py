"""The V2 (Open Inference Protocol) serving runtime: one process serves one deployment.

Every variant's MLflow pyfunc model is loaded in-process, so routing (A/B split, sticky keys, shadows) is a
function call rather than a network hop::

    python -m wolt_jupyter.serving --spec SPEC.yaml [--host 127.0.0.1] [--port 8080] [--grpc-port P]
        [--state-dir DIR] [--max-body-bytes N] [--max-batch N] [--shadow-queue-size N] [--no-response-log]

Model URIs come from the spec (pin aliases to versions first); MLflow reads ``MLFLOW_TRACKING_URI``.

One data plane (``dataplane.py``: routing, micro-batching, the champion retry, shadows, response log,
metrics, statistics) under two codecs. REST (``rest.py`` over the ``http.py`` server): ``GET /v2``,
``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]``,
``/v2/models/{m}[/versions/{v}]/ready``, ``/v2/models/{m}[/versions/{v}]/stats``, ``/v2/models/stats``,
``POST /v2/models/{m}[/versions/{v}]/infer`` — ``{m}`` is the deployment, ``{v}`` a variant or the registry
version a variant serves (bypasses the split). The binary tensor extension and gzip/deflate bodies are
accepted. Errors are ``{"error": "..."}`` with 400/401/404/405/408/413/414/431/503 (``http.Limits``, which
also bound what a client that never reads its answers can make the runtime hold), or 500
when the model failed on valid input. ``GET /v2/openapi.json`` describes the routes; ``POST
/v2/models/{m}/feedback`` (``feedback.py``) takes the feedback token. The answering variant is in the
response's ``parameters.variant`` and the ``x-wolt-variant`` header; the sticky key is
``parameters[sticky_key]`` or the ``x-wolt-route-key`` header. ``GET /metrics`` is Prometheus text.

Admin (``admin.py``; ``Authorization: Bearer <token>``, the token in ``<state>/deployments/<name>/admin.token``,
0600): ``GET /admin/routing``; ``POST /admin/traffic {"weights": {...}}``, ``/admin/promote {"variant": v}``,
``/admin/rollback``, ``/admin/spec {"spec": {...}}`` (409 if it needs models this process has not loaded),
``/admin/stage`` (blue-green), ``/admin/flush`` (answers once queued shadow copies and response-log records
are written).

gRPC (``grpc_service.py``, with ``--grpc-port``): ``inference.GRPCInferenceService`` — the V2 RPCs,
``ModelStatistics`` and ``ModelStreamInfer`` — over the same data plane.

Modules: ``tensors`` (V2 codec), ``models`` (signature mapping, fast array path), ``router`` (pure routing
tables), ``shadow`` (off-path shadow workers), ``stats`` (statistics extension), ``metrics`` (exposition),
``admin`` (tokens and admin routes), ``feedback``, ``connections`` (the connection cap: the oldest idle
connection makes way for a new client).
Nothing heavy is imported here: MLflow, pandas and numpy are imported by the submodules that need them.
"""

from __future__ import annotations

from wolt_jupyter.errors import ProtocolError  # one error tree: defined in wolt_jupyter.errors

__all__ = ["ProtocolError"]
