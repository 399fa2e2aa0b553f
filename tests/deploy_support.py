"""Helpers of the tests that deploy (backends/, updater/): the record's pids, the processes serving a deployment, and a load generator
that keeps real clients busy while a deployment is changed or killed."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import FEATURES


def pid_of(home: Path, name: str) -> int:
    """The recorded (supervisor) pid."""
    return json.loads((home / "deployments" / name / "deployment.json").read_text())["extra"]["pid"]


def supervisor_state(home: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((home / "deployments" / name / "supervisor.json").read_text())
    except (OSError, ValueError):
        return {}


def runtime_pid(home: Path, name: str, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = supervisor_state(home, name).get("runtime_pid")
        if pid:
            return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no runtime pid for {name} after {timeout}s")


def processes_serving(home: Path, name: str) -> list[tuple[int, str]]:
    """(pid, module) of every live process started for this deployment's spec file: supervisors and runtimes."""
    spec = str(home / "deployments" / name / "spec.yaml").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if spec in args and state != "Z":
            module = next((a.decode() for a in args if a.startswith(b"wolt_jupyter.serving")), "?")
            found.append((int(proc.name), module))
    return found


def is_ready(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass
class Outcome:
    id: str
    status: int | None  # None: no HTTP answer (connection refused or reset)
    variant: str | None = None
    value: float | None = None
    error: str | None = None
    t: float = field(default_factory=time.monotonic)


class Load:
    """``concurrency`` clients, each on its own keep-alive connection, sending 1-row V2 requests with fresh
    ids until stopped (or ``limit`` requests each); every outcome is kept. Bounded: it stops by itself."""

    def __init__(self, url: str, name: str, concurrency: int = 4, limit: int = 20_000) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.name = name
        self.concurrency = concurrency
        self.limit = limit
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(concurrency)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self.outcomes

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def _client(self, i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        path = f"/v2/models/{self.name}/infer"
        for k in range(self.limit):
            if self._stop.is_set():
                break
            rid = f"c{i}-{k}-{uuid.uuid4().hex[:8]}"
            x = [1.0 + 0.1 * (k % 7), 0.2, -0.3]  # sums to 0.9..1.5: v1 answers ~1, v2 ~100
            body = json.dumps(
                {
                    "id": rid,
                    "inputs": [
                        {"name": f, "shape": [1], "datatype": "FP64", "data": [v]}
                        for f, v in zip(FEATURES, x, strict=True)
                    ],
                }
            )
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("POST", path, body, {"content-type": "application/json"})
                resp = conn.getresponse()
                doc = json.loads(resp.read() or b"null")
            except (OSError, http.client.HTTPException) as exc:
                self.outcomes.append(Outcome(rid, None, error=f"{type(exc).__name__}: {exc}"))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)
                continue
            if resp.status == 200:
                out = doc["outputs"][0]["data"][0]
                self.outcomes.append(Outcome(rid, 200, doc["parameters"]["variant"], float(out)))
            else:
                self.outcomes.append(Outcome(rid, resp.status, error=str(doc)))
        if conn is not None:
            conn.close()


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != 200]


# A pyfunc that answers like a champion returning the sum of the features on every row offline data has, but
# raises on a share of live traffic: `Load` sends f0 = 1.0 + 0.1 * (k % 7) and f1 = 0.2, so 1 request in 7
# fails. Logged as code (mlflow.models.set_model), so a runtime or a pod loads it from its artifacts.
FAILS_LIVE = """
import mlflow.pyfunc
import numpy as np


class FailsLive(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        x = model_input[["f0", "f1", "f2"]].to_numpy(dtype=float)
        if ((x[:, 0] > 1.55) & (np.abs(x[:, 1] - 0.2) < 1e-9)).any():
            raise RuntimeError("feature f0 out of the range this version supports")
        return x.sum(axis=1)


mlflow.models.set_model(FailsLive())
"""
