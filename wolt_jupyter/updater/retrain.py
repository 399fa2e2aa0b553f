"""The retraining hook: when the champion's inputs drift or its live metric declines, run the configured
command, or execute the configured notebook headless (nbclient), to train and register a new version — which
the registry watcher then picks up like any other candidate.

The judgement is :func:`wolt_jupyter.updater.decide.should_retrain` (pure); this module measures the champion
(:func:`champion_health`, from the response log and the version's reference sample) and runs the job
(:class:`RetrainRunner`): one run at a time, in its own process group so the service can stop or restart
without killing it, its output in ``updater/retrain.log`` and its state in ``updater/retrain.json`` (0600).
The run gets ``WOLT_DEPLOYMENT``, ``WOLT_MODEL``, ``WOLT_CHAMPION_VERSION`` and ``WOLT_RETRAIN_REASON``.

``python -m wolt_jupyter.updater.retrain NOTEBOOK [--output OUT] [--timeout S]`` executes a notebook the way
the hook does (cells run in its own folder; the executed copy is kept to read what happened).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from wolt_jupyter.updater.policy import LIVE_METRICS, LiveMetric, Retrain

STATE_FILE = "retrain.json"
LOG_FILE = "retrain.log"
NOTEBOOK_OUTPUT = "retrain-last.ipynb"


@dataclass(frozen=True)
class ChampionHealth:
    """What the champion's variant saw over the window: requests, the worst input drift (None when not
    measured: too few requests or no reference sample kept with the version) and the live metric (None under
    ``min_labels`` labels)."""

    version: str | None
    requests: int = 0
    drift_psi: float | None = None
    metric: float | None = None
    labels: int = 0
    note: str = ""


def metric_of(retrain: Retrain, live_metric: LiveMetric | None) -> LiveMetric:
    """The per-request metric retraining watches: its own, else the guards' live metric, else mae."""
    name = retrain.metric or (live_metric.name if live_metric else "mae")
    return LiveMetric(name, LIVE_METRICS[name], min_effect=1.0)


def champion_health(
    deployment: str,
    variant: str,
    model: str,
    version: str | None,
    retrain: Retrain,
    metric: LiveMetric,
    since: float,
) -> ChampionHealth:
    """The champion variant ``variant`` (serving ``model`` version ``version``) since ``since``."""
    from wolt_jupyter.errors import WoltError
    from wolt_jupyter.monitoring.drift import drift_table
    from wolt_jupyter.monitoring.reports import INPUT_PREFIX
    from wolt_jupyter.registry import load_reference
    from wolt_jupyter.responses import read_frame
    from wolt_jupyter.updater.observe import window_from_log

    log = read_frame(deployment, since=since, variant=variant)
    if log.empty:
        return ChampionHealth(version, note="no requests in the window")
    log = log[~log["shadow"].astype(bool)]
    arm = window_from_log(log, candidate="", champion=variant, shadow=False, live_metric=metric).champion
    notes = []
    drift_psi = None
    if retrain.drift_threshold is not None:
        if arm.requests < retrain.min_requests or version is None:
            notes.append(f"drift not measured: {arm.requests}/{retrain.min_requests} requests")
        else:
            try:
                reference = load_reference(model, version)
            except WoltError as exc:
                notes.append(f"drift not measured: {str(exc).splitlines()[0]}")
            else:
                inputs = log[[c for c in log.columns if str(c).startswith(INPUT_PREFIX)]]
                inputs.columns = [str(c)[len(INPUT_PREFIX) :] for c in inputs.columns]
                table = drift_table(reference, inputs)
                worst = table["psi"].max() if not table.empty else math.nan
                drift_psi = float(worst) if math.isfinite(worst) else None
    labels = arm.metric.n if arm.metric else 0
    value = arm.metric.mean if arm.metric and labels >= retrain.min_labels else None
    if retrain.metric_decline is not None and value is None:
        notes.append(f"{metric.name} not measured: {labels}/{retrain.min_labels} labels")
    return ChampionHealth(version, arm.requests, drift_psi, value, labels, "; ".join(notes))


@dataclass
class RetrainState:
    last_run: float | None = None  # when the last run started
    pid: int | None = None  # the run in progress
    reason: str = ""
    exit_code: int | None = None
    finished: float | None = None
    reported: bool = True  # the last run's end is in the history
    baseline_champion: str | None = None  # the champion version the baseline belongs to
    baseline_metric: float | None = None


class RetrainRunner:
    """Starts the retraining job in the background, one at a time, and tells when it ended."""

    def __init__(
        self,
        retrain: Retrain,
        directory: Path,
        *,
        cwd: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.retrain = retrain
        self.dir = directory
        self.cwd = cwd
        self.clock = clock
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    def state(self) -> RetrainState:
        try:
            return RetrainState(**json.loads(self.state_path.read_text()))
        except (OSError, ValueError, TypeError):
            return RetrainState()

    def _write(self, state: RetrainState) -> None:
        from wolt_jupyter.revisions import write_atomic

        write_atomic(self.state_path, json.dumps(asdict(state), indent=1), mode=0o600)

    def baseline(self, champion: str | None, metric: float | None) -> float | None:
        """The champion's baseline metric: the first one measured for this champion version (kept across
        restarts; a new champion starts a new baseline)."""
        st = self.state()
        if st.baseline_champion != champion:
            st.baseline_champion, st.baseline_metric = champion, None
        if st.baseline_metric is None and metric is not None and math.isfinite(metric):
            st.baseline_metric = metric
        self._write(st)
        return st.baseline_metric

    def running(self) -> bool:
        st = self.state()
        if st.pid is None:
            return False
        self._reap(st)
        return self.state().pid is not None

    def _reap(self, st: RetrainState) -> None:
        """Record the end of the run (its exit code when this process started it); stop it past its timeout."""
        from wolt_jupyter.processes import process_gone, stop_process_group

        assert st.pid is not None
        if self._proc is not None and self._proc.pid == st.pid:
            code = self._proc.poll()
            gone = code is not None
        else:  # started before a restart of the service: only whether it is still there is known
            code, gone = None, process_gone(st.pid)
        if not gone and st.last_run is not None and self.clock() - st.last_run > self.retrain.timeout:
            stop_process_group(st.pid, 10.0)
            code, gone = None, True  # the group stop reaps it: its own exit code is gone
            st.reason += f" (stopped after the {self.retrain.timeout:.3g}s timeout)"
        if gone:
            st.pid, st.exit_code, st.finished, st.reported = None, code, self.clock(), False
            self._proc = None
            self._write(st)

    def start(self, reason: str, env: Mapping[str, str] | None = None) -> int:
        """Start the job now; returns its pid."""
        from wolt_jupyter.private import private_dir

        private_dir(self.dir)
        argv = self.argv()
        run_env = {**os.environ, **(env or {}), "WOLT_RETRAIN_REASON": reason}
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=run_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        st = self.state()
        st.last_run, st.pid, st.reason, st.exit_code, st.finished = (
            self.clock(),
            self._proc.pid,
            reason,
            None,
            None,
        )
        st.reported = True
        self._write(st)
        return self._proc.pid

    def argv(self) -> list[str]:
        r = self.retrain
        if r.notebook is not None:
            return [sys.executable, "-m", "wolt_jupyter.updater.retrain", r.notebook,
                    "--output", str(self.dir / NOTEBOOK_OUTPUT), "--timeout", str(r.timeout)]  # fmt: skip
        if isinstance(r.command, str):
            return ["/bin/sh", "-c", r.command]
        assert r.command is not None
        return list(r.command)

    def ended(self) -> RetrainState | None:
        """The last run's state once, when it has ended and that was not yet reported."""
        if self.running():
            return None
        st = self.state()
        if st.reported or st.finished is None:
            return None
        st.reported = True
        self._write(st)
        return st

    def log_tail(self, lines: int = 3) -> str:
        from wolt_jupyter.backends.local import log_tail

        return log_tail(self.log_path, lines)


# -- headless notebook ----------------------------------------------------------------------------------------
def execute_notebook(path: str | Path, output: str | Path | None = None, timeout: float = 7200.0) -> None:
    """Execute ``path`` top to bottom in a fresh python3 kernel, in the notebook's folder; the executed copy
    goes to ``output``. A failing cell raises nbclient's CellExecutionError (after the copy is written)."""
    import nbformat
    from nbclient import NotebookClient

    nb_path = Path(path).expanduser().resolve()
    nb = nbformat.read(nb_path, as_version=4)
    client = NotebookClient(
        nb, timeout=int(timeout), kernel_name="python3", resources={"metadata": {"path": str(nb_path.parent)}}
    )
    try:
        client.execute()
    finally:
        if output is not None:
            nbformat.write(nb, str(output))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wolt_jupyter.updater.retrain")
    parser.add_argument("notebook")
    parser.add_argument("--output")
    parser.add_argument("--timeout", type=float, default=7200.0)
    args = parser.parse_args(argv)
    try:
        execute_notebook(args.notebook, args.output, args.timeout)
    except Exception as exc:  # the hook's log gets one line; the executed copy has the traceback
        first = str(exc).strip().splitlines()
        print(
            f"retraining notebook {args.notebook} failed: {type(exc).__name__}: {first[-1] if first else ''}"
        )
        return 1
    print(f"retraining notebook {args.notebook} executed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
