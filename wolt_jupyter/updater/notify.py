"""Telling people: a JSON POST to a webhook, Slack-compatible, signed, and rate limited per candidate.

The body carries ``text`` (what Slack's incoming webhooks display) and the decision's fields for machines.
With a secret, ``X-Wolt-Timestamp`` is the send time (epoch seconds) and ``X-Wolt-Signature`` is
``sha256=`` + the hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under the secret, so a receiver can check both
origin and freshness (:func:`verify_signature`). The secret is never logged, printed or sent.

A candidate that flaps must not flood a channel: at most ``rate_limit`` messages per ``per`` seconds for one
candidate; the ones held back are counted and the next message sent says how many. The window is kept in a
small file, so a restarted service does not start counting afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import one_line
from wolt_jupyter.revisions import write_atomic
from wolt_jupyter.updater.policy import Notify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wolt-Signature"
TIMESTAMP_HEADER = "X-Wolt-Timestamp"


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
    """What became of one message: ``sent``, ``rate_limited``, ``not_subscribed`` or ``failed``."""

    outcome: str
    detail: str = ""
    status: int | None = None


class Notifier:
    """Sends decision messages for one deployment. ``state_path`` keeps the rate-limit window across restarts."""

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

    def send(self, event: str, key: str, text: str, fields: Mapping[str, Any] | None = None) -> Sent:
        """Post ``text`` (and ``fields``) for ``event`` about candidate ``key`` (e.g. ``eta/7``), unless the policy
        does not subscribe to the event or the candidate used up its messages for the window."""
        n = self.notify
        if event not in n.events:
            return Sent("not_subscribed", f"{event} is not in notify.events")
        now = self.clock()
        entry = self._state.setdefault(key, {"sent": [], "suppressed": 0})
        entry["sent"] = [t for t in entry["sent"] if now - t < n.per]
        if len(entry["sent"]) >= n.rate_limit:
            entry["suppressed"] += 1
            self._write()
            return Sent("rate_limited", f"{n.rate_limit} messages in {n.per:.0f}s already sent for {key}")
        held = entry["suppressed"]
        if held:
            text = f"{text} ({held} earlier message{'s' if held > 1 else ''} about {key} held back by the rate limit)"
        payload = {"text": text, "event": event, "candidate": key, "time": now, **dict(fields or {})}
        body = json.dumps(payload, default=str, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "wolt-jupyter-updater"}
        if n.secret:
            stamp = str(int(now))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = sign(n.secret, body, stamp)
        request = urllib.request.Request(n.webhook, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=n.timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            result = Sent("failed", f"HTTP {exc.code} from {where(n.webhook)}", exc.code)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            text_reason = one_line(reason) if isinstance(reason, BaseException) else str(reason)
            result = Sent("failed", f"{where(n.webhook)}: {text_reason}")
        else:
            entry["sent"].append(now)
            entry["suppressed"] = 0
            result = Sent("sent", where(n.webhook), status)
        if result.outcome == "failed":
            log.warning("webhook %s: %s", event, result.detail)
        self._write()
        return result
