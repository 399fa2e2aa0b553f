"""Helpers of the serving tests: registered-model store, runtime processes, HTTP calls, specs.

A module with its own name (not conftest) so test files can import it whatever other conftest.py files the
session loads.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

FEATURES = ["f0", "f1", "f2", "f3"]
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Store:
    uri: str
    root: Path
    lr_v1: Any  # the fitted sklearn models, to compute expected answers in the tests
    lr_v2: Any
    pipe: Any  # a Pipeline whose ColumnTransformer selects columns by name


@dataclass
class Runtime:
    url: str
    name: str
    state_dir: Path
    proc: subprocess.Popen
    log: Path
    grpc: str | None = None  # host:port when started with --grpc-port

    @property
    def token(self) -> str:
        return (self.state_dir / "deployments" / self.name / "admin.token").read_text().strip()

    @property
    def feedback_token(self) -> str:
        return (self.state_dir / "deployments" / self.name / "feedback.token").read_text().strip()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return request(self.url + path, headers=headers)

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.url + path, data, headers)

    def infer(
        self, doc: Any, variant: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        path = f"/v2/models/{self.name}" + (f"/versions/{variant}" if variant else "") + "/infer"
        status, hdrs, body = self.post(path, doc, headers)
        return status, (json.loads(body) if body else None), hdrs

    def admin(self, action: str, body: Any = None, token: str | None = "default") -> tuple[int, Any]:
        headers = (
            {}
            if token is None
            else {"Authorization": f"Bearer {self.token if token == 'default' else token}"}
        )
        if body is None and action == "routing":
            status, _, raw = self.get("/admin/routing", headers)
        else:
            status, _, raw = self.post(f"/admin/{action}", body or {}, headers)
        return status, json.loads(raw)

    def metrics(self) -> str:
        return self.get("/metrics")[2].decode()


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        url, data=data, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class Client:
    """One keep-alive connection (as load balancers and V2 clients use)."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        u = urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.headers: dict[str, str] = {}  # of the last answer, lower-cased

    def infer(
        self, name: str, doc: dict, headers: dict | None = None, version: str | None = None
    ) -> tuple[int, dict, str | None]:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
        self.conn.request("POST", path, json.dumps(doc), headers or {})
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, body, resp.getheader("x-wolt-variant")

    def close(self) -> None:
        self.conn.close()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Answer:
    status: int
    variant: str | None  # x-wolt-variant: who answered
    retried_from: str | None  # x-wolt-retried-from: the challenger the champion answered for
    seconds: float


def under_load(rt: Runtime, seconds: float, clients: int, doc: dict) -> list[Answer]:
    """``clients`` keep-alive connections sending ``doc`` back to back for ``seconds``: every answer."""
    stop = threading.Event()
    answers: list[Answer] = []
    lock = threading.Lock()

    def client() -> None:
        c = Client(rt.url, timeout=60)
        mine = []
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                status, _, variant = c.infer(rt.name, doc)
                mine.append(
                    Answer(status, variant, c.headers.get("x-wolt-retried-from"), time.perf_counter() - t0)
                )
        finally:
            c.close()
            with lock:
                answers.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(90)
    return answers


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def spawn_runtime(
    store: Store,
    spec: dict[str, Any],
    tmp: Path,
    extra_args: list[str] = (),
    env_extra: dict[str, str] | None = None,
) -> Runtime:
    """Start a runtime process (not waiting for it): ``wait_ready`` next. ``env_extra``: environment of this
    runtime only (e.g. ``WOLT_RESPONSE_STORE_URL``, as a pod reads it from its Secret)."""
    tmp.mkdir(parents=True, exist_ok=True)
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    state = tmp / "state"
    port = free_port()
    log = tmp / "runtime.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "WOLT_JUPYTER_HOME": str(state)}
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.pop("WOLT_RESPONSE_STORE_URL", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "wolt_jupyter.serving", "--spec", str(spec_path), "--port", str(port)]
    cmd += ["--state-dir", str(state), *extra_args]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    grpc = f"127.0.0.1:{cmd[cmd.index('--grpc-port') + 1]}" if "--grpc-port" in cmd else None
    return Runtime(f"http://127.0.0.1:{port}", spec["name"], state, proc, log, grpc)


def wait_ready(rt: Runtime, timeout: float = 90) -> Runtime:
    proc, log = rt.proc, rt.log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"runtime exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if rt.get("/v2/health/ready")[0] == 200:
                return rt
        except OSError:
            pass
        time.sleep(0.1)
    stop_runtime(rt)
    pytest.fail(f"runtime not ready in {timeout}s:\n{log.read_text()[-4000:]}")


def stop_runtime(rt: Runtime, timeout: float = 30) -> int:
    if rt.proc.poll() is None:
        rt.proc.send_signal(signal.SIGTERM)
        try:
            rt.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rt.proc.kill()
            rt.proc.wait(5)
    return rt.proc.returncode


def lr_spec(name: str, **extra: Any) -> dict[str, Any]:
    """main = wolt-lr v1 (90), challenger = v2 (10), a v2 shadow, and 0-traffic variants for direct calls."""
    spec = {
        "name": name,
        "variants": [
            {"name": "main", "model": "models:/wolt-lr/1", "traffic": 90},
            {"name": "challenger", "model": "models:/wolt-lr/2", "traffic": 10},
            {"name": "broken", "model": "models:/wolt-raises/1", "traffic": 0},
            {"name": "strings", "model": "models:/wolt-strings/1", "traffic": 0},
            {"name": "pipe", "model": "models:/wolt-pipe/1", "traffic": 0},
            {"name": "tensor", "model": "models:/wolt-tensor/1", "traffic": 0},
            {"name": "nosig", "model": "models:/wolt-nosig/1", "traffic": 0},
            {"name": "shadow", "model": "models:/wolt-lr/2", "shadow": True},
        ],
        "logging": {"responses": True, "sample": 1.0},
    }
    spec.update(extra)
    return spec


def row_doc(rows: Any, **extra: Any) -> dict[str, Any]:
    """A V2 request with one 2-D FP64 tensor of the four features."""
    import numpy as np

    arr = np.asarray(rows, dtype=float).reshape(-1, 4)
    return {
        "inputs": [{"name": "x", "shape": list(arr.shape), "datatype": "FP64", "data": arr.tolist()}],
        **extra,
    }


STICKY = {
    "name": "sticky-test",
    "variants": [
        {"name": "a", "model": "models:/wolt-lr/1", "traffic": 50},
        {"name": "b", "model": "models:/wolt-lr/2", "traffic": 50},
        {"name": "slow", "model": "models:/wolt-sleepy/1", "shadow": True},
        {"name": "failing", "model": "models:/wolt-raises/1", "shadow": True},
    ],
    "routing": {"sticky_key": "user_id"},
    "logging": {"responses": False},
}

ADMIN = {
    "name": "admin-test",
    "variants": [
        {"name": "a", "model": "models:/wolt-lr/1", "traffic": 100},
        {"name": "b", "model": "models:/wolt-lr/2", "traffic": 0},
        {"name": "shadow", "model": "models:/wolt-lr/2", "shadow": True},
    ],
    "logging": {"responses": False},
}

DROPS = {
    "name": "drops-test",
    "variants": [
        {"name": "main", "model": "models:/wolt-lr/1", "traffic": 100},
        {"name": "slow", "model": "models:/wolt-sleepy/1", "shadow": True},
    ],
    "logging": {"responses": False},
    "_args": ["--shadow-queue-size", "2", "--idle-timeout", "1"],
}
