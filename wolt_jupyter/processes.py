"""Processes this package starts and stops (supervisors, runtimes, update services), seen from any process:
whether one has exited, and stopping its group."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited. A child of this process is reaped here, and another process's exited child
    (a zombie its parent has not reaped yet, e.g. a supervisor started by a busy kernel) counts as gone: it
    still answers ``kill(pid, 0)``."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:  # not our child: ask the kernel
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False  # no /proc (macOS), or gone since: kill() above decides
    # "pid (comm) S ...": the state follows the last ")", as comm may hold anything
    state = stat.rfind(b")") + 2
    return stat[state : state + 1] in (b"Z", b"X")


def stop_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid`` (a supervisor and its runtime flush and exit), or ``pid``
    alone when it leads none (an adopted runtime), then SIGKILL if it has not gone within ``timeout``."""
    if not _signal_group(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    """Whether ``sig`` reached ``pid``'s group, or ``pid`` itself."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, sig)
            return True
        except ProcessLookupError:
            continue
    return False
