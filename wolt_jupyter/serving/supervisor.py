"""``python -m wolt_jupyter.serving.supervisor --state FILE -- RUNTIME_COMMAND...``: keep a runtime alive.

What a kubelet does for a pod, for the ``local`` target: start the runtime, wait for it, and when it dies
without being asked (SIGKILL, OOM, a segfault in a native model) start it again with the same command — the
same spec file, so the same revision, on the same port, so the URL a client holds keeps working. Crashes in a
row back off (0.2 s, then doubling to 30 s); after three in a row the deployment is reported ``failing`` with
the exit reasons, until a run stays up 30 s.

The supervisor is the process the local backend records; the runtime is its child in the same process group
(so stopping the group stops both) and gets SIGTERM if the supervisor itself dies (``PR_SET_PDEATHSIG``).
Its state (runtime pid, restarts, last exits, status) is a JSON file the backend reads for cards and lists.
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

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0  # a run this long resets the crash streak
FAILING_AFTER = 3  # crashes in a row


def describe_exit(code: int) -> str:
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
    def __init__(self, command: list[str], state_path: Path, log_path: Path | None) -> None:
        self.command = command
        self.state_path = state_path
        self.log_path = log_path
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None
        self.state: dict[str, Any] = {
            "supervisor_pid": os.getpid(),
            "runtime_pid": None,
            "status": "running",
            "restarts": 0,
            "crash_streak": 0,
            "exits": [],  # the last few: {"time", "reason"}
            "started": time.time(),
        }

    def _save(self) -> None:
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.state))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_path)

    def _spawn(self) -> subprocess.Popen:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    def _note(self, text: str) -> None:
        if self.log_path:
            with open(self.log_path, "ab") as fh:
                fh.write(f"--- supervisor {time.strftime('%Y-%m-%d %H:%M:%S')}: {text} ---\n".encode())

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        backoff = FIRST_BACKOFF_S
        while not self.stopping.is_set():
            t0 = time.monotonic()
            self.child = self._spawn()
            self.state.update(runtime_pid=self.child.pid, runtime_started=time.time())
            self._save()
            if self.stopping.is_set():  # SIGTERM arrived while spawning
                self.stop()
            code = self.child.wait()
            if self.stopping.is_set():
                break
            ran = time.monotonic() - t0
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
    args = p.parse_args(argv[:split])
    sup = Supervisor(argv[split + 1 :], Path(args.state), Path(args.log) if args.log else None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, sup.stop)
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
