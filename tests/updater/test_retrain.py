"""The retraining runner with real processes: a command and a notebook executed headless (nbclient), one run at
a time, its end and exit code reported once, its output and state private; and the champion's health measured
from a real response log against the version's reference sample."""

from __future__ import annotations

import sys
import time
import uuid

import nbformat
import numpy as np
import pandas as pd
import pytest

from wolt_jupyter.updater.policy import LiveMetric, Retrain
from wolt_jupyter.updater.retrain import NOTEBOOK_OUTPUT, RetrainRunner, champion_health

ENV = {"WOLT_MODEL": "eta", "WOLT_CHAMPION_VERSION": "3"}


def wait_ended(runner: RetrainRunner, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = runner.ended()
        if ended is not None:
            return ended
        time.sleep(0.05)
    raise AssertionError(f"the run did not end in {timeout}s: {runner.log_tail(5)}")


def test_a_command_runs_once_at_a_time_and_its_end_is_told_once(tmp_path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import os, pathlib, sys, time\n"
        "time.sleep(0.5)\n"
        "pathlib.Path('trained.txt').write_text(os.environ['WOLT_RETRAIN_REASON'] + '|' + os.environ['WOLT_MODEL'])\n"
        "print('registered a new version')\n"
        "sys.exit(3)\n"
    )
    runner = RetrainRunner(
        Retrain(command=(sys.executable, "train.py"), drift_threshold=0.2), tmp_path / "u", cwd=tmp_path
    )
    assert not runner.running() and runner.ended() is None
    pid = runner.start("input drift PSI 0.4 >= 0.2", ENV)
    assert runner.running() and runner.state().pid == pid and runner.ended() is None
    ended = wait_ended(runner)
    assert (
        ended.exit_code == 3 and ended.finished >= ended.last_run and ended.reason.startswith("input drift")
    )
    assert runner.ended() is None  # told once
    assert (
        tmp_path / "trained.txt"
    ).read_text() == "input drift PSI 0.4 >= 0.2|eta"  # ran in cwd, with the env
    assert "registered a new version" in runner.log_tail() and "input drift" in runner.log_path.read_text()
    for path in (runner.log_path, runner.state_path):
        assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.integration
def test_a_shell_line_and_a_run_found_after_a_restart(tmp_path) -> None:
    retrain = Retrain(command="sleep 1; echo done > shell.txt", drift_threshold=0.2)
    first = RetrainRunner(retrain, tmp_path / "u", cwd=tmp_path)
    first.start("drift", ENV)
    restarted = RetrainRunner(retrain, tmp_path / "u", cwd=tmp_path)  # the service restarted mid-run
    assert restarted.running()
    ended = wait_ended(restarted)
    assert ended.exit_code is None  # not its child: only that it ended is known
    assert (tmp_path / "shell.txt").read_text().strip() == "done"


def test_a_run_past_its_timeout_is_stopped(tmp_path) -> None:
    runner = RetrainRunner(Retrain(command="sleep 60", drift_threshold=0.2, timeout=0.5), tmp_path / "u")
    runner.start("drift", ENV)
    ended = wait_ended(runner, 30)
    assert ended.exit_code is None and "stopped after the 0.5s timeout" in ended.reason
    assert ended.finished - ended.last_run < 20


def _notebook(path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, str(path))


@pytest.mark.integration
def test_a_notebook_is_executed_headless(tmp_path) -> None:
    _notebook(
        tmp_path / "retrain.ipynb",
        "import os, pathlib",
        "pathlib.Path('from-notebook.txt').write_text(os.environ['WOLT_RETRAIN_REASON'])\nprint('trained in a kernel')",
    )
    runner = RetrainRunner(
        Retrain(notebook=str(tmp_path / "retrain.ipynb"), drift_threshold=0.2), tmp_path / "u"
    )
    runner.start("live metric declined", ENV)
    ended = wait_ended(runner)
    assert ended.exit_code == 0, runner.log_tail(5)
    assert (tmp_path / "from-notebook.txt").read_text() == "live metric declined"  # cells ran in its folder
    executed = nbformat.read(str(tmp_path / "u" / NOTEBOOK_OUTPUT), as_version=4)
    assert "trained in a kernel" in executed.cells[1].outputs[0]["text"]


@pytest.mark.integration
def test_a_failing_notebook_is_one_line_and_a_nonzero_exit(tmp_path) -> None:
    _notebook(tmp_path / "bad.ipynb", "raise ValueError('no training data today')")
    runner = RetrainRunner(Retrain(notebook=str(tmp_path / "bad.ipynb"), drift_threshold=0.2), tmp_path / "u")
    runner.start("drift", ENV)
    ended = wait_ended(runner)
    assert ended.exit_code == 1
    assert "failed" in runner.log_tail(1) and "no training data today" in runner.log_tail(1)


def test_baseline_is_the_first_metric_of_each_champion(tmp_path) -> None:
    runner = RetrainRunner(Retrain(command="true", metric_decline=0.1), tmp_path / "u")
    assert runner.baseline("1", None) is None
    assert runner.baseline("1", 0.5) == 0.5
    assert (
        RetrainRunner(Retrain(command="true", metric_decline=0.1), tmp_path / "u").baseline("1", 0.9) == 0.5
    )
    assert runner.baseline("2", 0.7) == 0.7  # a new champion, a new baseline


@pytest.fixture
def logged(wolt_home):
    """A registered version with a reference sample, and a response log of its variant ``main``: inputs
    shifted by 2 standard deviations, half of them labelled (answers off by 1)."""
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter.responses import ResponseRecord, ResponseWriter, add_feedback, default_store_url

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(300, 2)), columns=["a", "b"])
    name = f"eta-{uuid.uuid4().hex[:6]}"
    wolt_jupyter.register(LinearRegression().fit(X, X.a), name=name, input_example=X.head(3), reference=X)
    now = time.time()
    shifted = np.random.default_rng(1).normal(2.0, 1.0, size=(200, 2))
    ids = [uuid.uuid4().hex for _ in range(200)]
    url = default_store_url("eta", wolt_home)
    with ResponseWriter(url) as w:
        for i, (a, b) in enumerate(shifted):
            w.submit(ResponseRecord(ids[i], now - 100 + i * 0.1, "eta", "main", name, "1", False,
                                    {"a": [a], "b": [b]}, {"predict": [a]}, 3.0, 200))  # fmt: skip
    add_feedback(url, [{"id": ids[i], "ground_truth": float(shifted[i, 0]) + 1.0} for i in range(0, 200, 2)])
    return name, now


def test_champion_health_from_the_log_and_the_reference(logged) -> None:
    name, now = logged
    mae = LiveMetric("mae", "min", 1.0)
    retrain = Retrain(
        command="true", drift_threshold=0.2, metric_decline=0.1, min_requests=100, min_labels=50
    )
    health = champion_health("eta", "main", name, "1", retrain, mae, now - 1000)
    assert health.requests == 200 and health.labels == 100
    assert health.drift_psi is not None and health.drift_psi > 1.0  # 2 sd apart
    assert health.metric == pytest.approx(1.0)
    few = champion_health(
        "eta",
        "main",
        name,
        "1",
        Retrain(command="true", drift_threshold=0.2, min_requests=500),
        mae,
        now - 1000,
    )
    assert few.drift_psi is None and "200/500 requests" in few.note
    quiet = champion_health("eta", "main", name, "1", retrain, mae, now + 10)
    assert quiet.requests == 0 and quiet.drift_psi is None and quiet.metric is None
