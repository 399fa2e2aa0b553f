"""Webhook messages to a real HTTP receiver on 127.0.0.1: Slack-compatible, signed, rate limited, secret kept."""

from __future__ import annotations

import json
import logging

from wolt_jupyter.updater.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, Notifier, verify_signature
from wolt_jupyter.updater.policy import Notify

from helpers import free_port

SECRET = "hook-secret-4b1d"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_signed_slack_compatible_message(receiver) -> None:
    url, got = receiver.url, receiver.got
    clock = Clock()
    n = Notifier(Notify(webhook=url, secret=SECRET), clock=clock)
    sent = n.send("promote", "eta/7", "eta v7 promoted", {"deployment": "eta", "action": "promote"})
    assert sent.outcome == "sent" and sent.status == 200
    assert "path-token" not in sent.detail  # the webhook path is itself a credential
    (msg,) = got
    payload = json.loads(msg["body"])
    assert (
        payload["text"] == "eta v7 promoted"
        and payload["deployment"] == "eta"
        and payload["event"] == "promote"
    )
    headers = {k.lower(): v for k, v in msg["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == payload["id"] and len(payload["id"]) >= 16  # a key per message
    stamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(SECRET, msg["body"], stamp, signature, now=clock.now)
    assert not verify_signature("other", msg["body"], stamp, signature, now=clock.now)
    assert not verify_signature(SECRET, msg["body"] + b" ", stamp, signature, now=clock.now)
    assert not verify_signature(SECRET, msg["body"], stamp, signature, now=clock.now + 3600)  # stale
    assert SECRET.encode() not in msg["body"] and SECRET not in json.dumps(msg["headers"])


def test_unsigned_without_secret(receiver) -> None:
    url, got = receiver.url, receiver.got
    Notifier(Notify(webhook=url)).send("rollback", "eta/8", "rolled back")
    assert SIGNATURE_HEADER.lower() not in {k.lower() for k in got[0]["headers"]}


def test_a_flapping_candidate_is_rate_limited_across_restarts(receiver, tmp_path) -> None:
    url, got = receiver.url, receiver.got
    clock = Clock()
    state = tmp_path / "notify.json"
    policy = Notify(webhook=url, secret=SECRET, rate_limit=2, per=600, events=("rollback", "promote"))
    n = Notifier(policy, state, clock=clock)
    outcomes = [n.send("rollback", "eta/9", f"flap {i}").outcome for i in range(2)]
    restarted = Notifier(policy, state, clock=clock)  # the service restarts: the window is kept
    outcomes += [restarted.send("rollback", "eta/9", f"flap {i}").outcome for i in range(2, 5)]
    assert outcomes == ["sent", "sent", "rate_limited", "rate_limited", "rate_limited"]
    assert len(got) == 2
    assert restarted.send("promote", "eta/10", "another candidate").outcome == "sent"  # per candidate
    clock.now += 601
    assert restarted.send("rollback", "eta/9", "flap 5").outcome == "sent"
    last = json.loads(got[-1]["body"])["text"]
    assert last == "flap 5 (3 earlier messages about eta/9 held back by the rate limit)"
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    assert restarted.send("hold", "eta/9", "holding").outcome == "not_subscribed"


def test_failures_are_one_line_and_never_show_the_secret(receiver, caplog) -> None:
    url = receiver.url
    receiver.status = 500
    caplog.set_level(logging.WARNING)
    n = Notifier(Notify(webhook=url, secret=SECRET, timeout=2))
    bad = n.send("promote", "eta/7", "x")
    assert bad.outcome == "failed" and bad.status == 500 and "HTTP 500" in bad.detail
    down = Notifier(Notify(webhook=f"http://127.0.0.1:{free_port()}/hook", secret=SECRET, timeout=2)).send(
        "promote", "eta/7", "x"
    )
    assert down.outcome == "failed" and "refused" in down.detail.lower() and "\n" not in down.detail
    assert SECRET not in caplog.text and "path-token" not in caplog.text
    assert SECRET not in repr(Notify(webhook=url, secret=SECRET))
