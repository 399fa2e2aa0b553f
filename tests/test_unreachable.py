"""An unreachable tracking server is one readable line naming the URI, quickly, from magics and the CLI."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize(
    "cell",
    [
        "%wolt_models",
        "%wolt_register --name m --run abc",
        "%%wolt_experiment e\nx = 1\n",
    ],
)
def test_magics_give_one_line(shell, closed_port_uri: str, monkeypatch, capsys, cell: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed_port_uri)
    started = time.monotonic()
    result = shell.run_cell(cell)
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out.strip()
    assert not result.success
    assert out.startswith(
        "TrackingUnavailable: cannot reach the MLflow tracking server at " + closed_port_uri
    )
    assert "\n" not in out and "Traceback" not in out
    assert elapsed < 10  # no minutes of client retries
    assert "x" not in shell.user_ns  # the experiment cell did not run half-way


@pytest.mark.integration
def test_cli_gives_one_line_and_exit_1(wolt_home, closed_port_uri: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wolt_jupyter", "models"],
        capture_output=True,
        text=True,
        env={
            "MLFLOW_TRACKING_URI": closed_port_uri,
            "WOLT_JUPYTER_HOME": str(wolt_home),
            "PATH": "/usr/bin:/bin",
        },
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("wolt-jupyter: cannot reach the MLflow tracking server at")
    assert len(proc.stderr.strip().splitlines()) == 1
