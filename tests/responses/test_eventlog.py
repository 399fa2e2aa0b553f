"""The logger service (``wolt_jupyter.serving.eventlog``) as a real process: CloudEvents shaped as KServe's
logger (v0.20.0 ``pkg/logger/worker.go``) and Seldon Core's executor (``executor/logger/worker.go``) send them,
binary mode over HTTP, become the response log's rows, read back with ``wolt_jupyter.read_responses``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wolt_jupyter

pytestmark = pytest.mark.integration

REQUEST = {
    "id": "r1",
    "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}],
}
RESPONSE = {
    "model_name": "eta",
    "model_version": "7",
    "id": "r1",
    "outputs": [{"name": "predict", "shape": [2], "datatype": "FP64", "data": [0.25, 0.75]}],
}


class Logger:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    def post(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict]:
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "stats", timeout=10) as r:
            return json.loads(r.read())


def _start(store: str, spool: Path, *extra: str) -> Logger:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wolt_jupyter.serving.eventlog", "--host", "127.0.0.1", "--port", "0",
         "--store-url", store, "--spool-dir", str(spool), *extra],
        stdout=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    host_port = line.split()[2].rstrip(",")
    return Logger(proc, f"http://{host_port}/")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'responses.db'}"


@pytest.fixture
def logger(store: str, tmp_path: Path) -> Iterator[Logger]:
    lg = _start(store, tmp_path / "spool", "--pair-timeout", "1")
    yield lg
    lg.proc.send_signal(signal.SIGTERM)
    lg.proc.wait(timeout=30)


def kserve(kind: str, ce_id: str, at: str, endpoint: str = "default") -> dict[str, str]:
    """The headers KServe's worker.go sets (cloudevents sdk-go, binary encoding)."""
    return {
        "Ce-Id": ce_id, "Ce-Specversion": "1.0", "Ce-Type": f"org.kubeflow.serving.inference.{kind}",
        "Ce-Source": "http://localhost:9081/", "Ce-Time": at, "Ce-Recordedtime": at,
        "Ce-Inferenceservicename": "eta", "Ce-Namespace": "ml", "Ce-Component": "predictor",
        "Ce-Endpoint": endpoint, "Ce-Metadata": "{}",
    }  # fmt: skip


def seldon(kind: str, ce_id: str, at: str, predictor: str) -> dict[str, str]:
    """The headers Seldon's executor worker.go sets."""
    return {
        "Ce-Id": ce_id, "Ce-Specversion": "1.0", "Ce-Type": f"io.seldon.serving.inference.{kind}",
        "Ce-Source": "http://eta-main:8000/", "Ce-Time": at, "Ce-Modelid": "model", "Ce-Requestid": ce_id,
        "Ce-Inferenceservicename": "eta", "Ce-Namespace": "ml", "Ce-Endpoint": predictor, "Ce-Protocol": "v2",
    }  # fmt: skip


def rows(store: str, want: int = 0):
    """The log as the notebook reads it; with ``want``, once that many requests are in the database (a 2xx
    means in the spool; the writer moves spooled rows to the database every 0.2 s)."""
    deadline = time.monotonic() + 20
    while True:
        df = wolt_jupyter.read_responses("eta", url=store, revision="all")
        if (0 if df.empty else df["id"].nunique()) >= want or time.monotonic() > deadline:
            return df
        time.sleep(0.1)


def test_a_kserve_pair_becomes_the_local_runtimes_row(logger: Logger, store: str) -> None:
    ce_id = str(uuid.uuid4())
    assert logger.post(kserve("request", ce_id, "2026-12-08T03:00:00.100000000Z", "canary"), REQUEST) == (
        202, {"status": "waiting for its other half"})  # fmt: skip
    status, doc = logger.post(kserve("response", ce_id, "2026-12-08T03:00:00.125000000Z", "canary"), RESPONSE)
    assert (status, doc) == (200, {"status": "logged"})
    df = rows(store, 1)
    assert len(df) == 2  # one frame row per input row, as for the local runtime's records
    assert set(df["id"]) == {ce_id} and set(df["variant"]) == {"canary"} and set(df["model_version"]) == {"7"}
    assert df["latency_ms"].tolist() == pytest.approx([25.0, 25.0], abs=0.01)
    assert df["status"].tolist() == [200, 200]
    assert df["output.predict"].tolist() == [0.25, 0.75]
    assert [list(x) for x in df["input.x"]] == [[1, 2, 3], [4, 5, 6]]
    assert logger.stats()["written"] == 1


def test_a_seldon_pair_in_either_order(logger: Logger, store: str) -> None:
    ce_id = str(uuid.uuid4())
    # the response may arrive first: the executor's workers send concurrently
    assert (
        logger.post(seldon("response", ce_id, "2026-12-08T03:00:01.050Z", "challenger"), RESPONSE)[0] == 202
    )
    assert logger.post(seldon("request", ce_id, "2026-12-08T03:00:01.000Z", "challenger"), REQUEST)[0] == 200
    feedback = seldon("request", ce_id, "2026-12-08T03:00:02Z", "challenger") | {
        "Ce-Type": "io.seldon.serving.feedback"
    }
    assert logger.post(feedback, {})[0] == 202  # accepted, not a row
    df = rows(store, 1)
    assert set(df["id"]) == {ce_id} and len(df) == 2
    assert set(df["variant"]) == {"challenger"} and set(df["model_name"]) == {"eta"}
    assert df["latency_ms"].tolist() == pytest.approx([50.0, 50.0], abs=0.01)
    assert logger.stats()["ignored"] == 1


def test_unpaired_halves_are_counted_when_they_expire(logger: Logger, store: str) -> None:
    assert logger.post(kserve("request", "lonely", "2026-12-08T03:00:00Z"), REQUEST)[0] == 202
    assert logger.stats()["waiting"] == 1
    time.sleep(1.2)  # past --pair-timeout 1
    assert logger.post({"Ce-Type": "x"}, {})[0] == 400  # any event runs the expiry; this one is refused
    s = logger.stats()
    assert (s["waiting"], s["unpaired_expired"], s["refused"]) == (0, 1, 1)
    # its late other half is now unpaired too: no row from half a pair
    assert logger.post(kserve("response", "lonely", "2026-12-08T03:00:00Z"), RESPONSE)[0] == 202
    time.sleep(0.5)  # past the writer's flush interval: a row would be in the database by now
    assert rows(store).empty


def test_an_acknowledged_pair_survives_a_kill(store: str, tmp_path: Path) -> None:
    """2xx means the row is in the spool: with the database down (a PostgreSQL port nobody listens on) every
    pair is still acknowledged; a SIGKILL then loses nothing, and the next start replays the spool into the
    store it writes to."""
    import socket

    with socket.socket() as s:  # a free port, closed again: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spool = tmp_path / "spool"
    lg = _start(f"postgresql+psycopg://wolt@127.0.0.1:{port}/responses", spool)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for ce_id in ids:
        assert lg.post(kserve("request", ce_id, "2026-12-08T03:00:00Z"), REQUEST)[0] == 202
        assert lg.post(kserve("response", ce_id, "2026-12-08T03:00:00.010Z"), RESPONSE)[0] == 200
    assert lg.stats()["written"] == len(ids)
    lg.proc.kill()
    lg.proc.wait(timeout=10)
    again = _start(store, spool)
    try:
        assert sorted(set(rows(store, len(ids))["id"])) == sorted(ids)
    finally:
        again.proc.send_signal(signal.SIGTERM)
        again.proc.wait(timeout=30)


def test_events_of_another_deployment_are_refused(store: str, tmp_path: Path) -> None:
    lg = _start(store, tmp_path / "spool", "--deployment", "other")
    try:
        status, doc = lg.post(kserve("request", "a", "2026-12-08T03:00:00Z"), REQUEST)
        assert status == 400 and "this logger writes 'other'" in doc["error"]
    finally:
        lg.proc.send_signal(signal.SIGTERM)
        lg.proc.wait(timeout=30)
