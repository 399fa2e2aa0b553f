"""The runtime: V2 routes, routing, micro-batched predicts, shadows, response log and metrics for one
deployment.

The request path runs on the event loop and never blocks on I/O. A parsed request is routed (one read of the
router's immutable table), mapped onto its variant's signature, and queued for that variant; a callback
scheduled with ``call_soon`` then runs one ``predict`` over every request that arrived in the same loop
iteration. That is adaptive batching with no added wait: when the server is idle a request is predicted
alone at once, and under load the batch grows by itself. After the response is written, shadow copies and
the response-log record are handed to background threads.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import zlib
from collections.abc import Callable
from math import isfinite
from pathlib import Path
from typing import Any

import numpy as np

from wolt_jupyter import __version__
from wolt_jupyter.config import mask_url
from wolt_jupyter.errors import InvalidArgument, WoltError
from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.admin import FEEDBACK_TOKEN_FILE, authorized, ensure_token
from wolt_jupyter.serving.http import Request, Response, error_response
from wolt_jupyter.serving.metrics import (
    BATCH_BUCKETS,
    VALUE_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    Registry,
    add_shadow_latency,
    prime_series,
)
from wolt_jupyter.serving.models import BatchMismatch, ModelAdapter, Prepared
from wolt_jupyter.serving.router import ROUTE_KEY_HEADER, VARIANT_HEADER, Router, RoutingTable
from wolt_jupyter.serving.shadow import ShadowItem, ShadowResult, ShadowWorker, disagrees
from wolt_jupyter.serving.tensors import InferRequest, encode_response, parse_request
from wolt_jupyter.spec import DeploymentSpec

log = logging.getLogger(__name__)

SERVER_NAME = "wolt-jupyter"
SERVER_VERSION = __version__
DEFAULT_MAX_BODY = 32 * 1024 * 1024
MAX_BATCH = 64  # requests per live predict
MAX_ID_LENGTH = 128  # request ids are stored (response log, feedback): longer ones are refused at the edge
# bodies above this are decoded in a worker thread, so one big upload does not stall every other client
OFFLOAD_BYTES = 256 * 1024
RETRY_AFTER_S = "5"  # what a client is told to wait while the runtime shuts down
OPENAPI_PATH = "/v2/openapi.json"


def _shown(text: str, limit: int = 120) -> str:
    """A client-sent string as quoted back in an error: bounded, so an error never echoes a huge input."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _header_length(value: str) -> int:
    """``Inference-Header-Content-Length`` as an int; ProtocolError 400 for anything but ASCII digits."""
    v = value.strip()
    if not (v.isascii() and v.isdigit() and len(v) <= 18):
        raise ProtocolError(
            400, f"Inference-Header-Content-Length must be a non-negative integer, got {_shown(value)!r}"
        )
    return int(v)


def _client_fault(prepared: Prepared, exc: Exception) -> str | None:
    """Why a predict that raised is the request's fault: the model rejected NaN or infinite input values
    (a ValueError on data the wire format allows). The message names the input; None: the model's fault."""
    if not isinstance(exc, ValueError):
        return None
    for t in prepared.tensors:
        arr = t.array
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            return f"input {t.name!r} holds NaN or infinite values, which the model rejects: {exc}"
    return None


def _feedback_problem(item: Any) -> str | None:
    """What is wrong with one feedback item (checked before anything is written), or None."""
    if not isinstance(item, dict):
        return "must be an object with a string 'id' and a 'ground_truth'"
    rid = item.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > 255:
        return "needs a string 'id' of 1-255 characters (the request id the runtime answered)"
    if "ground_truth" not in item:
        return "needs a 'ground_truth' (any JSON value)"
    at = item.get("time")
    if at is not None and (
        isinstance(at, bool)
        or not isinstance(at, (int, float))
        or (isinstance(at, int) and abs(at) >= 2**53)
        or (isinstance(at, float) and not isfinite(at))
    ):
        return f"'time' must be epoch seconds (a number), got {_shown(repr(at))}"
    return None


def shutting_down_response() -> Response:
    """503 with Retry-After: the runtime is stopping (another replica, or the restarted one, will answer)."""
    return Response(
        503,
        json.dumps(
            {"error": "the runtime is shutting down; retry on another replica or after restart"}
        ).encode(),
        headers=(("retry-after", RETRY_AFTER_S),),
    )


def _json(status: int, doc: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode(), headers=headers)


def _values(arr: np.ndarray) -> list[Any]:
    """Per-row values for the response log (JSON-safe)."""
    if arr.dtype.kind in "OSU":
        return [[_scalar(x) for x in row] if isinstance(row, list) else _scalar(row) for row in arr.tolist()]
    return arr.tolist()


def _scalar(x: Any) -> Any:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


def _check_id(req: InferRequest) -> None:
    if req.id is not None and len(req.id) > MAX_ID_LENGTH:
        raise ProtocolError(
            400, f"request id is {len(req.id)} characters long; at most {MAX_ID_LENGTH} are accepted"
        )


class _Job:
    """One queued request. ``raw`` jobs (gRPC) get an :class:`InferResult` instead of an HTTP response."""

    __slots__ = ("adapter", "prepared", "raw", "req", "respond", "t0", "table", "variant")

    def __init__(
        self,
        req: InferRequest,
        prepared: Prepared,
        respond: Callable,
        t0: float,
        variant: str,
        table: Any,
        adapter: ModelAdapter,
        raw: bool = False,
    ):
        self.req, self.prepared, self.respond, self.t0 = req, prepared, respond, t0
        self.variant, self.table, self.adapter, self.raw = variant, table, adapter, raw


class InferResult:
    """What a protocol adapter other than HTTP (gRPC) gets back: outputs, or a status and a message."""

    __slots__ = ("adapter", "error", "outputs", "status", "variant")

    def __init__(
        self, status: int, outputs: list | None, error: str | None, variant: str, adapter: Any
    ) -> None:
        self.status, self.outputs, self.error, self.variant, self.adapter = (
            status,
            outputs,
            error,
            variant,
            adapter,
        )


class Runtime:
    """Serves one deployment. Build it, ``load()`` the models (any thread), then hand ``handle`` to the HTTP
    server; ``close()`` flushes shadows and the response log."""

    def __init__(
        self,
        spec: DeploymentSpec,
        state_dir: Path,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_batch: int = MAX_BATCH,
        response_store_url: str | None = None,
        log_responses: bool | None = None,
        shadow_queue_size: int = 10_000,
    ) -> None:
        spec.validate()
        self.name = spec.name
        self.state_dir = Path(state_dir)
        self.router = Router(spec)
        self.models: dict[str, ModelAdapter] = {}
        self.ready = False
        self.stopping = False  # set by begin_shutdown(): requests then get 503 "shutting down"
        self.load_error: str | None = None
        self.max_body = max_body
        self.max_batch = max_batch
        from wolt_jupyter.private import private_dir

        private_dir(self.state_dir)
        self.token = ensure_token(self.state_dir, self.name)
        # feedback has its own credential: a labelling job gets this one, never the admin token
        self.feedback_token = ensure_token(self.state_dir, self.name, FEEDBACK_TOKEN_FILE)
        self.shadow_workers: dict[str, ShadowWorker] = {}
        self.writer: Any = None
        self._log_responses = spec.logging.responses if log_responses is None else log_responses
        self._store_url = response_store_url
        self.shadow_queue_size = shadow_queue_size
        # queued jobs by the adapter that will predict them (a redeploy may swap a variant's adapter meanwhile)
        self._pending: dict[ModelAdapter, list[_Job]] = {}
        self._staging = False
        self._recent_inputs: Any = None  # the last live request's tensors: a new revision must answer them
        self.shadow_backlog_discarded = 0
        self._record_cls: Any = None
        self._loop: Any = None
        self._init_metrics()
        prime_series(self.registry, self.name, self.router.table.spec)  # scraped at 0 while models load

    # -- lifecycle -----------------------------------------------------------------------------------------
    def bind_loop(self, loop: Any) -> None:
        self._loop = loop

    def load(self, loader: Callable[[str, str], ModelAdapter] | None = None) -> None:
        """Load every variant (live and shadow), start shadow workers and the response log, then go ready."""
        self.models = self._load_models(self.router.table.spec, loader)
        if self._log_responses:
            self.writer = self._make_writer()
        for v in self.router.table.spec.shadows:
            self._shadow_worker(v.name)
        prime_series(self.registry, self.name, self.router.table.spec, self.models)
        # MLflow, pandas and sklearn leave ~1M long-lived objects; a full collection over them stalls the loop
        # for 100+ ms (it was the p99 under load). Freeze them out of the collector once everything is loaded.
        gc.collect()
        gc.freeze()
        self.ready = True

    def _load_models(
        self, spec: DeploymentSpec, loader: Callable[[str, str], ModelAdapter] | None = None
    ) -> dict[str, ModelAdapter]:
        """Adapters for every variant of ``spec``: the loaded one where the URI is unchanged, else a new load."""
        if loader is None:
            import functools

            from wolt_jupyter.serving.models import load

            loader = functools.partial(load, cache_dir=self.state_dir / "deployments" / self.name / "models")
        models: dict[str, ModelAdapter] = {}
        for v in spec.variants:
            current = self.models.get(v.name)
            if current is not None and current.uri == v.model:
                models[v.name] = current
                continue
            try:
                adapter = loader(v.name, v.model)
            except Exception as exc:
                raise WoltError(
                    f"variant {v.name!r} ({v.model}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            models[v.name] = adapter
            self.m_load.set(
                (self.name, v.name, adapter.model_name, adapter.model_version), adapter.load_seconds
            )
            log.info("loaded variant %s (%s) in %.2fs", v.name, v.model, adapter.load_seconds)
        return models

    def stage(
        self, doc: Any, loader: Callable[[str, str], ModelAdapter] | None = None
    ) -> tuple[DeploymentSpec, dict[str, ModelAdapter]]:
        """Blue-green, first half (a worker thread): load the models a new revision needs beside the ones that
        serve, and check that each new live model answers the last request this deployment served. Raises
        :class:`WoltError` with the reason; nothing that serves is touched."""
        spec = DeploymentSpec.from_dict(doc)
        if spec.name != self.name:
            raise WoltError(f"spec is for deployment {spec.name!r}; this runtime serves {self.name!r}")
        models = self._load_models(spec, loader)
        recent = self._recent_inputs
        if recent is not None:
            for v in spec.variants:
                adapter = models[v.name]
                if v.shadow or adapter is self.models.get(v.name):
                    continue
                try:
                    adapter.predict_prepared(adapter.prepare(recent))
                except Exception as exc:
                    raise WoltError(
                        f"variant {v.name!r} ({v.model}) cannot answer the requests this deployment serves: "
                        f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
                    ) from exc
        gc.collect()
        gc.freeze()
        return spec, models

    def switch(self, spec: DeploymentSpec, models: dict[str, ModelAdapter]) -> None:
        """Blue-green, second half (on the event loop): the new models and routing take traffic at once.

        Requests already queued finish on the adapter they were routed to; shadow workers whose model changed
        are replaced, the old ones finish their backlog in the background."""
        old_workers = {n: w for n, w in self.shadow_workers.items() if models.get(n) is not w.adapter}
        for n in old_workers:
            del self.shadow_workers[n]
        self.models = models
        self.router.replace(spec)
        prime_series(self.registry, self.name, spec, models)
        for v in spec.shadows:
            self._shadow_worker(v.name)
        if self.writer is None and spec.logging.responses and self._log_responses:
            self.writer = self._make_writer()
        elif self.writer is not None:
            self.writer.sample = float(spec.logging.sample)
        if old_workers:
            import threading

            def retire() -> None:
                for w in old_workers.values():
                    self.shadow_backlog_discarded += w.close(timeout=10.0)

            threading.Thread(target=retire, name="wolt-retire-shadows", daemon=True).start()

    def _make_writer(self) -> Any:
        from wolt_jupyter.responses import ResponseRecord, ResponseWriter, default_store_url

        self._record_cls = ResponseRecord
        url = self._store_url or default_store_url(self.name, self.state_dir)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        spec = self.router.table.spec
        # never block the event loop: a full queue counts a drop (exported as a metric). The spool makes each
        # record durable in the OS before its response goes out; a restart replays what the database missed.
        return ResponseWriter(
            url,
            on_full="drop",
            sample=float(spec.logging.sample),
            spool_dir=None
            if os.environ.get("WOLT_RESPONSE_SPOOL", "1")
            == "0"  # memory only: for measuring the spool's cost
            else self.state_dir / "deployments" / self.name / "spool",
        )

    def _shadow_worker(self, variant: str) -> ShadowWorker:
        worker = self.shadow_workers.get(variant)
        if worker is None:
            labels = (self.name, variant)
            adapter = self.models[variant]
            worker = ShadowWorker(
                adapter,
                on_result=lambda res: self._on_shadow_result(adapter, res),
                on_drop=lambda: self.m_shadow_drops.inc(labels),
                queue_size=self.shadow_queue_size,
            )
            self.shadow_workers[variant] = worker
        return worker

    def begin_shutdown(self) -> None:
        """From now on new requests get 503 "shutting down" with Retry-After (not "still loading")."""
        self.stopping = True

    def close(self, timeout: float = 30.0, shadow_timeout: float | None = None) -> dict[str, int]:
        """Finish queued shadow work, then flush the response log (both bounded by ``timeout``).

        Shadow copies still queued when the bound runs out are discarded, counted and said (a log line and
        the returned ``shadow_discarded``), never dropped silently."""
        self.stopping = True
        self.ready = False
        deadline = time.monotonic() + timeout
        shadow_deadline = time.monotonic() + (
            timeout / 2 if shadow_timeout is None else min(shadow_timeout, timeout)
        )
        for w in self.shadow_workers.values():
            self.shadow_backlog_discarded += w.close(timeout=max(0.1, shadow_deadline - time.monotonic()))
        if self.shadow_backlog_discarded:
            log.warning(
                "deployment %s: %d shadow copies were not predicted before shutdown (not logged)",
                self.name,
                self.shadow_backlog_discarded,
            )
        stats = {"shadow_discarded": self.shadow_backlog_discarded}
        if self.writer is not None:
            stats.update(self.writer.close(timeout=max(1.0, deadline - time.monotonic())))
        return stats

    # -- metrics -------------------------------------------------------------------------------------------
    def _init_metrics(self) -> None:
        r = self.registry = Registry()
        self.m_seldon = r.add(
            Histogram(
                "seldon_api_executor_server_requests_seconds",
                "Inference request latency in seconds (Seldon-compatible)",
                ("deployment_name", "predictor_name", "model_name", "model_version", "code"),
            )
        )
        self.m_predictions = r.add(
            Histogram(
                "wolt_predictions",
                "Value of the first output, per row and variant",
                ("deployment", "variant", "shadow"),
                VALUE_BUCKETS,
            )
        )
        self.m_batch = r.add(
            Histogram(
                "wolt_batch_requests",
                "Requests per live predict call",
                ("deployment", "variant"),
                BATCH_BUCKETS,
            )
        )
        self.m_model_errors = r.add(
            Counter("wolt_model_errors_total", "Predict calls that raised", ("deployment", "variant"))
        )
        self.m_shadow_cmp = r.add(
            Counter(
                "wolt_shadow_comparisons_total",
                "Shadow answers compared with the live answer",
                ("deployment", "shadow", "live"),
            )
        )
        self.m_shadow_dis = r.add(
            Counter(
                "wolt_shadow_disagreements_total",
                "Shadow answers that differ from the live answer",
                ("deployment", "shadow", "live"),
            )
        )
        self.m_shadow_errors = r.add(
            Counter("wolt_shadow_errors_total", "Shadow requests that failed", ("deployment", "variant"))
        )
        self.m_shadow_seconds = add_shadow_latency(r)
        self.m_shadow_drops = r.add(
            Counter(
                "wolt_shadow_dropped_total",
                "Shadow copies dropped on a full queue",
                ("deployment", "variant"),
            )
        )
        r.add(
            Gauge(
                "wolt_shadow_queue_depth",
                "Shadow copies waiting",
                ("deployment", "variant"),
                func=lambda: [((self.name, n), w.depth()) for n, w in self.shadow_workers.items()],
            )
        )
        r.add(
            Gauge(
                "wolt_shadow_discarded_total",
                "Shadow copies discarded unpredicted at shutdown or redeploy",
                ("deployment",),
                func=lambda: [((self.name,), self.shadow_backlog_discarded)],
                kind="counter",
            )
        )
        self.m_load = r.add(
            Gauge(
                "wolt_model_load_seconds",
                "Time to load the variant's model",
                ("deployment", "variant", "model_name", "model_version"),
            )
        )
        r.add(
            Gauge(
                "wolt_routing_weight",
                "Current traffic weight of each live variant",
                ("deployment", "variant"),
                func=lambda: [((self.name, n), w) for n, w in self.router.table.weights.items()],
            )
        )
        for key, doc in (
            ("queued", "Response-log records waiting to be written"),
            ("written", "Response-log records written"),
            ("dropped", "Response-log records dropped"),
        ):
            r.add(
                Gauge(
                    f"wolt_response_log_{key}" + ("" if key == "queued" else "_total"),
                    doc,
                    ("deployment",),
                    func=(lambda k=key: [((self.name,), self._writer_stat(k))]),
                    kind="gauge" if key == "queued" else "counter",
                )
            )
        r.add(
            Gauge(
                "wolt_ready",
                "1 once every variant is loaded",
                ("deployment",),
                func=lambda: [((self.name,), int(self.ready))],
            )
        )

    def _writer_stat(self, key: str) -> float:
        if self.writer is None:
            return 0
        return float(self.writer.stats().get(key, 0))

    # -- dispatch ------------------------------------------------------------------------------------------
    def drain(self, timeout: float = 30.0, shadow_timeout: float | None = None) -> bool:
        """Block (never on the event loop) until queued shadow copies are predicted (waiting at most
        ``shadow_timeout``) and every response-log record so far is written: read-your-writes for a notebook
        that reads the log right after predicting. False if either bound ran out."""
        deadline = time.monotonic() + timeout
        shadow_deadline = (
            deadline if shadow_timeout is None else min(deadline, time.monotonic() + shadow_timeout)
        )
        ok = all(
            w.drain(max(0.0, shadow_deadline - time.monotonic())) for w in list(self.shadow_workers.values())
        )
        if self.writer is not None:
            ok = bool(self.writer.flush(timeout=max(0.1, deadline - time.monotonic()))) and ok
        return ok

    def handle(self, request: Request, respond: Callable[[Response], None]) -> None:
        path = request.path
        method = request.method
        if self.stopping and not path.startswith(("/v2/health/live", "/metrics")):
            return respond(shutting_down_response())
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/") :].split("/")
            model = parts[0]
            version = None
            rest = parts[1:]
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            action = "/".join(rest)
            if action == "infer":
                if method != "POST":
                    return respond(error_response(405, "use POST for infer"))
                return self._infer(request, respond, model, version)
            if action == "feedback":
                if method != "POST":
                    return respond(error_response(405, "use POST for feedback"))
                return self._feedback(request, respond, model)
            if method != "GET":
                return respond(error_response(405, f"use GET for {_shown(path)}"))
            if action == "":
                return respond(self._model_metadata(model, version))
            if action == "ready":
                return respond(self._model_ready(model, version))
            return respond(
                error_response(
                    404,
                    f"no route {_shown(path)}; expected /v2/models/{{m}}[/versions/{{v}}][/infer|/ready]",
                )
            )
        if method == "GET":
            if path == "/v2/health/live":
                return respond(_json(200, {"live": True}))
            if path == "/v2/health/ready":
                if self.ready:
                    return respond(_json(200, {"ready": True}))
                msg = self.load_error or "models are still loading"
                return respond(_json(503, {"ready": False, "error": msg}))
            if path == "/v2":
                return respond(
                    _json(
                        200,
                        {
                            "name": SERVER_NAME,
                            "version": SERVER_VERSION,
                            "extensions": ["binary_tensor_data"],
                        },
                    )
                )
            if path == "/metrics":
                return respond(
                    Response(200, self.registry.render(), "text/plain; version=0.0.4; charset=utf-8")
                )
            if path == OPENAPI_PATH:
                from wolt_jupyter.serving.openapi import openapi_json

                return respond(Response(200, openapi_json()))
        if path.startswith("/admin/"):
            if path == "/admin/flush" and method == "POST" and self._loop is not None:
                return self._admin_flush(request, respond)
            if path == "/admin/stage" and method == "POST" and self._loop is not None:
                return self._admin_stage(request, respond)
            return respond(self._admin(request))
        return respond(
            error_response(
                404,
                f"no route {method} {_shown(path)}; see /v2, {OPENAPI_PATH} and the V2 inference protocol",
            )
        )

    # -- model lookups -------------------------------------------------------------------------------------
    def _resolve(self, model: str, version: str | None, table: RoutingTable) -> str | None:
        """The explicitly named variant (or None); ProtocolError 404 for an unknown model or variant."""
        if model != self.name:
            raise ProtocolError(404, f"unknown model {_shown(model)!r}; this runtime serves {self.name!r}")
        if version is None:
            return None
        if version not in table.names():
            names = ", ".join(sorted(table.names()))
            raise ProtocolError(404, f"model {model!r} has no variant {_shown(version)!r}; variants: {names}")
        return version

    def _model_metadata(self, model: str, version: str | None) -> Response:
        table = self.router.table
        try:
            variant = self._resolve(model, version, table)
        except ProtocolError as exc:
            return error_response(exc.status, exc.message)
        adapter = self.models.get(variant or max(table.live, key=lambda n: table.weights[n]))
        if adapter is None:
            return error_response(503, "the model is still loading; poll /v2/health/ready")
        return _json(
            200,
            {
                "name": self.name,
                "versions": [v.name for v in table.spec.variants],
                "platform": "mlflow",
                "inputs": adapter.input_metadata(),
                "outputs": adapter.output_metadata,
                "parameters": {
                    "variant": adapter.variant,
                    "model_uri": adapter.uri,
                    "weights": table.weights,
                    "shadows": list(table.shadows),
                },
            },
        )

    def _model_ready(self, model: str, version: str | None) -> Response:
        """The deployment is ready when every variant is; one variant as soon as its model is loaded."""
        try:
            variant = self._resolve(model, version, self.router.table)
        except ProtocolError as exc:
            return error_response(exc.status, exc.message)
        ready = self.ready if variant is None else variant in self.models
        return _json(200 if ready else 503, {"name": model, "version": variant, "ready": ready})

    # -- inference -----------------------------------------------------------------------------------------
    def _infer(
        self, request: Request, respond: Callable[[Response], None], model: str, version: str | None
    ) -> None:
        t0 = time.perf_counter()
        table = self.router.table  # the one read: this request is routed by this table only
        try:
            explicit = self._resolve(model, version, table)
            if not self.ready:
                raise ProtocolError(503, "models are still loading; poll /v2/health/ready")
        except ProtocolError as exc:
            respond(error_response(exc.status, exc.message))
            self._rejected(model, version, exc.status, t0)
            return
        args = (request, table, explicit)
        if len(request.body) <= OFFLOAD_BYTES or self._loop is None:
            return self._decoded(args, self._decode_or_error(*args), respond, model, version, t0)
        # a big body: decode it in a worker thread; the loop keeps answering everyone else meanwhile
        future = self._loop.run_in_executor(None, self._decode_or_error, *args)
        future.add_done_callback(lambda f: self._decoded(args, f.result(), respond, model, version, t0))
        return None

    def _decode(self, request: Request, table: RoutingTable, explicit: str | None) -> Any:
        """Body -> (request, variant, prepared input); ProtocolError for whatever the client got wrong."""
        hl = request.headers.get("inference-header-content-length")
        header_len = None if hl is None else _header_length(hl)
        body = request.body
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            body = self._decompress(body, encoding)
        req = parse_request(body, header_len)
        _check_id(req)
        variant = explicit or table.choose(self._route_key(table, req, request.headers.get(ROUTE_KEY_HEADER)))
        adapter = self.models[variant]
        return req, variant, adapter, adapter.prepare(req.inputs)

    def _decode_or_error(self, *args: Any) -> Any:
        try:
            return self._decode(*args)
        except ProtocolError as exc:
            return exc
        except Exception as exc:  # a worker thread must hand back an answer, never lose the request
            log.exception("decoding a request failed")
            return ProtocolError(500, f"internal error decoding the request: {type(exc).__name__}")

    def _decoded(
        self,
        args: tuple,
        decoded: Any,
        respond: Callable[[Response], None],
        model: str,
        version: str | None,
        t0: float,
    ) -> None:
        if isinstance(decoded, ProtocolError):
            respond(error_response(decoded.status, decoded.message))
            self._rejected(model, version, decoded.status, t0)
            return
        req, variant, adapter, prepared = decoded
        self._enqueue(_Job(req, prepared, respond, t0, variant, args[1], adapter))

    def submit(
        self,
        model: str,
        version: str | None,
        req: InferRequest,
        route_key: str | None,
        deliver: Callable[[InferResult], None],
    ) -> None:
        """Infer on an already decoded request (the gRPC path); call on the event loop thread.

        Same routing, batching, shadows, log and metrics as HTTP; ``deliver`` gets an :class:`InferResult`.
        """
        t0 = time.perf_counter()
        table = self.router.table
        try:
            explicit = self._resolve(model, version, table)
            if self.stopping:
                raise ProtocolError(503, "the runtime is shutting down; retry on another replica or later")
            if not self.ready:
                raise ProtocolError(503, "models are still loading; poll ServerReady")
            _check_id(req)
            variant = explicit or table.choose(self._route_key(table, req, route_key))
            adapter = self.models[variant]
            prepared = adapter.prepare(req.inputs)
        except ProtocolError as exc:
            deliver(InferResult(exc.status, None, exc.message, version or "", None))
            self._rejected(model, version, exc.status, t0)
            return
        self._enqueue(_Job(req, prepared, deliver, t0, variant, table, adapter, raw=True))

    def _rejected(self, model: str, version: str | None, status: int, t0: float) -> None:
        if model == self.name:  # rejected requests count too (by code), like Seldon's executor
            self.m_seldon.observe((self.name, version or "", "", "", str(status)), time.perf_counter() - t0)

    def _enqueue(self, job: _Job) -> None:
        adapter = job.adapter
        queue = self._pending.get(adapter)
        if queue is None:
            self._pending[adapter] = [job]
            if self._loop is not None:
                self._loop.call_soon(self._flush, adapter)
            else:
                self._flush(adapter)
        else:
            queue.append(job)

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        """gzip/deflate bodies (tritonclient's request_compression_algorithm), bounded by the body limit."""
        wbits = {"gzip": 31, "deflate": 15}.get(encoding)
        if wbits is None:
            raise ProtocolError(
                400, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none"
            )
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, self.max_body + 1)
        except zlib.error as exc:
            raise ProtocolError(400, f"body is not valid {encoding} data: {exc}") from None
        if len(out) > self.max_body:
            raise ProtocolError(413, f"decompressed body is larger than the limit of {self.max_body} bytes")
        return out

    @staticmethod
    def _route_key(table: RoutingTable, req: InferRequest, header: str | None) -> str | None:
        """The sticky key: request ``parameters[sticky_key]``, else the x-wolt-route-key header."""
        if table.sticky_key is None:
            return None
        key = req.parameters.get(table.sticky_key)
        if key is None:
            key = header
        return None if key is None else str(key)

    def _flush(self, adapter: ModelAdapter) -> None:
        jobs = self._pending.pop(adapter, None)
        if not jobs:
            return
        group: list[_Job] = []
        for job in jobs:
            if group and (
                len(group) >= self.max_batch or not adapter.can_batch(group[0].prepared, job.prepared)
            ):
                self._run(adapter, group)
                group = []
            group.append(job)
        if group:
            self._run(adapter, group)

    def _run(self, adapter: ModelAdapter, group: list[_Job]) -> None:
        self.m_batch.observe((self.name, adapter.variant), len(group))
        # per job: (outputs, error, rejected) — rejected: the request's fault (a 400), not the model's
        results: list[tuple[list | None, str | None, bool]] | None = None
        if len(group) > 1:
            try:
                results = [(out, None, False) for out in adapter.predict_batch([j.prepared for j in group])]
            except Exception:  # mismatch or a failing row: answer each request on its own
                results = None
        if results is None:
            results = []
            for job in group:
                try:
                    results.append((adapter.predict_prepared(job.prepared), None, False))
                except BatchMismatch:
                    results.append((None, "model output does not match the input rows", False))
                except Exception as exc:
                    fault = _client_fault(job.prepared, exc)
                    if fault is not None:  # e.g. NaN the model refuses: a 400, like a decode error
                        results.append((None, fault, True))
                    else:
                        results.append((None, f"{type(exc).__name__}: {exc}", False))
        served = [(job, res) for job, res in zip(group, results, strict=False) if not res[2]]
        answers = [self._answer(adapter, job, outputs, err) for job, (outputs, err, _) in served]
        # acknowledged means durable: the micro-batch's log records reach the spool (one write) before any
        # of its responses is sent
        if self.writer is not None and served:
            self._log_live(adapter, [job for job, _ in served], answers)
        for job, (_outputs, err, rejected) in zip(group, results, strict=False):
            if rejected:
                self._reject_job(job, err or "the model rejected the input")
        for (job, _), (status, reply, outputs, err) in zip(served, answers, strict=False):
            job.respond(reply)
            # -- after the response: metrics and shadows (neither can delay or fail the answer) ------------
            try:
                self._after(adapter, job, outputs, err, status)
            except Exception:
                log.exception("after-response work failed for request %s", job.req.id)

    def _reject_job(self, job: _Job, message: str) -> None:
        if job.raw:
            job.respond(InferResult(400, None, message, job.variant, None))
        else:
            job.respond(error_response(400, message))
        self._rejected(self.name, job.variant, 400, job.t0)

    def _answer(
        self, adapter: ModelAdapter, job: _Job, outputs: list | None, err: str | None
    ) -> tuple[int, Any, list | None, str | None]:
        """(status, what to send back, outputs, error) for one request; never raises."""
        if job.raw:
            status = 200 if err is None and outputs is not None else 500
            if status == 500:
                self.m_model_errors.inc((self.name, adapter.variant))
                err = f"model of variant {adapter.variant!r} failed: {err}"
            return status, InferResult(status, outputs, err, adapter.variant, adapter), outputs, err
        try:
            status, response = self._response(adapter, job, outputs, err)
        except Exception as exc:  # e.g. an output no V2 datatype can carry
            status, outputs, err = 500, None, f"model output cannot be encoded as V2 tensors: {exc}"
            response = error_response(500, f"variant {adapter.variant!r}: {err}")
        return status, response, outputs, err

    def _log_live(self, adapter: ModelAdapter, group: list[_Job], answers: list) -> None:
        now = time.time()
        try:
            records = [
                self._record(
                    adapter,
                    job.req,
                    outputs,
                    status,
                    err,
                    (time.perf_counter() - job.t0) * 1000.0,
                    False,
                    now,
                )
                for job, (status, _reply, outputs, err) in zip(group, answers, strict=False)
            ]
            self.writer.submit_many(records)
        except Exception:  # logging must never break serving; the writer counts its own drops
            log.exception("response log submit failed")

    def _response(
        self, adapter: ModelAdapter, job: _Job, outputs: list | None, err: str | None
    ) -> tuple[int, Response]:
        req, variant = job.req, adapter.variant
        if err is not None or outputs is None:
            self.m_model_errors.inc((self.name, variant))
            return 500, error_response(500, f"model of variant {variant!r} failed: {err}")
        selected = outputs
        if req.output_names is not None:
            by_name = dict(outputs)
            missing = [n for n in req.output_names if n not in by_name]
            if missing:
                return 400, error_response(
                    400, f"unknown output(s) {', '.join(missing)}; the model returns {', '.join(by_name)}"
                )
            selected = [(n, by_name[n]) for n in req.output_names]
        body, header_len = encode_response(
            model_name=self.name,
            model_version=variant,
            req_id=req.id,
            outputs=selected,
            parameters={
                "variant": variant,
                "registered_model": adapter.model_name,
                "registered_version": adapter.model_version,
            },
            binary_outputs=req.binary_outputs,
            binary_all=req.binary_all,
        )
        if header_len is None:
            return 200, Response(200, body, headers=((VARIANT_HEADER, variant),))
        headers = ((VARIANT_HEADER, variant), ("inference-header-content-length", str(header_len)))
        return 200, Response(200, body, "application/octet-stream", headers)

    def _after(
        self, adapter: ModelAdapter, job: _Job, outputs: list | None, err: str | None, status: int
    ) -> None:
        req, variant = job.req, adapter.variant
        elapsed = time.perf_counter() - job.t0
        self.m_seldon.observe(
            (self.name, variant, adapter.model_name, adapter.model_version, str(status)), elapsed
        )
        first = outputs[0][1] if outputs else None
        if first is not None:
            self._observe_predictions(variant, "false", first)
        if status == 200:
            self._recent_inputs = req.inputs
        for shadow in job.table.shadows:
            if shadow != variant:
                worker = self.shadow_workers.get(shadow)
                if worker is not None:  # None only in the instant a redeploy replaces it
                    worker.offer(ShadowItem(req.id, req.inputs, variant, first, time.time()))

    def _observe_predictions(self, variant: str, shadow: str, first: np.ndarray) -> None:
        if first.dtype.kind not in "biuf" or first.size == 0:
            return
        labels = (self.name, variant, shadow)
        col = first.reshape(first.shape[0], -1)[:, 0] if first.ndim else first.reshape(1)
        observe = self.m_predictions.observe
        for x in col.tolist():
            observe(labels, float(x))

    def _record(
        self,
        adapter: ModelAdapter,
        req: InferRequest,
        outputs: list | None,
        status: int,
        err: str | None,
        latency_ms: float,
        shadow: bool,
        now: float,
    ) -> Any:
        return self._record_cls(
            id=req.id,
            time=now,
            deployment=self.name,
            variant=adapter.variant,
            model_name=adapter.model_name,
            model_version=adapter.model_version,
            shadow=shadow,
            inputs={t.name: _values(t.array) for t in req.inputs},
            outputs={n: _values(a) for n, a in outputs} if outputs else {},
            latency_ms=latency_ms,
            status=status,
            error=err,
        )

    def _on_shadow_result(self, adapter: ModelAdapter, res: ShadowResult) -> None:
        """Runs in a shadow worker thread."""
        item = res.item
        variant = adapter.variant
        code = "200" if res.error is None else "500"
        self.m_shadow_seconds.observe(
            (self.name, variant, adapter.model_name, adapter.model_version, code), res.latency_ms / 1000.0
        )
        if res.error is not None:
            self.m_shadow_errors.inc((self.name, variant))
        else:
            first = res.outputs[0][1] if res.outputs else None
            if first is not None:
                self._observe_predictions(variant, "true", first)
            d = disagrees(item.live_first, first)
            if d is not None:
                labels = (self.name, variant, item.live_variant)
                self.m_shadow_cmp.inc(labels)
                if d:
                    self.m_shadow_dis.inc(labels)
        if self.writer is not None:
            # not spooled: nobody was answered by a shadow, so its rows go the cheap way (serialized by the
            # writer thread); a crash can lose the last fraction of a second of them, never a live row
            req = InferRequest(item.request_id, item.tensors, {}, None, set(), False)
            try:
                self.writer.submit(
                    self._record(
                        adapter, req, res.outputs, 200 if res.error is None else 500, res.error,
                        res.latency_ms, True, time.time(),
                    )
                )  # fmt: skip
            except Exception:
                log.exception("response log submit failed")

    # -- admin ---------------------------------------------------------------------------------------------
    @staticmethod
    def _unauthorized(what: str, token_file: str) -> Response:
        return Response(
            401,
            json.dumps(
                {"error": f"{what} needs 'Authorization: Bearer <token>' (the deployment's {token_file})"}
            ).encode(),
            headers=(("www-authenticate", "Bearer"),),
        )

    def _admin(self, request: Request) -> Response:
        if not authorized(request.headers.get("authorization"), self.token):
            return self._unauthorized("admin", "admin.token")
        action = request.path[len("/admin/") :]
        if request.method == "GET" and action == "routing":
            return _json(200, self._routing_doc())
        if request.method != "POST":
            return error_response(405, f"use POST for /admin/{action}")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return error_response(400, "admin body must be a JSON object")
        if not isinstance(body, dict):
            return error_response(400, "admin body must be a JSON object")
        try:
            if action == "traffic":
                self.router.set_traffic(body.get("weights", body))
            elif action == "promote":
                variant = body.get("variant")
                if not isinstance(variant, str):
                    return error_response(400, "promote needs {'variant': NAME}")
                self.router.promote(variant)
            elif action == "rollback":
                self.router.rollback()
            elif action == "spec":
                conflict = self._apply_spec(body.get("spec", body))
                if conflict:
                    return error_response(409, conflict)
            else:
                return error_response(
                    404, f"no admin action {action!r}; use traffic, promote, rollback or routing"
                )
        except WoltError as exc:
            return error_response(400, str(exc))
        for v in self.router.table.shadows:  # a variant that became a shadow needs a worker
            if v in self.models:
                self._shadow_worker(v)
        prime_series(self.registry, self.name, self.router.table.spec, self.models)
        return _json(200, self._routing_doc())

    def _feedback(self, request: Request, respond: Callable[[Response], None], model: str) -> None:
        """``POST /v2/models/{m}/feedback``: ground truth for earlier requests, stored beside the response log.

        Body: ``{"feedback": [{"id": REQUEST_ID, "ground_truth": VALUE, "time": EPOCH_S?}, ...]}`` (or one
        such object). Ground truth is trusted by comparisons and the update service, so the write needs the
        feedback token (``Authorization: Bearer``; the deployment's ``feedback.token``, or the admin token).
        The write happens off the event loop; the answer says how many were stored.
        """
        if model != self.name:
            return respond(
                error_response(404, f"no model {_shown(model)!r}; this runtime serves {self.name!r}")
            )
        header = request.headers.get("authorization")
        if not (authorized(header, self.feedback_token) or authorized(header, self.token)):
            return respond(self._unauthorized("feedback", FEEDBACK_TOKEN_FILE))
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            return respond(
                error_response(
                    400, 'feedback body must be JSON: {"feedback": [{"id": ..., "ground_truth": ...}]}'
                )
            )
        items = body.get("feedback", [body]) if isinstance(body, dict) else body
        if not isinstance(items, list) or not items:
            return respond(
                error_response(400, 'expected {"feedback": [{"id": ..., "ground_truth": ...}, ...]}')
            )
        for i, item in enumerate(items):
            problem = _feedback_problem(item)
            if problem:
                return respond(error_response(400, f"feedback item {i}: {problem}"))
        from wolt_jupyter.responses import add_feedback, default_store_url

        url = self._store_url or default_store_url(self.name, self.state_dir)
        if self._loop is None:  # not serving (embedded use): store right away
            return respond(_json(200, {"stored": add_feedback(url, items)}))
        future = self._loop.run_in_executor(None, add_feedback, url, items)

        def done(f: Any) -> None:
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or exc is not None:
                status = 400 if isinstance(exc, InvalidArgument) else 503
                first = str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__
                respond(error_response(status, f"feedback not stored: {mask_url(first)}"))
            else:
                respond(_json(200, {"stored": f.result()}))

        future.add_done_callback(done)
        return None

    def _admin_flush(self, request: Request, respond: Callable[[Response], None]) -> None:
        """``POST /admin/flush``: answer once shadows and the response log have caught up (waits off-loop)."""
        if not authorized(request.headers.get("authorization"), self.token):
            return respond(self._admin(request))  # the same 401
        try:
            body = json.loads(request.body or b"{}")
            timeout = float(body.get("timeout", 30.0))
            shadow_timeout = body.get("shadow_timeout")
            shadow_timeout = None if shadow_timeout is None else float(shadow_timeout)
        except (ValueError, TypeError, AttributeError):
            return respond(
                error_response(400, 'flush body: {"timeout": S, "shadow_timeout": S} (both optional)')
            )
        loop = self._loop
        future = loop.run_in_executor(None, self.drain, min(max(timeout, 0.0), 300.0), shadow_timeout)

        def done(f: Any) -> None:
            ok = not f.cancelled() and f.exception() is None and f.result()
            stats = self.writer.stats() if self.writer is not None else {}
            queued = sum(w.depth() for w in self.shadow_workers.values())
            respond(
                _json(
                    200 if ok else 504,
                    {"flushed": bool(ok), "response_log": stats, "shadow_queued": queued},
                )
            )

        future.add_done_callback(done)
        return None

    def _admin_stage(self, request: Request, respond: Callable[[Response], None]) -> None:
        """``POST /admin/stage`` ``{"spec": ...}``: a blue-green redeploy inside this process.

        The new revision's models load in a worker thread beside the serving ones and must answer the last
        request served; then routing and models switch in one step on the event loop. On any failure the
        answer is 422 with the reason and what served keeps serving, untouched."""
        if not authorized(request.headers.get("authorization"), self.token):
            return respond(self._admin(request))  # the same 401
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return respond(error_response(400, "admin body must be a JSON object"))
        if not isinstance(body, dict):
            return respond(error_response(400, "admin body must be a JSON object"))
        if self._staging:
            return respond(error_response(409, "another revision is being loaded; try again when it is done"))
        if not self.ready:
            return respond(
                error_response(409, "the runtime is not ready; a revision can be staged once it is")
            )
        self._staging = True
        loop = self._loop
        t0 = time.perf_counter()
        future = loop.run_in_executor(None, self.stage, body.get("spec", body))

        def done(f: Any) -> None:
            self._staging = False
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or exc is not None:
                reason = (
                    "cancelled"
                    if exc is None
                    else (str(exc) if isinstance(exc, WoltError) else f"{type(exc).__name__}: {exc}")
                )
                log.error("revision not switched, the current one keeps serving: %s", reason)
                return respond(error_response(422, reason))
            spec, models = f.result()
            t1 = time.perf_counter()
            self.switch(spec, models)
            log.info(
                "switched to the new revision (loaded in %.2fs, switch %.1f us)",
                t1 - t0,
                (time.perf_counter() - t1) * 1e6,
            )
            doc = self._routing_doc()
            doc["load_seconds"] = t1 - t0
            respond(_json(200, doc))

        future.add_done_callback(done)
        return None

    def _apply_spec(self, doc: Any) -> str | None:
        """Route by a whole new spec if this process has every one of its models loaded; else say why not.

        Only the routing changes (weights, shadows, sticky key): a variant whose model URI differs from the
        loaded one needs a restart, which the caller (the local backend) does on a 409.
        """
        spec = DeploymentSpec.from_dict(doc)
        if spec.name != self.name:
            return f"spec is for deployment {spec.name!r}; this runtime serves {self.name!r}"
        for v in spec.variants:
            loaded = self.models.get(v.name)
            if loaded is None or loaded.uri != v.model:
                have = loaded.uri if loaded else "nothing"
                return f"variant {v.name!r} needs model {v.model!r} but this process has {have} loaded: restart it"
        self.router.replace(spec)
        return None

    def _routing_doc(self) -> dict[str, Any]:
        t = self.router.table
        return {
            "generation": t.generation,
            "weights": t.weights,
            "shadows": list(t.shadows),
            "sticky_key": t.sticky_key,
            "spec": t.spec.to_dict(),
        }
