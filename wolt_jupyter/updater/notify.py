"""Telling people: a JSON POST to a webhook, Slack-compatible, signed, and rate limited per candidate.

The body carries ``text`` (what Slack's incoming webhooks display) and the decision's fields for machines.
With a secret, ``X-Wolt-Timestamp`` is the send time (epoch seconds) and ``X-Wolt-Signature`` is
``sha256=`` + the hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under the secret, so a receiver can check both
origin and freshness (:func:`verify_signature`). The secret is never logged, printed or sent.

A candidate that flaps must not flood a channel: at most ``rate_limit`` messages per ``per`` seconds for one
candidate, counted when a message is queued (:meth:`Notifier.admit`); the ones held back are counted and the
next message says how many. The window is kept in a small file, so a restarted service does not start counting
afresh.

Each message carries a stable id (``Idempotency-Key`` header and ``id`` in the body); its body is fixed when it
is queued, so every attempt sends the same bytes. The service queues messages in its outbox and a sender thread
delivers them (:mod:`wolt_jupyter.updater.outbox`); :meth:`Notifier.send` is the one-shot form.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import one_line
from wolt_jupyter.masking import mask_url
from wolt_jupyter.revisions import write_atomic
from wolt_jupyter.updater.policy import Notify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wolt-Signature"
TIMESTAMP_HEADER = "X-Wolt-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRIED_STATUS = (408, 425, 429)  # besides 5xx: worth another attempt; any other 4xx will not change


def sign(secret: str, body: bytes, timestamp: str) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """For receivers: the signature matches and the timestamp is within ``tolerance`` seconds of now."""
    try:
        fresh = abs((time.time() if now is None else now) - float(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, body, timestamp), signature)


def where(url: str) -> str:
    """Scheme and host of a webhook, for messages: the path of a Slack webhook is itself a credential."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/…"


@dataclass(frozen=True)
class Sent:
    """What became of one message: ``sent``, ``rate_limited``, ``not_subscribed`` or ``failed``; a failure with
    ``retry`` may go through on another attempt (no answer, a timeout, 5xx, 408, 425, 429)."""

    outcome: str
    detail: str = ""
    status: int | None = None
    retry: bool = False


@dataclass
class Message:
    """One webhook message as queued, and what became of it so far (the outbox keeps these)."""

    id: str  # the decision's id: the Idempotency-Key, the same on every attempt
    event: str
    candidate: str  # the rate limit's key, e.g. eta/7
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0  # when it was decided
    status: str = "pending"  # pending | sent | failed | rate_limited
    attempts: int = 0
    next_at: float = 0.0  # not before (epoch seconds): the back-off after a failed attempt
    detail: str = ""  # the last attempt's outcome, one line, no credentials
    http_status: int | None = None
    in_flight: bool = False  # an attempt began and never ended: a crash or a stop mid-send

    def body(self) -> bytes:
        payload = {"text": mask_url(self.text), "event": self.event, "candidate": self.candidate, "time": self.time,
                   **self.fields, "id": self.id}  # fmt: skip
        return json.dumps(payload, default=str, sort_keys=True).encode()


class Notifier:
    """Admits and posts decision messages for one deployment. ``state_path`` keeps the rate-limit window across
    restarts."""

    def __init__(
        self, notify: Notify, state_path: str | Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.notify = notify
        self.state_path = Path(state_path) if state_path is not None else None
        self.clock = clock
        self._state = self._read()

    def _read(self) -> dict[str, Any]:
        if self.state_path is None or not self.state_path.is_file():
            return {}
        try:
            data = json.loads(self.state_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # a damaged window only means counting afresh

    def _write(self) -> None:
        if self.state_path is not None:
            write_atomic(self.state_path, json.dumps(self._state), mode=0o600)

    def admit(self, event: str, key: str, text: str) -> tuple[str, str]:
        """Whether a message for ``event`` about candidate ``key`` (e.g. ``eta/7``) may go: ``(outcome, text)``
        with outcome ``admitted``, ``rate_limited`` or ``not_subscribed``; an admitted text says how many
        earlier ones the rate limit held back. An admitted message counts in the window from now."""
        n = self.notify
        if event not in n.events:
            return "not_subscribed", text
        now = self.clock()
        entry = self._state.setdefault(key, {"sent": [], "suppressed": 0})
        entry["sent"] = [t for t in entry["sent"] if now - t < n.per]
        if len(entry["sent"]) >= n.rate_limit:
            entry["suppressed"] += 1
            self._write()
            return "rate_limited", text
        held = entry["suppressed"]
        if held:
            text = f"{text} ({held} earlier message{'s' if held > 1 else ''} about {key} held back by the rate limit)"
        entry["sent"].append(now)
        entry["suppressed"] = 0
        self._write()
        return "admitted", text

    def deliver(self, message: Message) -> Sent:
        """One POST of ``message`` (signed with the send time when there is a secret)."""
        n = self.notify
        body = message.body()
        headers = {"Content-Type": "application/json", "User-Agent": "wolt-jupyter-updater",
                   IDEMPOTENCY_HEADER: message.id}  # fmt: skip
        if n.secret:
            stamp = str(int(self.clock()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = sign(n.secret, body, stamp)
        request = urllib.request.Request(n.webhook, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=n.timeout) as resp:
                return Sent("sent", where(n.webhook), resp.status)
        except urllib.error.HTTPError as exc:
            retry = exc.code >= 500 or exc.code in RETRIED_STATUS
            return Sent("failed", f"HTTP {exc.code} from {where(n.webhook)}", exc.code, retry)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            text_reason = one_line(reason) if isinstance(reason, BaseException) else str(reason)
            return Sent("failed", f"{where(n.webhook)}: {text_reason}", retry=True)

    def send(self, event: str, key: str, text: str, fields: Mapping[str, Any] | None = None) -> Sent:
        """Admit and post one message now, once (no outbox, no retry): ``rate_limited``/``not_subscribed``
        when it may not go."""
        outcome, text = self.admit(event, key, text)
        if outcome != "admitted":
            detail = f"{self.notify.rate_limit} messages in {self.notify.per:.0f}s already sent for {key}"
            return Sent(outcome, detail if outcome == "rate_limited" else f"{event} is not in notify.events")
        message = Message(uuid.uuid4().hex, event, key, text, dict(fields or {}), self.clock())
        result = self.deliver(message)
        if result.outcome == "failed":
            log.warning("webhook %s: %s", event, result.detail)
        return result
