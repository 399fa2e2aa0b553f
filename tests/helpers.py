"""Helpers shared by all test folders (``tests`` is on ``sys.path`` through pytest's ``pythonpath``)."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wolt_jupyter.backends.local import free_port  # re-exported for the tests
from wolt_jupyter.revisions import DeploymentRecord, RevisionStore
from wolt_jupyter.spec import DeploymentSpec

# settings a developer's own environment might carry into the tests
ISOLATED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_TOKEN",
    "WOLT_DEFAULT_TARGET",
    "WOLT_PROMETHEUS_URL",
    "WOLT_RESPONSE_STORE_URL",
    "WOLT_DEFAULT_EXPERIMENT",
    "WOLT_NAMESPACE",
    "KUBECONFIG",
    "WOLT_KUBE_CONTEXT",
    "WOLT_RUNTIME_IMAGE",
    "WOLT_CLUSTER_TRACKING_URI",
    "WOLT_POD_MONITOR",
    "WOLT_SERVICE_ACCOUNT",
    "WOLT_REQUEST_LOGGER_URL",
    "WOLT_UNREACHABLE_ARTIFACTS",
)


def stop_server(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a server started in its own session (SIGTERM to its group, SIGKILL after ``timeout``) and reap it."""
    from wolt_jupyter.processes import stop_process_group

    stop_process_group(proc.pid, timeout)
    proc.wait(5)


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"{url} did not become ready in {timeout}s\n{tail}")


@contextlib.contextmanager
def running_mlflow_server(
    root: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    """A real `mlflow server` on ``host`` (SQL backend under ``root``, proxied artifacts, one worker, no job
    runner), with ``env`` added to its environment; yields its URL. ``host`` other than loopback only for the
    test cluster's bridge address, which its pods reach."""
    import os
    import sys

    venv_bin = Path(sys.executable).parent
    port = free_port()
    log = root / "server.log"
    full = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    full["PATH"] = f"{venv_bin}{os.pathsep}{full.get('PATH', '')}"  # it runs uvicorn from the venv
    cmd = [
        str(venv_bin / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full, start_new_session=True)
    try:
        wait_http(f"http://{host}:{port}/health", 60, proc, log)
        yield f"http://{host}:{port}"
    finally:
        stop_server(proc, 10)


def unique(prefix: str) -> str:
    """A name no other test uses (the MLflow server is shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def shown(capsys: pytest.CaptureFixture[str]) -> str:
    """What a notebook user saw: IPython prints usage errors to stderr and tracebacks to stdout."""
    captured = capsys.readouterr()
    return captured.out + captured.err


FEATURES = ["f0", "f1", "f2"]


def register_eta_models(scales: tuple[float, ...] = (1.0, 100.0)) -> dict[str, str]:
    """Registered versions of one regression model named ``eta`` that answer differently (version n answers
    the sum of the features times ``scales[n - 1]``: by default v2 = 100 × v1), ``champion`` on version 1,
    in whatever store the environment points at."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=FEATURES)
    for scale in scales:
        wolt_jupyter.register(
            LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X.head(3)
        )
    wolt_jupyter.registry.mlflow_client().set_registered_model_alias("eta", "champion", "1")
    versions = {f"v{n}": f"models:/eta/{n}" for n in range(1, len(scales) + 1)}
    return {"champion": "models:/eta@champion", **versions}


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that keeps every POST (headers, raw body, arrival time) and answers
    ``status`` — or the next of ``statuses`` while there are any — after ``delay`` seconds (a slow receiver:
    it has the message, the sender waits for the answer)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.got: list[dict] = []
        self.status = status
        self.statuses: list[int] = []
        self.delay = delay
        self.closing = threading.Event()  # ends every delay at close
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(
                    {"headers": dict(self.headers), "body": body, "path": self.path, "time": time.time()}
                )
                receiver.closing.wait(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.status
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/path-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self) -> list[dict]:
        import json

        return [json.loads(m["body"]) for m in self.got]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def strict_errors(manifest: dict) -> str | None:
    """What ``kubernetes-validate --strict`` (the release's OpenAPI schema; unknown fields are errors) finds
    wrong with ``manifest``: the first error as one line, or None when it is valid."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    try:
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    except ValidationError as err:
        return f"{manifest['kind']} {'.'.join(map(str, err.path))}: {err.message}"
    return None


def read_chunk(data: bytes, columns: list[str] | None = None):
    """A stored response-log chunk read with pyarrow alone (not the code under test): the writer's Arrow IPC
    file or a compacted Parquet file."""
    import pyarrow as pa

    data = bytes(data)
    if data[:6] == b"ARROW1":
        import pyarrow.ipc as ipc

        table = ipc.open_file(pa.BufferReader(data)).read_all()
        return table.select(columns) if columns is not None else table
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), columns=columns)


# -- revisions (issue 13): records as deploys leave them and a response log across a redeploy ---------------
def record_revisions(home: Path, name: str, models: list[dict[str, str]], current: int | None = None) -> None:
    """Revision records as deploys leave them: one pinned spec per revision (a variant named ``shadow`` is
    one), the record at ``current`` (default: the last one added)."""
    store = RevisionStore(home)
    added = []
    for variants in models:
        spec = DeploymentSpec.from_dict(
            {
                "name": name,
                "variants": [
                    {
                        "name": v,
                        "model": f"models:/{m}",
                        **({"shadow": True} if v == "shadow" else {"traffic": 100}),
                    }
                    for v, m in variants.items()
                ],
            }
        )
        added.append(store.add_revision(spec))
    store.save_record(DeploymentRecord(name, "local", revision=current or added[-1]))


def write_revised_log(url: str, now: float) -> dict[int, int]:
    """The response log at ``url`` of 'eta' over the last 5 minutes: revision 1 (main on m/1) 40 requests, then
    a redeploy — revision 2 (main on m/2, slower) 30 requests — and a traffic change, revision 3 (same
    models), 20 requests. Each main request has a shadow copy. Returns the live requests per revision."""
    from wolt_jupyter.responses.store import ensure_schema, insert_rows, make_engine

    plan = [(1, now - 280, 40, "1"), (2, now - 150, 30, "2"), (3, now - 60, 20, "2")]
    rows = []
    for revision, start, count, version in plan:
        for i in range(count):
            base = {
                "id": f"r{revision}-{i}",
                "time": start + 2 * i,
                "deployment": "eta",
                "model_name": "eta",
                "model_version": version,
                "inputs": '{"f0":[1.0]}',
                "outputs": f'{{"y":[{revision}.0]}}',
                "error": None,
                "revision": revision,
                "status": 200,
            }
            rows.append({**base, "variant": "main", "shadow": False, "latency_ms": 2.0 * revision})
            rows.append({**base, "time": base["time"] + 0.01, "variant": "shadow", "shadow": True,
                         "latency_ms": 1.0})  # fmt: skip
    engine = make_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        insert_rows(conn, rows[: 2 * 50])  # one chunk across the redeploy: its two revisions are decoded
        insert_rows(conn, rows[2 * 50 :])
    engine.dispose()
    return {revision: count for revision, _, count, _ in plan}


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` (tmpfs with ``size=``, e.g. "8m") mounted at ``mount`` (made if
    missing): writes past it fail with ENOSPC, as on a full disk. Unmounted afterwards. Needs root, as CI has."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a size-limited tmpfs (needs root, as CI has): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(path: Path, leave: int = 0) -> None:
    """Take every free byte of the file system under ``path`` (a file there) but ``leave`` (in 4 KiB pages)."""
    with path.open("wb", buffering=0) as f:
        for size in (1 << 20, 4096):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
        if leave:
            f.truncate(max(0, f.tell() - leave))
