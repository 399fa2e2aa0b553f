"""A supervised runtime's watch over its supervisor: if the supervisor dies, the runtime starts a new one that
adopts it (``python -m wolt_jupyter.serving.supervisor --adopt PID``), so the deployment keeps serving and stays
supervised without anyone running ``up``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from wolt_jupyter.processes import process_gone

GUARD_ENV = "WOLT_SUPERVISOR"  # in a supervised runtime: {"pid": its supervisor, "argv": the supervisor's}
GUARD_INTERVAL_S = 0.5


def guard_supervisor() -> threading.Event | None:
    """In a runtime its supervisor forked: watch the supervisor and, if it dies, start a new one that adopts
    this process, so the deployment keeps serving and stays supervised without anyone running ``up``. Set
    the event returned when shutting down: a supervisor that goes then is not replaced. None when not
    supervised (a pod, a test)."""
    try:
        info = json.loads(os.environ.pop(GUARD_ENV))
        pid, argv = int(info["pid"]), [str(a) for a in info["argv"]]
    except (KeyError, ValueError, TypeError):
        return None
    done = threading.Event()
    threading.Thread(target=_guard, args=(pid, argv, done), name="wolt-guard", daemon=True).start()
    return done


def _guard(pid: int, argv: list[str], done: threading.Event) -> None:
    parent: int | None = os.getppid()
    while not done.wait(GUARD_INTERVAL_S):
        # reparented: the supervisor that forked us is gone even if its pid was taken again
        gone = os.getppid() != parent if pid == parent else process_gone(pid)
        if not gone or done.is_set():
            continue
        try:
            successor = subprocess.Popen(
                [sys.executable, "-m", "wolt_jupyter.serving.supervisor", "--adopt", str(os.getpid()), *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # like the first: stopping its group must not stop ours
            )
        except OSError as exc:
            print(f"wolt-jupyter: the supervisor died and no successor could start: {exc}", file=sys.stderr)
            return
        print(
            f"wolt-jupyter: the supervisor (pid {pid}) died; supervisor {successor.pid} adopts",
            file=sys.stderr,
        )
        pid, parent = successor.pid, None
