"""The logger service: receives the operators' request-logger CloudEvents and writes the response log.

KServe's logger and Seldon Core's executor send, for every request they serve, two HTTP CloudEvents in binary
mode (the attributes in ``Ce-*`` headers, the payload as the body) to the URL the InferenceService's or
SeldonDeployment's ``logger.url`` names: one with the request body, one with the response body, both with the
same ``Ce-Id``. This service pairs them and writes one :class:`ResponseRecord` per pair — the row the local
runtime writes — into the deployment's response store, through a spooled :class:`ResponseWriter`: a pair is
answered 2xx only once its row is in the spool (in the OS), so an acknowledged event is never lost.

Read for the shapes (names as the sources spell them):

- KServe v0.20.0, ``pkg/logger/worker.go`` (Go module ``github.com/kserve/kserve``): types
  ``org.kubeflow.serving.inference.request``/``.response``; extensions ``inferenceservicename``,
  ``namespace``, ``component``, ``endpoint`` (``default`` or ``canary``), ``metadata`` (JSON),
  ``annotations``, ``recordedtime``; ``Ce-Time`` is the occurrence time of each half; anything but a 200 is
  logged by the sender as an error. ``pkg/logger/handler.go``: both halves carry the same id.
- Seldon Core v1, ``executor/logger/worker.go`` (github.com/SeldonIO/seldon-core): types
  ``io.seldon.serving.inference.request``/``.response`` (and ``io.seldon.serving.feedback``, ignored here);
  extensions ``modelid``, ``requestid``, ``inferenceservicename`` (the SeldonDeployment), ``namespace``,
  ``endpoint`` (the predictor: our variant's name), ``protocol``; the time is set at send.

A half whose other half never arrives is kept for ``pair_timeout`` seconds (at most ``max_unpaired`` of them),
then counted in ``unpaired_expired`` (``GET /stats``) and logged by id; none is dropped silently. A first half
waits in memory and is answered 202: a restart of this process before its other half arrives loses that pair
(the operators do not retry), which the spool does not cover.

Run in a pod as ``python -m wolt_jupyter.serving.eventlog --store-url URL --spool-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import WoltError
from wolt_jupyter.masking import mask_url
from wolt_jupyter.responses.record import ResponseRecord

log = logging.getLogger("wolt_jupyter.eventlog")

REQUEST_TYPES = {
    "org.kubeflow.serving.inference.request": "kserve",
    "io.seldon.serving.inference.request": "seldon",
}
RESPONSE_TYPES = {
    "org.kubeflow.serving.inference.response": "kserve",
    "io.seldon.serving.inference.response": "seldon",
}
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Half:
    """One CloudEvent of a pair, as received."""

    source: str  # kserve | seldon
    id: str
    time: float  # the event's Ce-Time (epoch seconds), else when it arrived
    headers: dict[str, str]
    body: Any
    received: float = field(default_factory=time.monotonic)


class EventPairer:
    """Pairs request and response halves by (operator, Ce-Id); bounded in count and age."""

    def __init__(self, pair_timeout: float = 300.0, max_unpaired: int = 100_000) -> None:
        self.pair_timeout, self.max_unpaired = pair_timeout, max_unpaired
        self._waiting: OrderedDict[tuple[str, str, bool], Half] = (
            OrderedDict()
        )  # key: (source, id, is_request)
        self._lock = threading.Lock()
        self.paired = 0
        self.unpaired_expired = 0
        self.unpaired_evicted = 0

    def add(self, half: Half, is_request: bool) -> tuple[Half, Half] | None:
        """The (request, response) pair ``half`` completes, else None (it waits for its other half)."""
        with self._lock:
            other = self._waiting.pop((half.source, half.id, not is_request), None)
            if other is not None:
                self.paired += 1
                return (half, other) if is_request else (other, half)
            self._waiting[(half.source, half.id, is_request)] = half
            while len(self._waiting) > self.max_unpaired:
                key, _ = self._waiting.popitem(last=False)
                self.unpaired_evicted += 1
                log.warning(
                    "unpaired %s event %s evicted: more than %d waiting", key[0], key[1], self.max_unpaired
                )
            return None

    def expire(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        gone = 0
        with self._lock:
            while self._waiting:
                key, half = next(iter(self._waiting.items()))
                if now - half.received < self.pair_timeout:
                    break
                del self._waiting[key]
                gone += 1
                log.warning("%s %s event %s never paired in %.0f s", key[0], "request" if key[2] else "response",
                            key[1], self.pair_timeout)  # fmt: skip
            self.unpaired_expired += gone
        return gone

    @property
    def waiting(self) -> int:
        return len(self._waiting)


def _event_time(value: str | None) -> float | None:
    if not value:
        return None
    # Go writes RFC 3339 with up to nine fractional digits; Python reads six
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _tensors(body: Any, key: str) -> dict[str, Any]:
    """A V2 body's tensors as the response log stores them: name -> values shaped as the tensor says."""
    import numpy as np

    out: dict[str, Any] = {}
    for t in (body or {}).get(key) or []:
        if not isinstance(t, dict) or "name" not in t:
            continue
        data, shape = t.get("data"), t.get("shape")
        try:
            out[str(t["name"])] = np.asarray(data).reshape(shape).tolist() if shape else data
        except (ValueError, TypeError):
            out[str(t["name"])] = data
    return out


def to_record(request: Half, response: Half, revision: int | None = None) -> ResponseRecord:
    """The row the local runtime would have written for this request/response pair."""
    h, body = response.headers, response.body if isinstance(response.body, dict) else {}
    variant = h.get("ce-endpoint") or request.headers.get("ce-endpoint") or "default"
    latency = max(0.0, (response.time - request.time) * 1000.0)
    error = body.get("error") if isinstance(body.get("error"), str) else None
    return ResponseRecord(
        id=request.id,
        time=request.time,
        deployment=h.get("ce-inferenceservicename") or request.headers.get("ce-inferenceservicename") or "",
        variant=variant,
        model_name=str(body.get("model_name") or h.get("ce-modelid") or ""),
        model_version=str(body.get("model_version") or ""),
        shadow=False,
        inputs=_tensors(request.body, "inputs"),
        outputs=_tensors(body, "outputs"),
        latency_ms=latency,
        status=500 if error else 200,
        error=error,
        revision=revision,
    )


class EventLogger:
    """The service's state: the pairer, the writer, what it refused."""

    def __init__(self, writer: Any, *, deployment: str | None = None, revision: int | None = None,
                 pair_timeout: float = 300.0, max_unpaired: int = 100_000) -> None:  # fmt: skip
        self.writer, self.deployment, self.revision = writer, deployment, revision
        self.pairer = EventPairer(pair_timeout, max_unpaired)
        self.refused = 0
        self.written = 0
        self.ignored = 0

    def receive(self, headers: dict[str, str], raw: bytes) -> tuple[int, str]:
        """(HTTP status, one-line message) for one binary-mode CloudEvent."""
        self.pairer.expire()
        ce_type, ce_id = headers.get("ce-type", ""), headers.get("ce-id", "")
        if not ce_id or not ce_type:
            self.refused += 1
            return 400, "not a binary-mode CloudEvent: Ce-Id and Ce-Type are required"
        if ce_type not in REQUEST_TYPES and ce_type not in RESPONSE_TYPES:
            self.ignored += 1  # e.g. Seldon's feedback events: accepted, not logged here
            return 202, f"ignored event type {ce_type}"
        name = headers.get("ce-inferenceservicename", "")
        if self.deployment and name != self.deployment:
            self.refused += 1
            return 400, f"event for {name!r}; this logger writes {self.deployment!r}'s log"
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None  # a payload that is not JSON (e.g. gRPC bytes) is logged without tensors
        is_request = ce_type in REQUEST_TYPES
        source = (REQUEST_TYPES if is_request else RESPONSE_TYPES)[ce_type]
        when = _event_time(headers.get("ce-time")) or time.time()
        pair = self.pairer.add(Half(source, ce_id, when, headers, body), is_request)
        if pair is None:
            return 202, "waiting for its other half"
        record = to_record(*pair, revision=self.revision)
        try:
            kept = self.writer.submit_many([record], strict=True)  # in the spool when it returns
        except WoltError as exc:
            return 503, f"not logged: {exc}"
        if kept != 1:
            return 503, "not logged"
        self.written += 1
        return 200, "logged"

    def stats(self) -> dict[str, int]:
        p = self.pairer
        return {"written": self.written, "paired": p.paired, "waiting": p.waiting,
                "unpaired_expired": p.unpaired_expired, "unpaired_evicted": p.unpaired_evicted,
                "refused": self.refused, "ignored": self.ignored}  # fmt: skip


def _handler(service: EventLogger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
                self.close_connection = True
                return
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, message = service.receive(headers, raw)
            self._answer(status, {"status": message} if status < 400 else {"error": message})

        def do_GET(self) -> None:
            if self.path in ("/healthz", "/ready"):
                self._answer(200, {"status": "ok"})
            elif self.path == "/stats":
                self._answer(200, service.stats())
            else:
                self._answer(404, {"error": f"no route {self.path}"})

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug(fmt, *args)

    return Handler


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from wolt_jupyter.responses.writer import ResponseWriter

    p = argparse.ArgumentParser(description="receive KServe's / Seldon's request-logger CloudEvents")
    p.add_argument("--host", default="0.0.0.0")  # a pod's port; the tests pass 127.0.0.1
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--store-url", default=os.environ.get("WOLT_RESPONSE_STORE_URL"))
    p.add_argument("--spool-dir", type=Path, required=True)
    p.add_argument("--deployment", help="refuse events of any other InferenceService/SeldonDeployment")
    p.add_argument("--revision", type=int)
    p.add_argument("--pair-timeout", type=float, default=300.0)
    p.add_argument("--max-unpaired", type=int, default=100_000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.store_url:
        p.error("--store-url (or WOLT_RESPONSE_STORE_URL) is required")
    writer = ResponseWriter(args.store_url, spool_dir=args.spool_dir)
    service = EventLogger(writer, deployment=args.deployment, revision=args.revision,
                          pair_timeout=args.pair_timeout, max_unpaired=args.max_unpaired)  # fmt: skip
    server = ThreadingHTTPServer((args.host, args.port), _handler(service))
    host, port = server.server_address[:2]
    signal.signal(signal.SIGTERM, _interrupt)  # a pod's stop: flush the writer, then exit
    print(f"listening on {host}:{port}, writing {mask_url(args.store_url)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
