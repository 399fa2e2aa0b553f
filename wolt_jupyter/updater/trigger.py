"""The registry-webhook trigger: an HTTP receiver for MLflow's model-registry webhooks (MLflow >= 3.3, SQL
stores) that wakes the update loop for an immediate poll. Polling stays the source of truth — a lost, late or
forged message changes nothing but when the next poll happens; the message's content is never acted on.

MLflow signs a delivery (``mlflow/webhooks/delivery.py``, 3.3+) with three headers: ``X-MLflow-Delivery-Id``
(a UUID), ``X-MLflow-Timestamp`` (Unix seconds) and ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` of
``"{delivery_id}.{timestamp}.{body}"`` keyed by the webhook's secret. The body is
``{"entity": "model_version", "action": "created", "timestamp": ..., "data": {"name": ..., ...}}``.
The receiver checks the signature in constant time, refuses timestamps more than ``max_skew`` seconds away
(replayed deliveries) and a delivery id seen before, then wakes the loop when the message is about the watched
model. It binds 127.0.0.1 unless told otherwise, and a secret is required: an unsigned receiver would let
anyone make the service poll at will. MLflow refuses to deliver to loopback addresses unless its server runs
with ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` (and to ``http://`` unless ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES``
lists it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
MAX_BODY = 1 << 20
# registry events that may make a version a candidate (a new version, an alias moved, a tag set)
RELEVANT = {
    ("model_version", "created"),
    ("model_version_alias", "created"),
    ("model_version_tag", "set"),
    ("registered_model", "created"),
}


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_mlflow_delivery(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, max_skew: float = 300.0
) -> str | None:
    """None when the delivery is signed by ``secret`` and fresh; otherwise why not, in a few words."""
    lower = {k.lower(): v for k, v in headers.items()}
    delivery_id = lower.get(DELIVERY_ID_HEADER.lower())
    stamp = lower.get(TIMESTAMP_HEADER.lower())
    signature = lower.get(SIGNATURE_HEADER.lower())
    if not delivery_id or not stamp or not signature:
        return f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_ID_HEADER}"
    try:
        sent = int(stamp)
    except ValueError:
        return "the timestamp is not Unix seconds"
    if abs(now - sent) > max_skew:
        return (
            f"the timestamp is {now - sent:+.0f}s away (at most {max_skew:.0f}s): a replay or a wrong clock"
        )
    expected = mlflow_signature(secret, delivery_id, stamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return "the signature does not match the secret"
    return None


class WebhookTrigger:
    """Receives MLflow's webhooks on ``host:port`` (port 0: any free one) and calls ``wake`` for deliveries
    about ``model``. Answers 200 (taken or ignored, with which), 401 (signature), 400 (not a webhook body),
    404 (another path), 413 (too large)."""

    def __init__(
        self,
        secret: str,
        model: str,
        wake: Callable[[], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/mlflow-webhook",
        max_skew: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("a webhook receiver needs a secret")
        self.secret, self.model, self.wake, self.path = secret, model, wake, path
        self.max_skew, self.clock = max_skew, clock
        self.received = 0  # deliveries that woke the loop
        self.refused = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        trigger = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status, doc = trigger.handle(self.path, dict(self.headers), self._body())
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _body(self) -> bytes | None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    return None
                return self.rfile.read(length)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="wolt-webhook")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        if isinstance(host, bytes):  # typeshed allows bytes for other socket families; AF_INET gives str
            host = host.decode()
        return f"http://{host}:{port}{self.path}"

    def start(self) -> WebhookTrigger:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookTrigger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle(self, path: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, dict[str, Any]]:
        """The answer to one POST (status, JSON body); wakes the loop when it is a fresh delivery about the
        watched model."""
        if path.split("?", 1)[0] != self.path:
            return 404, {"error": f"POST MLflow webhooks to {self.path}"}
        if body is None:
            return 413, {"error": f"body over {MAX_BODY} bytes"}
        problem = verify_mlflow_delivery(self.secret, headers, body, self.clock(), self.max_skew)
        if problem is not None:
            self.refused += 1
            log.warning("webhook delivery refused: %s", problem)
            return 401, {"error": problem}
        delivery = {k.lower(): v for k, v in headers.items()}[DELIVERY_ID_HEADER.lower()]
        with self._lock:
            if delivery in self._seen:
                return 200, {"ignored": "delivery already received"}
            self._seen[delivery] = None
            while len(self._seen) > 1000:
                self._seen.popitem(last=False)
        try:
            doc = json.loads(body)
            event = (str(doc["entity"]), str(doc["action"]))
            name = (doc.get("data") or {}).get("name")
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"error": "not an MLflow webhook body: {entity, action, data}"}
        if event not in RELEVANT or (name is not None and name != self.model):
            return 200, {"ignored": f"{'.'.join(event)} of {name!r}"}
        self.received += 1
        self.wake()
        return 200, {"polling": self.model}
