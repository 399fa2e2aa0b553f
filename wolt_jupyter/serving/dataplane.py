"""The data plane: one deployment's inference, shared by the REST and gRPC codecs.

A codec decodes its wire format into an :class:`~wolt_jupyter.serving.tensors.InferRequest`, asks
:meth:`DataPlane.route` for the variant and the model-ready input (any thread), and hands the result to
:meth:`DataPlane.submit` on the event loop with a :class:`Reply` that turns an :class:`InferResult` into its
own wire reply. Everything else happens here, once for both protocols: routing, micro-batching, the retry of
a failed challenger on the champion, shadows, the response log, metrics and Triton-style statistics.

Batching and isolation: a request is queued for its variant's model, and each variant predicts in a thread
of its own (:mod:`~wolt_jupyter.serving.isolation`): the thread runs one ``predict`` over every request that
queued up since its last one — adaptive batching with no added wait — and hands the results back to the
event loop, which never predicts. So a slow or hung variant delays nobody else, health checks included; a
request waiting past its variant's ``timeout`` is retried on the champion (a challenger's) or answered 504
(the champion's), and a full queue is retried on the champion or answered 503. Each reply is encoded on the
loop before the micro-batch's log records are spooled and sent only after that, so an acknowledged answer
is a durable one. When the spool cannot take them (a full disk), ``logging.on_full``
decides: ``serve`` sends the answers and the writer counts the records as unlogged, ``refuse`` sends 503 with
Retry-After instead, so nothing is answered without its record. Shadow copies and metric observations come
after the replies.

The queries (:meth:`model_metadata`, :meth:`model_ready`, :meth:`statistics`) return plain documents and
raise :class:`~wolt_jupyter.serving.ProtocolError`; each codec maps the error to its own status.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wolt_jupyter._version import __version__
from wolt_jupyter.errors import LogFull, WoltError
from wolt_jupyter.responses.record import PROBA_OUTPUT
from wolt_jupyter.revisions import deployment_dir, serving_revision
from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.admin import FEEDBACK_TOKEN_FILE, ensure_token
from wolt_jupyter.serving.isolation import DEFAULT_QUEUE, DEFAULT_TIMEOUT, VariantWorker
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
from wolt_jupyter.serving.router import Router, RoutingTable
from wolt_jupyter.serving.shadow import ShadowItem, ShadowResult, ShadowWorker, disagrees
from wolt_jupyter.serving.stats import VariantStats
from wolt_jupyter.serving.tensors import InferRequest
from wolt_jupyter.spec import DeploymentSpec
from wolt_jupyter.untrusted import shown, shown_value

log = logging.getLogger(__name__)

SERVER_NAME = "wolt-jupyter"
SERVER_VERSION = __version__
# the V2 extensions both codecs serve (binary tensors are REST's; gRPC carries raw bytes natively)
EXTENSIONS = ("binary_tensor_data", "statistics")
DEFAULT_MAX_BODY = 32 * 1024 * 1024
MAX_BATCH = 64  # requests per live predict
MAX_ID_LENGTH = 128  # request ids are stored (response log, feedback): longer ones are refused at the edge
RETRY_PREFIX = "retried on the champion"  # starts the error of a challenger answer the champion replaced
LOG_FULL_ERROR = "the response log cannot keep this request's record (its disk is full); retry later"
WATCH_S = 0.02  # how often the loop checks variants' deadlines and threads (at most; less for small timeouts)
SAY_EVERY_S = 5.0  # a variant's timeouts, full queue or skipping: at most one log line per this interval
ARRAY_MIN_VALUES = 64  # below this a list is cheaper to build than handing the array over


def _client_fault(prepared: Prepared, exc: Exception) -> str | None:
    """Why a predict that raised is the request's fault: the model rejected NaN or infinite input values
    (a ValueError on data the wire format allows). The message names the input; None: the model's fault."""
    if not isinstance(exc, ValueError):
        return None
    for t in prepared.tensors:
        arr = t.array
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            return f"input {shown_value(t.name)} holds NaN or infinite values, which the model rejects: {exc}"
    return None


def _values(arr: np.ndarray) -> list[Any]:
    """Per-row values for the response log (JSON-safe)."""
    if arr.dtype.kind in "OSU":
        return [[_scalar(x) for x in row] if isinstance(row, list) else _scalar(row) for row in arr.tolist()]
    return arr.tolist()


def log_value(arr: np.ndarray) -> Any:
    """One tensor's per-row values as handed to the response-log writer: a large numeric array as the array
    itself (the spool encodes numpy natively, the writer's thread makes columns of it: no per-value Python
    objects on the event loop), anything else as JSON-safe lists."""
    if arr.dtype.kind in "biuf" and arr.size >= ARRAY_MIN_VALUES:
        return arr
    return _values(arr)


def _scalar(x: Any) -> Any:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


def _columns(req: InferRequest) -> dict[str, Any]:
    """The request's inputs as the response log stores them; computed once per request and shared by every
    record of it (the live one, a retried attempt, each shadow's)."""
    return {t.name: log_value(t.array) for t in req.inputs}


class InferResult:
    """What the data plane answers one request with: outputs (selected as the client asked), or a status
    and a message. ``retried_from``: the challenger whose failure the champion answered for."""

    __slots__ = ("adapter", "error", "outputs", "req", "retried_from", "served", "status", "variant")

    def __init__(
        self,
        status: int,
        outputs: list[tuple[str, np.ndarray]] | None,
        error: str | None,
        variant: str,
        adapter: ModelAdapter | None,
        req: InferRequest | None = None,
        retried_from: str | None = None,
    ) -> None:
        self.status, self.outputs, self.error, self.variant = status, outputs, error, variant
        self.adapter, self.req, self.retried_from = adapter, req, retried_from
        self.served = outputs  # everything the model returned (logged, compared with shadows)


class Reply(Protocol):
    """A codec's side of one request: ``encode`` turns the result into the wire reply (it may raise, e.g. an
    output no V2 datatype can carry: that is then answered as a 500), ``send`` delivers it."""

    def encode(self, result: InferResult) -> tuple[int, Any]: ...

    def send(self, wire: Any) -> None: ...


class Routed:
    """A request routed to its variant, its input already mapped onto that variant's signature."""

    __slots__ = ("adapter", "explicit", "model", "prepared", "req", "t0", "table", "variant")

    def __init__(
        self,
        req: InferRequest,
        variant: str,
        adapter: ModelAdapter,
        prepared: Prepared,
        table: RoutingTable,
        explicit: bool,
        t0: float,
    ) -> None:
        self.req, self.variant, self.adapter, self.prepared = req, variant, adapter, prepared
        self.table, self.explicit, self.t0 = table, explicit, t0


class _Job:
    __slots__ = ("columns", "deadline", "done", "reply", "retried_from", "routed", "t_queued")

    def __init__(self, routed: Routed, reply: Reply, retried_from: str | None = None) -> None:
        self.routed, self.reply, self.retried_from = routed, reply, retried_from
        self.t_queued = time.perf_counter()
        self.deadline = 0.0  # set when queued: t_queued + the variant's timeout
        self.done = False  # answered (by its predict, or by the watchdog at its deadline): on the loop only
        self.columns: dict[str, Any] | None = None  # the logged inputs, once computed


class DataPlane:
    """Serves one deployment. Build it, ``load()`` the models (any thread), ``bind_loop`` the event loop, then
    hand requests in through a codec; ``close()`` flushes shadows and the response log."""

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
        queue_size: int = DEFAULT_QUEUE,
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
        self.refuse_unlogged = spec.logging.on_full == "refuse"  # logging.on_full: nothing answered unlogged
        self.refused = 0  # requests answered 503 because their record could not be kept
        self.store_url = response_store_url
        self.shadow_queue_size = shadow_queue_size
        # each adapter's queue and predict thread (a redeploy may swap a variant's adapter: queued jobs finish
        # on the adapter they were routed to, then its worker ends)
        self.queue_size = queue_size
        self.workers: dict[ModelAdapter, VariantWorker] = {}
        # variants with too many hung predict threads: their traffic goes to the champion
        self.skipped: frozenset[str] = frozenset()
        self._timeouts: tuple[Any, dict[str, float]] = (None, {})  # (spec, variant -> timeout s)
        self._said: dict[tuple[str, str], float] = {}  # (variant, what) -> when last logged
        self.staging = False
        self._recent_inputs: Any = None  # the last live request's tensors: a new revision must answer them
        self.shadow_backlog_discarded = 0
        self._record_cls: Any = None
        self.revision = serving_revision(self.state_dir, self.name)  # stamped on every logged row
        self.loop: Any = None
        self.stats: dict[str, VariantStats] = {}
        self._stats_lock = threading.Lock()  # shadow workers and the loop both add statistics
        self._init_metrics()
        prime_series(self.registry, self.name, self.router.table.spec)  # scraped at 0 while models load

    # -- lifecycle -----------------------------------------------------------------------------------------
    def bind_loop(self, loop: Any) -> None:
        """Call on the event loop's thread: the watchdog of variants' deadlines runs on it from now on."""
        self.loop = loop
        loop.call_soon(self._watch)

    def load(self, loader: Callable[[str, str], ModelAdapter] | None = None) -> None:
        """Load every variant (live and shadow), start shadow workers and the response log, then go ready."""
        self.models = self._load_models(self.router.table.spec, loader)
        self._log_probabilities(self.router.table.spec)
        if self._log_responses:
            self.writer = self._make_writer()
        for v in self.router.table.spec.shadows:
            self.shadow_worker(v.name)
        self.prime_series()
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

            from wolt_jupyter.serving.models import load, model_cache_dir

            loader = functools.partial(load, cache_dir=model_cache_dir(self.state_dir, self.name))
        models: dict[str, ModelAdapter] = {}
        # the first model loads alone (a flavor's first load imports its modules and opens the registry: never
        # twice at once), the others side by side: downloads, unpickling and native code overlap
        from concurrent.futures import Future, ThreadPoolExecutor

        fresh = [v for v in spec.variants if getattr(self.models.get(v.name), "uri", None) != v.model]
        loading: dict[str, Future] = {}
        if fresh:
            first: Future = Future()
            try:
                first.set_result(loader(fresh[0].name, fresh[0].model))
            except Exception as exc:
                first.set_exception(exc)
            loading[fresh[0].name] = first
        if len(fresh) > 1:
            with ThreadPoolExecutor(
                max_workers=min(4, len(fresh) - 1), thread_name_prefix="wolt-load"
            ) as pool:
                loading.update({v.name: pool.submit(loader, v.name, v.model) for v in fresh[1:]})
        for v in spec.variants:
            if v.name not in loading:
                models[v.name] = self.models[v.name]
                continue
            try:
                adapter = loading[v.name].result()
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
        self.prime_series()
        for v in spec.shadows:
            self.shadow_worker(v.name)
        if self.writer is None and spec.logging.responses and self._log_responses:
            self.writer = self._make_writer()
        self._new_revision(spec)
        if old_workers:

            def retire() -> None:
                for w in old_workers.values():
                    self.shadow_backlog_discarded += w.close(timeout=10.0)

            threading.Thread(target=retire, name="wolt-retire-shadows", daemon=True).start()

    def apply_spec(self, doc: Any) -> str | None:
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
        self._new_revision(spec)
        return None

    def _new_revision(self, spec: DeploymentSpec) -> None:
        """A switched or re-routed spec is a new revision: rows from now on carry its number; its logging
        settings apply to the writer."""
        self.revision = serving_revision(self.state_dir, self.name)
        if self.writer is not None:
            from wolt_jupyter.responses.retention import Retention

            self.writer.sample = float(spec.logging.sample)
            self.writer.retention = Retention.of(spec.logging.retention)
            self.writer.disk_watch.policy = spec.logging.on_full
        self.refuse_unlogged = spec.logging.on_full == "refuse"
        self._log_probabilities(spec)

    def _log_probabilities(self, spec: DeploymentSpec) -> None:
        """logging.probabilities: each classifier logs its class probabilities beside its answers."""
        on = bool(spec.logging.responses and spec.logging.probabilities)
        for adapter in self.models.values():
            adapter.log_probabilities = on

    def prime_series(self) -> None:
        """Every series a request to the current routing can touch exists at 0 (a first burst is counted)."""
        prime_series(self.registry, self.name, self.router.table.spec, self.models)

    def ensure_shadow_workers(self) -> None:
        """A variant that became a shadow (a traffic change, a promotion) needs a worker."""
        for v in self.router.table.shadows:
            if v in self.models:
                self.shadow_worker(v)

    def log_state(self) -> dict[str, Any]:
        """The response log as this runtime sees it: the writer's counters, whether its disk is full (and the
        line that says so), ``logging.on_full`` and the requests refused for it."""
        doc: dict[str, Any] = {
            "on_full": "refuse" if self.refuse_unlogged else "serve",
            "refused": self.refused,
        }
        w = self.writer
        if w is None:
            return {**doc, "logging": False}
        return {
            **doc,
            **w.stats(),
            "logging": True,
            "full": w.full,
            "full_since": w.disk_watch.since,
            "warning": w.warning,
            "bytes_on_disk": w.bytes_on_disk,
        }

    def routing_doc(self) -> dict[str, Any]:
        t = self.router.table
        return {
            "generation": t.generation,
            "weights": t.weights,
            "shadows": list(t.shadows),
            "sticky_key": t.sticky_key,
            "spec": t.spec.to_dict(),
        }

    def _make_writer(self) -> Any:
        from wolt_jupyter.responses import ResponseRecord, ResponseWriter, default_store_url
        from wolt_jupyter.responses.retention import Retention
        from wolt_jupyter.responses.undeployed import UndeployedRetention

        self._record_cls = ResponseRecord
        url = self.store_url or default_store_url(self.name, self.state_dir)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        spec = self.router.table.spec
        # never block the event loop: a full queue counts a drop (exported as a metric). The spool makes each
        # record durable in the OS before its response goes out; a restart replays what the database missed.
        writer = ResponseWriter(
            url,
            on_full="drop",
            sample=float(spec.logging.sample),
            retention=Retention.of(spec.logging.retention),
            spool_dir=None
            if os.environ.get("WOLT_RESPONSE_SPOOL", "1")
            == "0"  # memory only: for measuring the spool's cost
            else deployment_dir(self.state_dir, self.name) / "spool",
            also_maintain=UndeployedRetention(self.state_dir, skip=[self.name]),  # nobody else trims those
        )
        writer.disk_watch.policy = spec.logging.on_full
        return writer

    def shadow_worker(self, variant: str) -> ShadowWorker:
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
        for worker in self.workers.values():
            worker.close()  # each predict thread ends once its queue is done
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
        self.m_champion_retries = r.add(
            Counter(
                "wolt_champion_retries_total",
                "Requests a challenger failed that the champion answered instead",
                ("deployment", "variant", "champion"),
            )
        )
        self.m_timeouts = r.add(
            Counter(
                "wolt_model_timeouts_total",
                "Requests not answered within the variant's timeout (a challenger's then go to the champion)",
                ("deployment", "variant"),
            )
        )
        self.m_queue_full = r.add(
            Counter(
                "wolt_variant_queue_full_total",
                "Requests refused by a full variant queue (a challenger's then go to the champion, else 503)",
                ("deployment", "variant"),
            )
        )
        r.add(
            Gauge(
                "wolt_variant_queue_depth",
                "Requests waiting for the variant's predict thread",
                ("deployment", "variant"),
                func=lambda: self._per_variant(VariantWorker.depth),
            )
        )
        r.add(
            Gauge(
                "wolt_variant_hung_threads",
                "Predict threads abandoned past the variant's timeout and still running",
                ("deployment", "variant"),
                func=lambda: self._per_variant(lambda w: len(w.hung)),
            )
        )
        r.add(
            Gauge(
                "wolt_variant_skipped",
                "1 while the variant is skipped (too many hung predict threads): its traffic goes to the champion",
                ("deployment", "variant"),
                func=lambda: self._per_variant(lambda w: int(w.skipped)),
            )
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
            ("removed", "Response-log records removed by retention (logging.retention)"),
            (
                "unlogged",
                "Requests answered without their response-log record (disk full, logging.on_full: serve)",
            ),
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
                "wolt_response_log_refused_total",
                "Requests answered 503 because their response-log record could not be kept (logging.on_full: refuse)",
                ("deployment",),
                func=lambda: [((self.name,), self.refused)],
                kind="counter",
            )
        )
        r.add(
            Gauge(
                "wolt_response_log_full",
                "1 while the response log cannot write for lack of disk space",
                ("deployment",),
                func=lambda: [((self.name,), int(self.writer is not None and self.writer.full))],
            )
        )
        r.add(
            Gauge(
                "wolt_response_log_bytes",
                "Bytes the response log takes on disk (database, WAL, spool), at the last maintenance pass",
                ("deployment",),
                func=lambda: [((self.name,), float(getattr(self.writer, "bytes_on_disk", None) or 0))],
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

    def _per_variant(self, value: Callable[[VariantWorker], float]) -> list[tuple[tuple[str, ...], float]]:
        """A gauge's series: each live variant's current worker (0 before its first request)."""
        out: list[tuple[tuple[str, ...], float]] = []
        for v in self.router.table.live:
            adapter = self.models.get(v)
            worker = self.workers.get(adapter) if adapter is not None else None  # type: ignore[arg-type]
            out.append(((self.name, v), float(value(worker)) if worker is not None else 0.0))
        return out

    def _writer_stat(self, key: str) -> float:
        if self.writer is None:
            return 0
        return float(self.writer.stats().get(key, 0))

    # -- queries -------------------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    def resolve(self, model: str, version: str | None, table: RoutingTable | None = None) -> str | None:
        """The variant a request names (or None: route it); ProtocolError 404 for an unknown model or version.

        ``version`` is a variant name or the registry version a variant serves (``"1"`` for
        ``models:/m/1``); a name wins over a number, and of several variants serving the same registry version
        the live one with the most traffic answers (then shadows, in spec order)."""
        if model != self.name:
            raise ProtocolError(404, f"unknown model {shown(model)!r}; this runtime serves {self.name!r}")
        if version is None or version == "":
            return None
        table = table or self.router.table
        if version in table.names():
            return version
        weights = table.weights
        serving = [
            v.name
            for v in table.spec.variants
            if (a := self.models.get(v.name)) is not None and a.model_version == version
        ]
        if serving:
            return max(serving, key=lambda n: (weights.get(n, -1), -serving.index(n)))
        names = ", ".join(sorted(table.names()))
        versions = ", ".join(sorted({a.model_version for a in self.models.values()})) or "none loaded yet"
        raise ProtocolError(
            404,
            f"model {model!r} has no variant or registry version {shown(version)!r}; "
            f"variants: {names}; registry versions: {versions}",
        )

    def champion(self, table: RoutingTable) -> str:
        """The spec's ``routing.champion`` (whatever its weight), else the live variant with the most traffic
        (the first of equals): the one a failed challenger's request is retried on, and the one unversioned
        metadata describes."""
        named = table.spec.routing.champion
        if named is not None:
            return named
        weights = table.weights
        return max(table.live, key=lambda n: (weights[n], -table.live.index(n)))

    def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        table = self.router.table
        variant = self.resolve(model, version, table)
        adapter = self.models.get(variant or self.champion(table))
        if adapter is None:
            raise ProtocolError(503, "the model is still loading; poll /v2/health/ready")
        return {
            "name": self.name,
            "versions": [v.name for v in table.spec.variants],
            "platform": "mlflow",
            "inputs": adapter.input_metadata(),
            "outputs": adapter.output_metadata,
            "parameters": {
                "variant": adapter.variant,
                "model_uri": adapter.uri,
                "registered_model": adapter.model_name,
                "registered_version": adapter.model_version,
                "weights": table.weights,
                "shadows": list(table.shadows),
            },
        }

    def model_ready(self, model: str, version: str | None) -> tuple[str | None, bool]:
        """(the variant asked about, ready): the deployment is ready when every variant is; one variant as soon
        as its model is loaded."""
        variant = self.resolve(model, version, self.router.table)
        return variant, (self.ready if variant is None else variant in self.models)

    def statistics(self, model: str | None, version: str | None) -> dict[str, Any]:
        """Triton's statistics extension: ``{"model_stats": [...]}``, one entry per variant (its ``version``),
        or only the variant named by ``version``."""
        if model:
            variant = self.resolve(model, version)
        else:
            variant = None
        names = [variant] if variant else [v.name for v in self.router.table.spec.variants]
        with self._stats_lock:
            return {"model_stats": [self.stats.get(n, VariantStats()).doc(self.name, n) for n in names]}

    def _stat(self, variant: str) -> VariantStats:
        s = self.stats.get(variant)
        if s is None:
            with self._stats_lock:
                s = self.stats.setdefault(variant, VariantStats())
        return s

    # -- inference -----------------------------------------------------------------------------------------
    def check_serving(self) -> None:
        if self.stopping:
            raise ProtocolError(
                503, "the runtime is shutting down; retry on another replica or after restart"
            )
        if not self.ready:
            raise ProtocolError(503, "models are still loading; poll /v2/health/ready")

    def route(
        self,
        model: str,
        version: str | None,
        req: InferRequest,
        route_key: str | None,
        t0: float | None = None,
        table: RoutingTable | None = None,
    ) -> Routed:
        """Resolve, route and map onto the variant's signature (safe on any thread); ProtocolError for
        whatever the client got wrong. ``route_key``: the sticky key from the transport (header/metadata)."""
        t0 = time.perf_counter() if t0 is None else t0
        table = table or self.router.table  # the one read: this request is routed by this table only
        explicit = self.resolve(model, version, table)
        self.check_serving()
        if req.id is not None and len(req.id) > MAX_ID_LENGTH:
            raise ProtocolError(
                400, f"request id is {len(req.id)} characters long; at most {MAX_ID_LENGTH} are accepted"
            )
        if explicit is None:
            key = None
            if table.sticky_key is not None:
                key = req.parameters.get(table.sticky_key)
                key = route_key if key is None else str(key)
            variant = table.choose(key)
        else:
            variant = explicit
        adapter = self.models[variant]
        return Routed(req, variant, adapter, adapter.prepare(req.inputs), table, explicit is not None, t0)

    def submit(self, routed: Routed, reply: Reply) -> None:
        """Queue a routed request for its variant's next predict (call on the event loop thread)."""
        self._enqueue(_Job(routed, reply))

    def refuse(self, model: str, version: str | None, exc: ProtocolError, reply: Reply, t0: float) -> None:
        """Answer a request refused before it reached a model, and count it (by code, like Seldon's executor)."""
        result = InferResult(exc.status, None, exc.message, version or "", None)
        try:
            reply.send(reply.encode(result)[1])
        finally:
            self.rejected(model, version, exc.status, t0)

    def rejected(self, model: str, version: str | None, status: int, t0: float) -> None:
        if model == self.name:
            self.m_seldon.observe((self.name, version or "", "", "", str(status)), time.perf_counter() - t0)

    def _enqueue(self, job: _Job) -> None:
        """Queue ``job`` for its adapter's predict thread (on the loop). A full queue or a skipped variant:
        a challenger's request goes to the champion, anyone else's is answered 503 with Retry-After."""
        adapter = job.routed.adapter
        if self.loop is None:  # no event loop (a plane driven by hand): predict inline
            t0 = time.perf_counter()
            results = self._predict(adapter, [job])
            self._finish(adapter, [job], results, t0, time.perf_counter())
            return
        worker = self.workers.get(adapter)
        if worker is None:
            worker = self._new_worker(adapter)
        variant = adapter.variant
        if worker.skipped:
            why = f"variant {variant!r} is skipped: {len(worker.hung)} of its predicts hung past its timeout"
            return self._overflow(job, why, "skipped")
        job.deadline = job.t_queued + self._timeout(variant)
        if not worker.offer(job):
            self.m_queue_full.inc((self.name, variant))
            why = f"variant {variant!r} has {worker.capacity} requests waiting (its queue is full)"
            return self._overflow(job, why, "queue full")
        if not worker.kick_pending:
            worker.kick_pending = True
            self.loop.call_soon(worker.kick)
        return None

    def _overflow(self, job: _Job, why: str, what: str) -> None:
        """A request its variant cannot take now: to the champion if a challenger's, else 503 Retry-After."""
        variant = job.routed.variant
        if self._retry_target(job) is not None:
            self._say(variant, what, f"{why}; its requests go to the champion")
            return self._retry(job, why, quiet=True)
        self._say(variant, what, f"{why}; answering 503")
        routed = job.routed
        res = InferResult(503, None, f"{why}; retry later", variant, routed.adapter, routed.req)
        res.retried_from = job.retried_from
        job.done = True
        try:
            job.reply.send(self._encode(job, res)[1])
        finally:
            self._observe_refused(job, 503)
        return None

    def _say(self, variant: str, what: str, message: str) -> None:
        """A warning at most every SAY_EVERY_S per variant and kind (a hung variant can fail 1,000s a second)."""
        now = time.monotonic()
        if now - self._said.get((variant, what), -SAY_EVERY_S) >= SAY_EVERY_S:
            self._said[(variant, what)] = now
            log.warning("deployment %s: %s", self.name, message)

    def _timeout(self, variant: str) -> float:
        """``variants[i].timeout`` of the current spec (re-read when the routing changes), else the default."""
        spec = self.router.table.spec
        cached_for, timeouts = self._timeouts
        if cached_for is not spec:
            timeouts = {v.name: float(v.timeout or DEFAULT_TIMEOUT) for v in spec.variants}
            self._timeouts = (spec, timeouts)
        return timeouts.get(variant, DEFAULT_TIMEOUT)

    def _new_worker(self, adapter: ModelAdapter) -> VariantWorker:
        loop = self.loop

        def deliver(batch: list[_Job], results: list, t0: float, t1: float) -> None:
            loop.call_soon_threadsafe(self._finish, adapter, batch, results, t0, t1)

        worker = VariantWorker(
            adapter.variant,
            predict=lambda batch: self._predict(adapter, batch),
            deliver=deliver,
            compatible=lambda a, b: adapter.can_batch(a.routed.prepared, b.routed.prepared),
            capacity=self.queue_size,
            max_batch=self.max_batch,
        )
        self.workers[adapter] = worker
        return worker

    def _watch(self) -> None:
        """Every tick, on the loop: answer requests past their deadline, abandon predicts past their timeout,
        skip variants with too many hung threads (and resume them), retire workers of replaced models."""
        if self.loop is None:
            return
        now = time.perf_counter()
        served = set(self.models.values())
        skipped = set()
        smallest = WATCH_S * 10
        for adapter, worker in list(self.workers.items()):
            timeout = self._timeout(adapter.variant)
            smallest = min(smallest, timeout)
            late, _abandoned = worker.expire(now, timeout)
            if late:
                self._timed_out(adapter, late, timeout)
            if adapter not in served:  # replaced by a redeploy: ends once its queue is done
                if not worker.busy():
                    worker.close()
                    del self.workers[adapter]
                continue
            worker.start_thread()  # after a hung thread returned, a skipped variant resumes
            if worker.queue and not worker.kick_pending:  # never left waiting for a kick
                worker.kick()
            if worker.skipped:
                skipped.add(adapter.variant)
        if skipped != self.skipped:
            for v in sorted(skipped - self.skipped):
                log.error(
                    "deployment %s: variant %s is skipped: %d predict threads hung past its timeout; its traffic "
                    "goes to the champion %s", self.name, v, len(self._worker_of(v).hung),
                    self.champion(self.router.table),
                )  # fmt: skip
            for v in sorted(self.skipped - skipped):
                log.warning("deployment %s: variant %s resumed (its hung predicts returned)", self.name, v)
            self.skipped = frozenset(skipped)
        self.loop.call_later(max(0.002, min(WATCH_S, smallest / 10)), self._watch)

    def _worker_of(self, variant: str) -> Any:
        adapter = self.models.get(variant)
        return self.workers.get(adapter) if adapter is not None else None  # type: ignore[arg-type]

    def _timed_out(self, adapter: ModelAdapter, late: list[_Job], timeout: float) -> None:
        """Answer the jobs past their deadline that are not answered yet: a challenger's go to the champion,
        anyone else's get 504."""
        variant = adapter.variant
        stat = self._stat(variant)
        answered: list[tuple[_Job, InferResult]] = []
        retry: list[tuple[_Job, str, int]] = []
        for job in late:
            if job.done:
                continue
            job.done = True
            self.m_timeouts.inc((self.name, variant))
            err = f"variant {variant!r} did not answer within its timeout of {timeout:g} s"
            if self._retry_target(job) is not None:
                retry.append((job, err, 504))
                stat.done(False, time.perf_counter() - job.routed.t0, time.time())
                continue
            res = InferResult(504, None, err, variant, adapter, job.routed.req)
            res.retried_from = job.retried_from
            answered.append((job, res))
        if answered or retry:
            self._say(variant, "timeout", f"{err}; {'retried on the champion' if retry else 'answering 504'}")
            self._answer(adapter, stat, answered, retry, quiet=True)

    async def settle(self, timeout: float) -> bool:
        """Wait (on the loop) until no variant has a request queued or being predicted, at most ``timeout``
        seconds: at shutdown, what was accepted is answered. False if the bound ran out."""
        import asyncio

        deadline = time.monotonic() + timeout
        while any(w.busy() for a, w in self.workers.items() if not w.skipped):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # results posted back by the threads are answered
        return True

    def _predict(
        self, adapter: ModelAdapter, group: list[_Job]
    ) -> list[tuple[list | None, str | None, bool]]:
        """Per job: (outputs, error, rejected) — rejected: the request's fault (a 400), not the model's."""
        if len(group) > 1:
            try:
                return [
                    (out, None, False) for out in adapter.predict_batch([j.routed.prepared for j in group])
                ]
            except Exception:  # mismatch or a failing row: answer each request on its own
                pass
        results: list[tuple[list | None, str | None, bool]] = []
        for job in group:
            try:
                results.append((adapter.predict_prepared(job.routed.prepared), None, False))
            except BatchMismatch:
                results.append((None, "model output does not match the input rows", False))
            except Exception as exc:
                fault = _client_fault(job.routed.prepared, exc)
                if fault is not None:  # e.g. NaN the model refuses: a 400, like a decode error
                    results.append((None, fault, True))
                else:
                    results.append((None, f"{type(exc).__name__}: {exc}", False))
        return results

    def _finish(
        self, adapter: ModelAdapter, group: list[_Job], results: list, t_start: float, t_done: float
    ) -> None:
        """A micro-batch's results, back on the loop: answer each job the watchdog has not answered yet."""
        variant = adapter.variant
        self.m_batch.observe((self.name, variant), len(group))
        stat = self._stat(variant)
        stat.batch(len(group), sum(j.routed.prepared.rows for j in group), t_done - t_start)
        retry: list[tuple[_Job, str, int]] = []
        answered: list[tuple[_Job, InferResult]] = []
        for job, (outputs, err, rejected) in zip(group, results, strict=False):
            if job.done:  # past its deadline: answered (or retried) already
                continue
            job.done = True
            stat.queued(t_start - job.t_queued)
            if rejected:
                res = InferResult(
                    400, None, err or "the model rejected the input", variant, adapter, job.routed.req
                )
            elif outputs is None:
                self.m_model_errors.inc((self.name, variant))
                champion = self._retry_target(job)
                if champion is not None:  # the challenger's failure still counts as its own (statistics, log)
                    retry.append((job, err or "predict failed", 500))
                    stat.done(False, t_done - job.routed.t0, time.time())
                    continue
                res = InferResult(
                    500, None, f"model of variant {variant!r} failed: {err}", variant, adapter, job.routed.req
                )
            else:
                res = self._select(job, outputs, variant, adapter)
            res.retried_from = job.retried_from
            answered.append((job, res))
        if answered or retry:
            self._answer(adapter, stat, answered, retry)
        worker = self.workers.get(adapter)
        if worker is not None and worker.queue and not worker.kick_pending:  # the next micro-batch
            worker.kick_pending = True
            self.loop.call_soon(worker.kick)

    def _answer(
        self,
        adapter: ModelAdapter,
        stat: VariantStats,
        answered: list[tuple[_Job, InferResult]],
        retry: list[tuple[_Job, str, int]],
        quiet: bool = False,
    ) -> None:
        """Encode, log (spooled before anything is sent), send, then metrics and shadows; failed challenger
        attempts (``retry``: job, error, status) are logged as theirs and predicted again by the champion."""
        wires = [self._encode(job, res) for job, res in answered]
        # acknowledged means durable: the micro-batch's log records (and those of failed attempts being retried)
        # reach the spool in one write before any of its replies is sent
        refused = False
        if self.writer is not None and (answered or retry):
            refused = not self._log_live(adapter, answered, wires, retry)
        if refused:  # logging.on_full: refuse, and the records could not be kept: 503 for all, no retry
            jobs = [job for job, _ in answered] + [job for job, _e, _s in retry]
            answered = [(job, self._log_full_result(job)) for job in jobs]
            wires = [self._encode(job, res) for job, res in answered]
            retry = []
            self.refused += len(answered)
        now, wall = time.perf_counter(), time.time()
        for (job, res), (status, wire) in zip(answered, wires, strict=False):
            try:
                job.reply.send(wire)
            except Exception:
                log.exception("sending the reply to request %s failed", job.routed.req.id)
            stat.done(status == 200, now - job.routed.t0, wall)
            # -- after the reply: metrics and shadows (neither can delay or fail the answer) ---------------
            try:
                if refused:  # counted, but no shadow sees it: its record could not be kept either
                    self._observe_refused(job, status)
                else:
                    self._after(adapter, job, res, status)
            except Exception:
                log.exception("after-reply work failed for request %s", job.routed.req.id)
        for job, err, _status in retry:
            self._retry(job, err, quiet)

    def _observe_refused(self, job: _Job, status: int) -> None:
        routed, a = job.routed, job.routed.adapter
        labels = (self.name, routed.variant, a.model_name, a.model_version, str(status))
        self.m_seldon.observe(labels, time.perf_counter() - routed.t0)

    def _log_full_result(self, job: _Job) -> InferResult:
        routed = job.routed
        return InferResult(503, None, LOG_FULL_ERROR, routed.variant, routed.adapter, routed.req)

    def _retry_target(self, job: _Job) -> str | None:
        """The champion a failed request goes to instead of its client seeing the error: only for a request
        the split routed (a client that named its variant gets that variant's answer), only once."""
        routed = job.routed
        if routed.explicit or job.retried_from is not None or self.stopping:
            return None
        champion = self.champion(routed.table)
        if champion == routed.variant or champion not in self.models:
            return None
        return champion

    def _retry(self, job: _Job, err: str, quiet: bool = False) -> None:
        """Re-route a challenger's failed request to the champion (inference is idempotent). ``quiet``: the
        caller says it (rate-limited: timeouts, a full queue, a skipped variant), not a line per request."""
        routed = job.routed
        champion = self.champion(routed.table)
        adapter = self.models[champion]
        self.m_champion_retries.inc((self.name, routed.variant, champion))
        job.done = True
        if not quiet:
            log.warning(
                "request %s: variant %s failed (%s); retried on the champion %s", routed.req.id,
                routed.variant, err, champion,
            )  # fmt: skip
        try:
            prepared = adapter.prepare(routed.req.inputs)
        except ProtocolError as exc:  # the champion cannot read this input: the challenger's error stands
            res = InferResult(
                500, None, f"model of variant {routed.variant!r} failed: {err}; the champion "
                f"{champion!r} cannot take the input: {exc.message}", routed.variant, routed.adapter, routed.req,
            )  # fmt: skip
            job.reply.send(self._encode(job, res)[1])
            return
        again = Routed(routed.req, champion, adapter, prepared, routed.table, False, routed.t0)
        retried = _Job(again, job.reply, retried_from=routed.variant)
        retried.columns = job.columns
        self._enqueue(retried)

    def _select(self, job: _Job, outputs: list, variant: str, adapter: ModelAdapter) -> InferResult:
        """The outputs the client asked for, in its order (400 naming what the model returns otherwise); the
        log and the shadows get everything the model returned (``served``)."""
        req = job.routed.req
        res = InferResult(200, outputs, None, variant, adapter, req)
        res.served = outputs
        if req.output_names is not None:
            by_name = dict(outputs)
            missing = [n for n in req.output_names if n not in by_name]
            if missing:
                res.status, res.outputs = 400, None
                res.error = (
                    f"unknown output(s) {shown(', '.join(missing))}; the model returns {', '.join(by_name)}"
                )
            else:
                res.outputs = [(n, by_name[n]) for n in req.output_names]
        elif adapter.logs_probabilities:  # logging.probabilities: for the log, not the client (unless named)
            res.outputs = [o for o in outputs if o[0] != PROBA_OUTPUT]
        return res

    def _encode(self, job: _Job, res: InferResult) -> tuple[int, Any]:
        try:
            return job.reply.encode(res)
        except Exception as exc:  # e.g. an output no V2 datatype can carry
            res.status, res.outputs = 500, None
            res.error = f"variant {res.variant!r}: model output cannot be encoded as V2 tensors: {exc}"
            return job.reply.encode(res)

    def _after(self, adapter: ModelAdapter, job: _Job, res: InferResult, status: int) -> None:
        routed, variant = job.routed, adapter.variant
        req = routed.req
        elapsed = time.perf_counter() - routed.t0
        self.m_seldon.observe(
            (self.name, variant, adapter.model_name, adapter.model_version, str(status)), elapsed
        )
        outputs = res.served if status == 200 else None
        first = outputs[0][1] if outputs else None
        if first is not None:
            self._observe_predictions(variant, "false", first)
        if status == 200:
            self._recent_inputs = req.inputs
        for shadow in routed.table.shadows:
            if shadow != variant:
                worker = self.shadow_workers.get(shadow)
                if worker is not None:  # None only in the instant a redeploy replaces it
                    worker.offer(ShadowItem(req.id, req.inputs, variant, first, time.time(), job.columns))

    def _observe_predictions(self, variant: str, shadow: str, first: np.ndarray) -> None:
        if first.dtype.kind not in "biuf" or first.size == 0:
            return
        col = first.reshape(first.shape[0], -1)[:, 0] if first.ndim else first.reshape(1)
        self.m_predictions.observe_many((self.name, variant, shadow), col)

    def _record(
        self,
        adapter: ModelAdapter,
        rid: str,
        columns: dict[str, Any],
        outputs: list | None,
        status: int,
        err: str | None,
        latency_ms: float,
        shadow: bool,
        now: float,
    ) -> Any:
        return self._record_cls(
            id=rid,
            time=now,
            deployment=self.name,
            variant=adapter.variant,
            model_name=adapter.model_name,
            model_version=adapter.model_version,
            shadow=shadow,
            inputs=columns,
            outputs={n: log_value(a) for n, a in outputs} if outputs else {},
            latency_ms=latency_ms,
            status=status,
            error=err,
            revision=self.revision,
        )

    def _log_live(
        self,
        adapter: ModelAdapter,
        answered: list[tuple[_Job, InferResult]],
        wires: list[tuple[int, Any]],
        retry: list[tuple[_Job, str, int]],
    ) -> bool:
        """Hand the micro-batch's records to the writer (spooled before this returns); False only when
        ``logging.on_full: refuse`` and the log could not keep them."""
        now = time.time()
        t = time.perf_counter()
        try:
            records = []
            for job, res in answered:
                if job.columns is None:
                    job.columns = _columns(job.routed.req)
                status = wires[len(records)][0] if len(records) < len(wires) else res.status
                err = res.error
                records.append(
                    self._record(
                        adapter, job.routed.req.id, job.columns, res.served if status == 200 else None,
                        status, err,
                        (t - job.routed.t0) * 1000.0, False, now,
                    )
                )  # fmt: skip
            # the failed attempt, logged as the challenger's: guards must see it
            for job, err, status in retry:
                if job.columns is None:
                    job.columns = _columns(job.routed.req)
                records.append(
                    self._record(
                        adapter, job.routed.req.id, job.columns, None, status,
                        f"{RETRY_PREFIX} {self.champion(job.routed.table)!r}: {err}",
                        (t - job.routed.t0) * 1000.0, False, now,
                    )
                )  # fmt: skip
            self.writer.submit_many(records, strict=self.refuse_unlogged)
        except LogFull:
            return False
        except Exception:  # logging must never break serving; the writer counts its own drops
            log.exception("response log submit failed")
            return not self.refuse_unlogged  # refuse: nothing is answered without its record, whatever failed
        return True

    def _on_shadow_result(self, adapter: ModelAdapter, res: ShadowResult) -> None:
        """Runs in a shadow worker thread."""
        item = res.item
        variant = adapter.variant
        self._stat(variant).shadow(res.error is None, res.latency_ms / 1000.0, time.time())
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
            columns = item.columns
            if columns is None:
                columns = {t.name: log_value(t.array) for t in item.tensors}
            try:
                self.writer.submit(
                    self._record(
                        adapter, item.request_id, columns, res.outputs, 200 if res.error is None else 500,
                        res.error, res.latency_ms, True, time.time(),
                    )
                )  # fmt: skip
            except Exception:
                log.exception("response log submit failed")
