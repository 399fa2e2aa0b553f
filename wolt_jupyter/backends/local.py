"""The ``local`` target: the serving runtime as a detached process on 127.0.0.1 that outlives the kernel.

Its files live beside the deployment's revisions (``<home>/deployments/<name>/``): the spec it runs, its log,
and the admin token the runtime creates. The record keeps pid and port, so any kernel can find, change or
stop it. A pid is trusted only if that process is still our runtime for this deployment (pids are reused).

Traffic changes, promotion and rollback between variants the process has loaded are applied hot through the
runtime's admin endpoint (no restart, no failed request); a change of models restarts the process on the
same port, so the URL stays.

All local deployments are listed in a Prometheus ``file_sd`` targets file (``<home>/prometheus/targets.json``)
so one Prometheus scrape job follows them as they come and go.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wolt_jupyter.backends.base import Backend, Deployment, Progress
from wolt_jupyter.config import Settings
from wolt_jupyter.errors import NotFound, WoltError
from wolt_jupyter.private import open_private
from wolt_jupyter.revisions import RevisionStore, write_atomic
from wolt_jupyter.spec import DeploymentSpec

HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
TARGETS_FILE = Path("prometheus") / "targets.json"


class DeployFailed(WoltError):
    """The runtime did not come up; the message carries the reason and the tail of its log."""


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _is_our_runtime(pid: int, spec_path: Path) -> bool:
    """True when ``pid`` is alive and is the runtime started for ``spec_path`` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or someone else's process
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"wolt_jupyter.serving" in args and str(spec_path).encode() in args
    return True  # no /proc (macOS): trust the pid and let the HTTP check decide


def _http(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None


# runtimes started by this process, by pid: their exit codes can be read and they leave no zombie
_STARTED: dict[int, subprocess.Popen] = {}


class LocalBackend(Backend):
    target = "local"

    def __init__(self, settings: Settings, namespace: str | None = None) -> None:
        self.settings = settings
        self.store = RevisionStore(settings.home)

    # -- files ----------------------------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.store.dir(name)

    def _spec_path(self, name: str) -> Path:
        return self._dir(name) / "spec.yaml"

    def _log_path(self, name: str) -> Path:
        return self._dir(name) / "runtime.log"

    def _token(self, name: str) -> str | None:
        from wolt_jupyter.serving.admin import read_token

        try:
            return read_token(self.settings.home, name)
        except FileNotFoundError:  # the runtime creates it when it starts
            return None

    def _command(self, spec_path: Path, port: int) -> list[str]:
        return [
            sys.executable, "-m", "wolt_jupyter.serving",
            "--spec", str(spec_path),
            "--host", HOST, "--port", str(port),
            "--state-dir", str(self.settings.home),
        ]  # fmt: skip

    def render(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        port = self._extra(spec.name).get("port", "<free port>")
        return [
            {
                "kind": "LocalRuntime",
                "name": spec.name,
                "command": self._command(self._spec_path(spec.name), port),  # type: ignore[arg-type]
                "url": f"http://{HOST}:{port}",
                "spec": spec.to_dict(),
            }
        ]

    def diff(self, spec: DeploymentSpec, manifests: list[dict[str, Any]]) -> str | None:
        """What would change in the spec the runtime runs (unified diff of the YAML)."""
        import difflib

        path = self._spec_path(spec.name)
        if not path.exists():
            return None
        lines = difflib.unified_diff(
            path.read_text().splitlines(keepends=True),
            spec.to_yaml().splitlines(keepends=True),
            fromfile="running",
            tofile="proposed",
        )
        return "".join(lines)

    def _extra(self, name: str) -> dict[str, Any]:
        return self.store.record(name).extra if self.store.exists(name) else {}

    # -- the process ----------------------------------------------------------------------------------------
    def _running(self, name: str) -> tuple[int, int] | None:
        extra = self._extra(name)
        pid, port = extra.get("pid"), extra.get("port")
        if pid and port and _is_our_runtime(int(pid), self._spec_path(name)):
            return int(pid), int(port)
        return None

    def _start(self, spec: DeploymentSpec, port: int) -> int:
        spec_path = self._spec_path(spec.name)
        write_atomic(spec_path, spec.to_yaml())
        log = self._log_path(spec.name)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.settings.tracking_uri,
            "WOLT_JUPYTER_HOME": str(self.settings.home),
        }
        if self.settings.registry_uri != self.settings.tracking_uri:
            env["MLFLOW_REGISTRY_URI"] = self.settings.registry_uri
        with open_private(log) as out:  # 0600: the log may quote request data
            out.write(
                f"\n--- starting revision for {spec.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode()
            )
            out.flush()
            proc = subprocess.Popen(  # detached: its own session, so it outlives the kernel
                self._command(spec_path, port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self._dir(spec.name),
            )
        _STARTED[proc.pid] = proc
        return proc.pid

    def _stop(self, pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (the runtime flushes its response log), then SIGKILL if it does not go."""
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = _STARTED.get(pid)
            if proc is not None and proc.poll() is not None:
                return
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def _exit_code(self, pid: int) -> int | None:
        proc = _STARTED.get(pid)
        if proc is not None:
            return proc.poll()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -1
        return None

    def _wait_ready(
        self, spec: DeploymentSpec, pid: int, port: int, progress: Progress | None, timeout: float
    ) -> None:
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + timeout
        said: set[str] = set()
        say = progress or (lambda _msg: None)
        say(f"starting {spec.name} on {base} (pid {pid})")
        while time.monotonic() < deadline:
            code = self._exit_code(pid)
            if code is not None:
                raise DeployFailed(self._failure(spec.name, f"the runtime exited with status {code}"))
            try:
                status, _ = _http("GET", f"{base}/v2/health/ready", timeout=2)
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                say(f"{spec.name} ready: {', '.join(v.name for v in spec.variants)}")
                return
            for v in spec.variants:
                if v.name in said:
                    continue
                try:
                    vstatus, _ = _http(
                        "GET", f"{base}/v2/models/{spec.name}/versions/{v.name}/ready", timeout=2
                    )
                except OSError:
                    break
                if vstatus == 200:
                    said.add(v.name)
                    say(f"variant {v.name} loaded ({v.model})")
            time.sleep(0.2)
        raise DeployFailed(self._failure(spec.name, f"not ready after {timeout:.0f} s"))

    def _failure(self, name: str, reason: str) -> str:
        tail = log_tail(self._log_path(name))
        return f"deployment {name!r} failed to start: {reason}\n--- {self._log_path(name)} (last lines) ---\n{tail}"

    def _hot_apply(self, spec: DeploymentSpec, port: int) -> bool:
        """Swap the routing of the running process to ``spec`` if it has every model loaded; False otherwise."""
        token = self._token(spec.name)
        if token is None:
            return False
        try:
            status, _ = _http(
                "POST", f"http://{HOST}:{port}/admin/spec", {"spec": spec.to_dict()}, token=token
            )
        except OSError:
            return False
        if status == 200:
            write_atomic(self._spec_path(spec.name), spec.to_yaml())
            return True
        return False

    # -- Backend --------------------------------------------------------------------------------------------
    def apply(
        self, spec: DeploymentSpec, revision: int, *, wait: bool = True, progress: Progress | None = None
    ) -> Deployment:
        rec = self.store.record(spec.name)
        running = self._running(spec.name)
        if running and self._hot_apply(spec, running[1]):
            if progress:
                progress(f"{spec.name}: routing changed in place (revision {revision})")
            return self.status(spec.name)
        port = int(rec.extra.get("port") or free_port())
        if running:
            if progress:
                progress(f"{spec.name}: models changed, restarting on port {port}")
            self._stop(running[0])
        pid = self._start(spec, port)
        rec.extra = {
            **rec.extra,
            "pid": pid,
            "port": port,
            "url": f"http://{HOST}:{port}",
            "started": time.time(),
        }
        self.store.save_record(rec)
        self.write_targets()
        if wait:
            try:
                self._wait_ready(spec, pid, port, progress, START_TIMEOUT_S)
            except DeployFailed:
                self._stop(pid, timeout=5)  # a half-started runtime must not linger
                self.write_targets(exclude={spec.name})
                raise
        return self.status(spec.name)

    def status(self, name: str) -> Deployment:
        rec = self.store.record(name)
        spec = self.store.spec(name) if self.store.revisions(name) else None
        url = rec.extra.get("url")
        running = self._running(name)
        message = None
        if running is None:
            status = "stopped"
            if rec.extra.get("pid"):
                message = "the runtime process is gone; %wolt_deploy again to restart it"
        else:
            try:
                code, doc = _http("GET", f"{url}/v2/health/ready", timeout=2)
                status = (
                    "ready"
                    if code == 200
                    else ("failed" if (doc or {}).get("error", "").startswith("cannot") else "starting")
                )
                if code != 200:
                    message = (doc or {}).get("error")
            except OSError:
                status = "starting"
        return Deployment(
            name=name,
            target=self.target,
            status=status,
            url=url,
            revision=rec.revision,
            variants=Deployment.describe_variants(spec) if spec else [],
            message=message,
        )

    def delete(self, name: str) -> None:
        try:
            running = self._running(name)
        except NotFound:
            return
        if running:
            self._stop(running[0])
        if self.store.exists(name):
            rec = self.store.record(name)
            rec.extra = {k: v for k, v in rec.extra.items() if k not in ("pid",)}
            self.store.save_record(rec)
        self.write_targets(exclude={name})

    def flush(self, name: str, timeout: float = 30.0) -> bool:
        """Ask the running runtime to finish its shadow work and write its response log; False if not running."""
        running = self._running(name)
        token = self._token(name)
        if not running or token is None:
            return False
        try:
            status, _ = _http(
                "POST", f"http://{HOST}:{running[1]}/admin/flush", {}, token=token, timeout=timeout
            )
        except OSError:
            return False
        return status == 200

    # -- Prometheus -----------------------------------------------------------------------------------------
    def write_targets(self, exclude: set[str] | None = None) -> Path:
        """Rewrite the ``file_sd`` targets file from the records of all running local deployments."""
        groups = []
        for name in self.store.names():
            if exclude and name in exclude:
                continue
            rec = self.store.record(name)
            if rec.target != self.target or not rec.extra.get("port") or not self._running(name):
                continue
            groups.append(
                {
                    "targets": [f"{HOST}:{rec.extra['port']}"],
                    "labels": {"deployment_name": name, "wolt_target": "local"},
                }
            )
        path = self.settings.home / TARGETS_FILE
        write_atomic(path, json.dumps(groups, indent=2))
        return path
