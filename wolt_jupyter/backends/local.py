"""The ``local`` target: the serving runtime as a detached process on 127.0.0.1 that outlives the kernel.

Its files live beside the deployment's revisions (``<home>/deployments/<name>/``): the spec it runs, its log,
and the admin token the runtime creates. The record keeps pid and port, so any kernel can find, change or
stop it. A pid is trusted only if that process is still our runtime for this deployment (pids are reused).

The recorded process is a supervisor (:mod:`wolt_jupyter.serving.supervisor`) that restarts the runtime when
it crashes, on the same port with the same spec file. Traffic changes, promotion and rollback between
variants the process has loaded are applied hot through the runtime's admin endpoint; a change of models is a
blue-green switch inside the running process (``/admin/stage``: the new models load beside the serving ones,
must answer the last request served, then take traffic in one step). Neither restarts anything or fails a
request, and a revision that fails to load leaves the serving one untouched. Only a deployment that is not
serving (stopped, crash-looping) is (re)started cold.

All local deployments are listed in a Prometheus ``file_sd`` targets file (``<home>/prometheus/targets.json``)
so one Prometheus scrape job follows them as they come and go.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from wolt_jupyter.backends.base import Backend, Deployment, Progress
from wolt_jupyter.config import Settings
from wolt_jupyter.errors import DeployFailed, NotFound, one_line
from wolt_jupyter.private import open_private, private_dir
from wolt_jupyter.revisions import RevisionStore, write_atomic
from wolt_jupyter.serving.tally import read_tally, tally_path
from wolt_jupyter.spec import DeploymentSpec

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
TARGETS_FILE = Path("prometheus") / "targets.json"


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _other_free_port(taken: int) -> int:
    """A free port that is not ``taken`` (the REST port, chosen but not bound yet)."""
    while True:
        port = free_port()
        if port != taken:
            return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the runtime binds: TIME_WAIT is fine
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _is_our_runtime(pid: int, spec_path: Path) -> bool:
    """True when ``pid`` is alive and is the supervisor (or, before supervision, the runtime) started for
    ``spec_path`` — not a reused pid."""
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
        ours = b"wolt_jupyter.serving.supervisor" in args or b"wolt_jupyter.serving" in args
        return ours and str(spec_path).encode() in args
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

    def _supervisor_state_path(self, name: str) -> Path:
        return self._dir(name) / "supervisor.json"

    def supervisor_state(self, name: str) -> dict[str, Any]:
        """What the supervisor last wrote: runtime pid, restarts, status, the last exits ({} if none)."""
        try:
            return json.loads(self._supervisor_state_path(name).read_text())
        except (OSError, ValueError):
            return {}

    def runtime_exits(self, name: str, since: float) -> list[str]:
        exits = self.supervisor_state(name).get("exits") or []
        return [f"runtime {e.get('reason')}" for e in exits if float(e.get("time") or 0) >= since]

    def _token(self, name: str) -> str | None:
        from wolt_jupyter.serving.admin import read_token

        try:
            return read_token(self.settings.home, name)
        except FileNotFoundError:  # the runtime creates it when it starts
            return None

    def _command(self, spec_path: Path, port: int, grpc_port: int | str) -> list[str]:
        return [
            sys.executable, "-m", "wolt_jupyter.serving",
            "--spec", str(spec_path),
            "--host", HOST, "--port", str(port), "--grpc-port", str(grpc_port),
            "--state-dir", str(self.settings.home),
        ]  # fmt: skip

    def render(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        extra = self._extra(spec.name)
        port = extra.get("port", "<free port>")
        grpc_port = extra.get("grpc_port", "<free port>")
        return [
            {
                "kind": "LocalRuntime",
                "name": spec.name,
                "command": self._command(self._spec_path(spec.name), port, grpc_port),
                "url": f"http://{HOST}:{port}",
                "grpc_url": f"{HOST}:{grpc_port}",
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
        """(the process to stop, the port) while ``name`` runs: the recorded supervisor, else the one that
        adopted the runtime after it died, else (for the moment in between) the runtime itself."""
        extra = self._extra(name)
        pid, port = extra.get("pid"), extra.get("port")
        if not (pid and port):
            return None
        sup = self.supervisor_state(name)
        for candidate in (pid, sup.get("supervisor_pid"), sup.get("runtime_pid")):
            if candidate and _is_our_runtime(int(candidate), self._spec_path(name)):
                return int(candidate), int(port)
        return None

    def _supervised(self, name: str, spec_path: Path, port: int, grpc_port: int) -> list[str]:
        return [
            sys.executable, "-m", "wolt_jupyter.serving.supervisor",
            "--state", str(self._supervisor_state_path(name)),
            "--log", str(self._log_path(name)),
            "--", *self._command(spec_path, port, grpc_port),
        ]  # fmt: skip

    def _servers(self, name: str, recorded: bool) -> tuple[str, str]:
        """The tracking and registry URIs a runtime of ``name`` starts with: this process's settings for a
        deploy; for a restart (``up``) the ones the record kept — a shell with other settings does not move a
        deployment to another server (it is said once, in the log)."""
        extra = self._extra(name) if recorded else {}
        tracking = str(extra.get("tracking_uri") or self.settings.tracking_uri)
        registry = str(extra.get("registry_uri") or self.settings.registry_uri)
        if recorded and tracking != self.settings.tracking_uri:
            from wolt_jupyter.config import mask_url

            log.info("%s restarts with the tracking server it was deployed with, %s (this process has %s)",
                     name, mask_url(tracking), mask_url(self.settings.tracking_uri))  # fmt: skip
        return tracking, registry

    def _start(self, spec: DeploymentSpec, port: int, grpc_port: int, servers: tuple[str, str]) -> int:
        """Start the supervisor of ``spec`` with the (tracking, registry) ``servers``; its pid."""
        spec_path = self._spec_path(spec.name)
        write_atomic(spec_path, spec.to_yaml(), mode=0o600)
        self._supervisor_state_path(spec.name).unlink(missing_ok=True)
        log = self._log_path(spec.name)
        tracking, registry = servers
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "WOLT_JUPYTER_HOME": str(self.settings.home)}
        env.pop("MLFLOW_REGISTRY_URI", None)
        if registry != tracking:
            env["MLFLOW_REGISTRY_URI"] = registry
        store = self.store.response_store(spec.name)
        if store:  # the store the record names, whatever this shell's settings say (`up` from a new shell)
            env["WOLT_RESPONSE_STORE_URL"] = store
        with open_private(log) as out:  # 0600: the log may quote request data
            out.write(
                f"\n--- starting revision for {spec.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode()
            )
            out.flush()
            proc = subprocess.Popen(  # detached: its own session, so it outlives the kernel
                self._supervised(spec.name, spec_path, port, grpc_port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self._dir(spec.name),
            )
        _STARTED[proc.pid] = proc
        # reaped as soon as it exits: a zombie of this (long-lived kernel) process would look alive to others
        threading.Thread(target=proc.wait, name=f"wolt-reap-{proc.pid}", daemon=True).start()
        return proc.pid

    def _stop(self, pid: int, timeout: float = STOP_TIMEOUT_S, name: str | None = None) -> None:
        """SIGTERM (the runtime flushes its response log), then SIGKILL if it does not go. With ``name``, a
        runtime its supervisor adopted (so not in the supervisor's process group) goes too."""
        from wolt_jupyter.processes import stop_process_group

        if name is None:
            stop_process_group(pid, timeout)
            return
        runtime = self.supervisor_state(name).get("runtime_pid")  # read before the supervisor clears it
        stop_process_group(pid, timeout)
        if runtime and runtime != pid and _is_our_runtime(int(runtime), self._spec_path(name)):
            stop_process_group(int(runtime), timeout)

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
                raise DeployFailed(self._failure(spec.name, f"the supervisor exited with status {code}"))
            exits = self.supervisor_state(spec.name).get("exits") or []
            if exits:  # a first start that dies is a failed deploy, not something to restart forever
                raise DeployFailed(self._failure(spec.name, f"the runtime {exits[-1]['reason']}"))
            try:
                status, _ = _http("GET", f"{base}/v2/health/ready", timeout=2)
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                say(f"{spec.name} ready: {', '.join(v.name for v in spec.variants)}")
                return
            # each variant's progress only for someone watching: every request takes the loading runtime's
            # interpreter lock away from the model loads for a moment
            for v in spec.variants if progress is not None else ():
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
            time.sleep(0.05)
        raise DeployFailed(self._failure(spec.name, f"not ready after {timeout:.0f} s"))

    def _failure(self, name: str, reason: str) -> str:
        tail = log_tail(self._log_path(name))
        return f"deployment {name!r} failed to start: {reason}\n--- {self._log_path(name)} (last lines) ---\n{tail}"

    def _stage(self, spec: DeploymentSpec, port: int, progress: Progress | None) -> float:
        """Blue-green inside the running runtime; the seconds it took. DeployFailed (the old revision still
        serving) when the new models do not load or cannot answer."""
        token = self._token(spec.name)
        say = progress or (lambda _msg: None)
        say(f"{spec.name}: loading the new revision beside the serving one")
        t0 = time.monotonic()
        self._prefetch(spec)  # the runtime then loads from its cache, without importing MLflow to download
        try:
            status, doc = _http(
                "POST",
                f"http://{HOST}:{port}/admin/stage",
                {"spec": spec.to_dict()},
                token=token,
                timeout=START_TIMEOUT_S,
            )
        except OSError as exc:
            raise DeployFailed(
                f"deployment {spec.name!r}: the runtime did not answer the redeploy: {exc}"
            ) from None
        if status != 200:
            reason = (doc or {}).get("error") if isinstance(doc, dict) else None
            tail = log_tail(self._log_path(spec.name), 10)
            raise DeployFailed(
                f"deployment {spec.name!r} keeps serving its current revision; the new one was refused: "
                f"{reason or f'HTTP {status}'}\n--- {self._log_path(spec.name)} (last lines) ---\n{tail}"
            )
        write_atomic(self._spec_path(spec.name), spec.to_yaml(), mode=0o600)  # what a restart serves
        took = time.monotonic() - t0
        say(f"{spec.name}: switched to the new revision ({took:.1f} s to load and check)")
        return took

    def _serving(self, name: str, port: int) -> bool:
        try:
            code, _ = _http("GET", f"http://{HOST}:{port}/v2/health/ready", timeout=2)
        except OSError:
            return False
        return code == 200

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
            write_atomic(self._spec_path(spec.name), spec.to_yaml(), mode=0o600)
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
        if running and self._serving(spec.name, running[1]):
            self._stage(spec, running[1], progress)
            return self.status(spec.name)
        port = int(rec.extra.get("port") or free_port())
        grpc_port = int(rec.extra.get("grpc_port") or _other_free_port(port))
        if running:  # started but not serving (crash-looping, still loading): nothing healthy to keep
            if progress:
                progress(f"{spec.name}: not serving; restarting on port {port}")
            self._stop(running[0], name=spec.name)
        return self._launch(rec, spec, port, grpc_port, progress, wait)

    def _launch(
        self,
        rec: Any,
        spec: DeploymentSpec,
        port: int,
        grpc_port: int,
        progress: Progress | None,
        wait: bool = True,
        restart: bool = False,
    ) -> Deployment:
        """Start the supervised runtime for ``spec`` on ``port`` (REST) and ``grpc_port`` (gRPC), record it,
        and (``wait``) until ready. ``restart``: with the servers the record kept (``up``)."""
        self._prefetch(spec)
        if "port" not in rec.extra:  # its first start: counts left by an earlier deployment of the name go
            tally_path(self.settings.home, spec.name).unlink(missing_ok=True)
        tracking, registry = self._servers(spec.name, restart)
        pid = self._start(spec, port, grpc_port, (tracking, registry))
        rec.extra = {
            **rec.extra,
            "tracking_uri": tracking,  # what `up` restarts it with (the record is 0600)
            "registry_uri": registry,
            "pid": pid,
            "port": port,
            "url": f"http://{HOST}:{port}",
            "grpc_port": grpc_port,
            "grpc_url": f"{HOST}:{grpc_port}",
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

    def _prefetch(self, spec: DeploymentSpec) -> None:
        """Put the models' files where the runtime looks first, before it starts: this process has the
        registry open already (it just pinned the versions and asked where their files are), the runtime would
        import MLflow (a second or more) to download them, and with them on disk its supervisor preloads what
        they need. Best effort: whatever is not here, the runtime downloads itself."""
        from wolt_jupyter._mlflow import configure
        from wolt_jupyter.serving.models import artifact_location, model_cache_dir, prefetch

        try:
            configure()
            for uri in dict.fromkeys(v.model for v in spec.variants):
                # the registry was asked where the version is when the variants were checked
                prefetch(uri, model_cache_dir(self.settings.home, spec.name), artifact_location(uri))
        except Exception as exc:  # the runtime's own download reports any real problem
            log.info("prefetching the models of %s: %s", spec.name, one_line(exc))

    def status(self, name: str) -> Deployment:
        rec = self.store.record(name)
        spec = self.store.spec(name) if self.store.revisions(name) else None
        url = rec.extra.get("url")
        running = self._running(name)
        message = None
        sup = self.supervisor_state(name) if running else {}
        if running is None:
            status = "stopped"
            if rec.extra.get("pid"):
                message = (
                    "the runtime process is gone; `wolt-jupyter up` or %wolt_deployments --restart starts it"
                )
        elif sup.get("status") == "failing":
            status = "failing"
            reasons = "; ".join(e["reason"] for e in sup.get("exits", [])[-3:])
            message = f"crashed {sup.get('crash_streak')} times in a row ({reasons})\n{log_tail(self._log_path(name), 8)}"
        else:
            try:
                code, doc = _http("GET", f"{url}/v2/health/ready", timeout=2)
                status = "ready" if code == 200 else ("restarting" if sup.get("restarts") else "starting")
                if code != 200:
                    message = (doc or {}).get("error")
            except OSError:
                status = (
                    "restarting" if sup.get("status") == "restarting" or sup.get("restarts") else "starting"
                )
        return Deployment(
            name=name,
            target=self.target,
            status=status,
            url=url,
            grpc_url=rec.extra.get("grpc_url"),
            revision=rec.revision,
            variants=Deployment.describe_variants(spec) if spec else [],
            message=message,
            restarts=sup.get("restarts", 0) if running else None,
        )

    def delete(self, name: str) -> dict[str, Any]:
        """Stop the runtime (it drains its shadows up to a bound and flushes its log); what it said on exit."""
        try:
            running = self._running(name)
        except NotFound:
            return {}
        if running:
            self._stop(running[0], name=name)
        if self.store.exists(name):
            rec = self.store.record(name)
            rec.extra = {k: v for k, v in rec.extra.items() if k not in ("pid",)}
            self.store.save_record(rec)
        self.write_targets(exclude={name})
        # every process the deployment ran in counted into it; a later deployment of the name starts at zero
        path = tally_path(self.settings.home, name)
        summary = read_tally(path)
        path.unlink(missing_ok=True)
        return summary

    def up(self, name: str, progress: Progress | None = None) -> Deployment:
        """Start a recorded deployment whose process is gone (after a reboot), on its port if still free."""
        if self._running(name):
            return self.status(name)
        rec = self.store.record(name)
        spec = self.store.spec(name)
        port = int(rec.extra.get("port") or 0)
        if not port or not _port_free(port):
            port = free_port()
        grpc_port = int(rec.extra.get("grpc_port") or 0)
        if not grpc_port or grpc_port == port or not _port_free(grpc_port):
            grpc_port = _other_free_port(port)
        return self._launch(rec, spec, port, grpc_port, progress, restart=True)

    def flush(self, name: str, timeout: float = 30.0, shadow_timeout: float | None = None) -> dict[str, Any]:
        """Ask the running runtime to write its response log (waiting at most ``shadow_timeout`` for queued
        shadow copies); its answer (``flushed``, ``shadow_queued``, counters), or {} if it is not running."""
        running = self._running(name)
        token = self._token(name)
        if not running or token is None:
            return {}
        body: dict[str, Any] = {"timeout": timeout}
        if shadow_timeout is not None:
            body["shadow_timeout"] = shadow_timeout
        try:
            _status, doc = _http(
                "POST", f"http://{HOST}:{running[1]}/admin/flush", body, token=token, timeout=timeout + 5
            )
        except OSError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def log_state(self, name: str) -> dict[str, Any]:
        """The running runtime's view of its response log (``GET /admin/log``: counters, a full disk and what
        it does about it), or {} if it is not running or does not answer."""
        running = self._running(name)
        token = self._token(name)
        if not running or token is None:
            return {}
        try:
            status, doc = _http("GET", f"http://{HOST}:{running[1]}/admin/log", token=token, timeout=2)
        except OSError:
            return {}
        return doc if status == 200 and isinstance(doc, dict) else {}

    # -- Prometheus -----------------------------------------------------------------------------------------
    def _write_targets(self, exclude: set[str] | None = None) -> Path:
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

    def write_targets(self, exclude: set[str] | None = None) -> Path:
        """Rewrite the targets file under a lock of its own, so two writers never interleave stale views."""
        import fcntl

        lock = self.settings.home / TARGETS_FILE.parent / "targets.lock"
        private_dir(lock.parent, tighten=False)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return self._write_targets(exclude)
        finally:
            os.close(fd)
