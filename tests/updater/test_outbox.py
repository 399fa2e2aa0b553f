"""The outbox and its sender against a real HTTP receiver on 127.0.0.1: durable, retried with back-off, failures
recorded, a message in flight when its process is killed sent again with the same key, never after a 2xx."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

from wolt_jupyter.updater.notify import IDEMPOTENCY_HEADER, Message, Notifier
from wolt_jupyter.updater.outbox import Outbox, Sender
from wolt_jupyter.updater.policy import Notify

from helpers import WebhookReceiver, free_port


def message(i: int = 1, event: str = "rollback") -> Message:
    fields = {"deployment": "eta", "action": event, "version": "7"}
    return Message(f"decision-{i}", event, "eta/7", f"eta v7 {event} #{i}", fields, 1_800_000_000.0 + i)


def keys(receiver: WebhookReceiver) -> list[str]:
    return [{k.lower(): v for k, v in m["headers"].items()}[IDEMPOTENCY_HEADER.lower()] for m in receiver.got]


def test_queued_durably_and_privately_then_sent_once_with_its_key(receiver, tmp_path) -> None:
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    box.add(message(1))
    box.add(message(1))  # the same decision again (made again after a restart): queued once
    box.add(message(2, "promote"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [m.status for m in Outbox(path).messages()] == ["pending", "pending"]  # on disk before any send
    told = []
    sender = Sender(box, Notifier(Notify(webhook=receiver.url)), on_outcome=told.append)
    assert sender.drain(10)
    assert keys(receiver) == ["decision-1", "decision-2"]  # oldest first, each once
    bodies = receiver.messages()
    assert [b["id"] for b in bodies] == keys(receiver) and bodies[0]["text"] == "eta v7 rollback #1"
    assert [(m.id, m.status) for m in told] == [("decision-1", "sent"), ("decision-2", "sent")]
    again = Outbox(path)  # a restarted service: what was sent stays sent
    assert Sender(again, Notifier(Notify(webhook=receiver.url))).drain(5) and len(receiver.got) == 2
    assert again.counts() == {"pending": 0, "sent": 2, "failed": 0, "rate_limited": 0}


def test_failures_are_retried_with_back_off_then_recorded_as_failed(receiver, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    box = Outbox(tmp_path / "outbox.jsonl")
    told: list[Message] = []
    notify = Notify(webhook=receiver.url, secret="s3cret-hook", retries=2, backoff=0.2)
    sender = Sender(box, Notifier(notify), on_outcome=told.append)

    receiver.status = 500  # down for good: 1 + 2 attempts, then failed
    box.add(message(1))
    assert sender.drain(20)
    got = receiver.got
    assert keys(receiver) == ["decision-1"] * 3 and len({m["body"] for m in got}) == 1  # the same bytes
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(got)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # 0.2 s, then doubled
    failed = box.get("decision-1")
    assert failed is not None and failed.status == "failed" and failed.attempts == 3
    assert "HTTP 500" in failed.detail and failed.http_status == 500
    assert [(m.id, m.status) for m in told] == [("decision-1", "failed")]
    assert "not delivered after 3 attempts: HTTP 500" in caplog.text
    assert "s3cret-hook" not in caplog.text and "path-token" not in caplog.text + failed.detail

    receiver.got.clear()  # a 503 that recovers: sent on the third attempt
    receiver.status, receiver.statuses = 200, [503, 503]
    box.add(message(2))
    assert sender.drain(20) and box.get("decision-2").status == "sent" and len(receiver.got) == 3  # type: ignore[union-attr]

    receiver.got.clear()  # a 404 will not change: failed at once
    receiver.status = 404
    box.add(message(3))
    assert sender.drain(20) and len(receiver.got) == 1
    assert box.get("decision-3").status == "failed"  # type: ignore[union-attr]
    assert box.counts() == {"pending": 0, "sent": 1, "failed": 2, "rate_limited": 0}


def test_nobody_listening_is_retried_and_the_thread_keeps_going(tmp_path) -> None:
    box = Outbox(tmp_path / "outbox.jsonl")
    notify = Notify(webhook=f"http://127.0.0.1:{free_port()}/hook", retries=1, backoff=0.1, timeout=2)
    sender = Sender(box, Notifier(notify))
    with sender.running():
        box.add(message(1))
        sender.wake()
        deadline = time.monotonic() + 20
        while box.get("decision-1").status == "pending":  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    m = box.get("decision-1")
    assert m is not None and m.status == "failed" and m.attempts == 2 and "refused" in m.detail.lower()


CHILD = """
import sys
from wolt_jupyter.updater.notify import Notifier
from wolt_jupyter.updater.outbox import Outbox, Sender
from wolt_jupyter.updater.policy import Notify

Sender(Outbox(sys.argv[1]), Notifier(Notify(webhook=sys.argv[2], timeout=60))).drain(60)
"""


def test_a_message_in_flight_when_its_process_is_killed_goes_again_with_the_same_key(
    receiver, tmp_path
) -> None:
    path = tmp_path / "outbox.jsonl"
    Outbox(path).add(message(1))
    receiver.delay = 60  # the receiver has the message; its answer never reaches the sender
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(path), receiver.url])
    try:
        deadline = time.monotonic() + 60
        while not receiver.got:
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    first = receiver.got[0]
    box = Outbox(path)  # the service restarted
    m = box.get("decision-1")
    assert m is not None and m.status == "pending" and m.in_flight and m.attempts == 1
    receiver.delay = 0
    assert Sender(box, Notifier(Notify(webhook=receiver.url))).drain(10)
    assert keys(receiver) == ["decision-1", "decision-1"] and receiver.got[1]["body"] == first["body"]
    assert Outbox(path).get("decision-1").status == "sent"  # type: ignore[union-attr]
    assert Sender(Outbox(path), Notifier(Notify(webhook=receiver.url))).drain(5)  # and never after the 2xx
    assert len(receiver.got) == 2


def test_a_torn_last_line_is_ignored_and_ended(tmp_path, receiver) -> None:
    path = tmp_path / "outbox.jsonl"
    Outbox(path).add(message(1))
    with path.open("ab") as fh:
        fh.write(b'{"op": "attempt", "id": "decis')  # the process died mid-write
    box = Outbox(path)
    assert [m.id for m in box.messages()] == ["decision-1"]
    box.add(message(2))
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[-1])["id"] == "decision-2"  # its own line, readable
    assert [m.id for m in Outbox(path).messages()] == ["decision-1", "decision-2"]
