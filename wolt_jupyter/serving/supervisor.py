"""``python -m wolt_jupyter.serving.supervisor --state FILE -- RUNTIME_COMMAND...``: keep a runtime alive.

What a kubelet does for a pod, for the ``local`` target: start the runtime, wait for it, and when it dies
without being asked (SIGKILL, OOM, a segfault in a native model) start it again with the same command — the
same spec file, so the same revision, on the same port, so the URL a client holds keeps working. Crashes in a
row back off (0.2 s, then doubling to 30 s); after three in a row the deployment is reported ``failing`` with
the exit reasons, until a run stays up 30 s.

The supervisor is the process the local backend records; the runtime is its child in the same process group
(so stopping the group stops both). If the supervisor itself dies (SIGKILL, OOM) the runtime keeps serving
and starts a new supervisor that adopts it (:func:`~wolt_jupyter.serving.guard.guard_supervisor`): nobody has to run ``up``. Other
commands get SIGTERM when their supervisor dies (``PR_SET_PDEATHSIG``). The state (supervisor and runtime
pids, restarts, last exits, status) is a JSON file the backend reads for cards and lists.

Restarts are fast because the supervisor is a fork server for our own runtime: it imports the runtime (and
scikit-learn, and MLflow once a model on disk needs it) once, and each start is a ``fork`` that runs the
runtime's ``main`` — a restart costs the model load, not the seconds of interpreter start and imports. Any
other command is started with ``exec`` as usual.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from wolt_jupyter.processes import process_gone
from wolt_jupyter.serving.guard import GUARD_ENV

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0  # a run this long resets the crash streak
FAILING_AFTER = 3  # crashes in a row


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (status unknown: it was adopted from a supervisor that had died)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(
        self,
        command: list[str],
        state_path: Path,
        log_path: Path | None,
        adopt: int | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.command = command
        self.state_path = state_path
        self.log_path = log_path
        self.adopt = adopt  # a runtime already serving, whose supervisor died
        self.argv = argv or []  # ours, for the runtime to start our successor with
        self.stopping = threading.Event()
        self.child: int | None = None
        self.runtime_args = _runtime_args(command)
        self._resave: threading.Thread | None = None
        self._save_lock = threading.Lock()
        if log_path is not None:  # the child rotates it by size (wolt_jupyter.logfile)
            from wolt_jupyter.logfile import LOG_ENV

            os.environ[LOG_ENV] = str(log_path)
        self.state: dict[str, Any] = {
            "supervisor_pid": os.getpid(),
            "runtime_pid": None,
            "status": "running",
            "restarts": 0,
            "crash_streak": 0,
            "exits": [],  # the last few: {"time", "reason"}
            "started": time.time(),
            "supervisor_restarts": 0,
        }
        if adopt is not None:  # the runtime's history goes on
            try:
                before = json.loads(state_path.read_text())
            except (OSError, ValueError):
                before = {}
            for key in ("restarts", "crash_streak", "exits", "started", "runtime_started", "status"):
                if key in before:
                    self.state[key] = before[key]
            self.state["supervisor_restarts"] = int(before.get("supervisor_restarts") or 0) + 1

    def _save(self) -> None:
        from wolt_jupyter.revisions import write_atomic

        try:
            with self._save_lock:
                write_atomic(self.state_path, json.dumps(self.state))  # 0600, never half-written
        except OSError:  # a full disk must not end the supervision: saved again once there is room
            if self._resave is None or not self._resave.is_alive():
                self._resave = threading.Thread(target=self._save_later, daemon=True)
                self._resave.start()

    def _save_later(self) -> None:
        from wolt_jupyter.revisions import write_atomic

        while not self.stopping.wait(1.0):
            with contextlib.suppress(OSError), self._save_lock:  # the newest state, never an older one
                write_atomic(self.state_path, json.dumps(self.state))
                return

    def _spawn(self) -> int:
        """Start the runtime; its pid."""
        if self.log_path:  # the child may have rotated the log: this process's own output follows
            with contextlib.suppress(OSError):  # a full disk: the old file keeps it
                out = self._open_log()
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.close(out)
        if self.runtime_args is not None:
            _preload_for_models(self.runtime_args)
            return self._fork()
        out = self._open_log() if self.log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig,
            )
        finally:
            if out is not subprocess.DEVNULL:
                os.close(out)
        self._popen = proc  # keeps the Popen alive; the pid is reaped with waitpid below
        return proc.pid

    def _fork(self) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the child: become the runtime
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            # no PDEATHSIG: if this supervisor dies the runtime serves on and starts its successor
            os.environ[GUARD_ENV] = json.dumps({"pid": os.getppid(), "argv": self.argv})
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            if self.log_path:
                out = self._open_log()
                os.dup2(out, 1)
                os.dup2(out, 2)
            from wolt_jupyter.serving.__main__ import main as runtime_main

            code = runtime_main(self.runtime_args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code or 0)

    def _wait(self, pid: int) -> int | None:
        """The runtime's exit code; None for an adopted one (not our child: only its end can be seen)."""
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            while not process_gone(pid):
                time.sleep(0.1)
            return None
        return os.waitstatus_to_exitcode(status)

    def _open_log(self) -> int:
        """The log for appending, private (0600) even if an older version made it readable: it holds what the
        runtime or the update service prints."""
        assert self.log_path is not None
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def _note(self, text: str) -> None:
        if not self.log_path:
            return
        with contextlib.suppress(OSError):  # a full disk loses the note, never the supervisor
            fd = self._open_log()
            try:
                os.write(fd, f"--- supervisor {time.strftime('%Y-%m-%d %H:%M:%S')}: {text} ---\n".encode())
            finally:
                os.close(fd)

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        child = self.child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    def run(self) -> int:
        backoff = FIRST_BACKOFF_S
        adopted = self.adopt
        if adopted is not None:  # said at once: the deployment is supervised again before our imports
            self.child = adopted  # for a SIGTERM that comes before the loop
            self.state.update(runtime_pid=adopted, status="running")
            self._save()
            self._note(f"the previous supervisor is gone; runtime {adopted} (still serving) adopted")
        if self.runtime_args is not None:
            _preload()
        while not self.stopping.is_set():
            if adopted is not None:
                self.child, adopted = adopted, None
                self.state.update(runtime_pid=self.child, status="running")
            else:
                self.child = self._spawn()
                self.state.update(runtime_pid=self.child, runtime_started=time.time())
            started = float(self.state.get("runtime_started") or time.time())
            self._save()
            if self.stopping.is_set():  # SIGTERM arrived while spawning
                self.stop()
            code = self._wait(self.child)
            self.child = None
            if self.stopping.is_set():
                break
            ran = time.time() - started
            reason = describe_exit(code)
            if ran >= STABLE_AFTER_S:
                self.state["crash_streak"] = 0
                backoff = FIRST_BACKOFF_S
            self.state["crash_streak"] += 1
            self.state["restarts"] += 1
            self.state["exits"] = [*self.state["exits"][-4:], {"time": time.time(), "reason": reason}]
            failing = self.state["crash_streak"] >= FAILING_AFTER
            self.state["status"] = "failing" if failing else "restarting"
            self.state["runtime_pid"] = None
            self._save()
            self._note(
                f"runtime {reason} after {ran:.1f} s; restart {self.state['restarts']} in {backoff:.1f} s"
            )
            if self.stopping.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            if not failing:
                self.state["status"] = "running"
        self.state.update(status="stopped", runtime_pid=None)
        self._save()
        return 0


def _runtime_args(command: list[str]) -> list[str] | None:
    """``[python, -m, wolt_jupyter.serving, ARGS...]`` → ARGS (run by fork); None for any other command."""
    if len(command) >= 3 and command[1:3] == ["-m", "wolt_jupyter.serving"]:
        return command[3:]
    return None


def _preload() -> None:
    """Import once what every start of the runtime needs, so a forked restart skips it."""
    import importlib

    for module in (
        "wolt_jupyter.serving.__main__",
        "wolt_jupyter.serving.models",
        "wolt_jupyter.serving.rest",
        "wolt_jupyter.serving.grpc_service",  # every local deployment serves gRPC: grpcio + the descriptors
        "grpc",
        "uvloop",
        "wolt_jupyter.responses.writer",
        "sqlalchemy",
        "pandas",
        # no MLflow, scikit-learn or skops here: scikit-learn models load without them (serving.flavors), and
        # what a deployment's models need is preloaded before a restart (_preload_for_models)
    ):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        from wolt_jupyter.spec import import_jsonschema

        import_jsonschema()  # the spec's schema check (without the grammar compile it does not need)
    # what the imports left is permanent: out of the collector, so the runtime's first full collection (it
    # runs one once its models are loaded) scans only what the runtime made, not the ~1M preloaded objects
    import gc

    gc.collect()
    gc.freeze()


def _preload_for_models(runtime_args: list[str]) -> None:
    """Import, before a fork, what the deployment's models need to load (scikit-learn, or MLflow's pyfunc
    loader for other flavors): a restart then costs the model load, not the import. Only models already on
    disk count, so a first start never waits for an import its models may not need."""
    try:
        import importlib

        from wolt_jupyter.config import settings
        from wolt_jupyter.serving.__main__ import _parse
        from wolt_jupyter.serving.models import model_cache_dir, preload_modules
        from wolt_jupyter.spec import DeploymentSpec

        args = _parse(runtime_args)
        spec = DeploymentSpec.from_yaml(Path(args.spec).read_text())
        state_dir = Path(args.state_dir).expanduser().resolve() if args.state_dir else settings().home
        cache = model_cache_dir(state_dir, spec.name)
        for module in dict.fromkeys(m for v in spec.variants for m in preload_modules(v.model, cache)):
            if module not in sys.modules:
                with contextlib.suppress(Exception):  # a name the model file got wrong: the load says so
                    importlib.import_module(module)
    except Exception:  # the runtime reports an unreadable spec or model itself
        return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print(
            "usage: python -m wolt_jupyter.serving.supervisor --state FILE [--log FILE] -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m wolt_jupyter.serving.supervisor")
    p.add_argument("--state", required=True, help="JSON file for the supervisor's state")
    p.add_argument("--log", default=None, help="file the runtime's output is appended to")
    p.add_argument(
        "--adopt", type=int, default=None, help="pid of a runtime already serving (its supervisor died)"
    )
    args = p.parse_args(argv[:split])
    own = ["--state", args.state, *(["--log", args.log] if args.log else []), *argv[split:]]
    sup = Supervisor(
        argv[split + 1 :], Path(args.state), Path(args.log) if args.log else None, adopt=args.adopt, argv=own
    )
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, sup.stop)
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
