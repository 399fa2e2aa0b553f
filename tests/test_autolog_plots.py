"""A classifier's autologged plots: drawn by the helper process, not in the kernel, stored in the run."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from wolt_jupyter.autolog_plots import PlotJob, serve

PLOTS = ("training_confusion_matrix.png", "training_roc_curve.png", "training_precision_recall_curve.png")
KERNEL = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "wolt_jupyter")
card = ip.run_cell_magic("wolt_experiment", "plots", '''
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=5000).fit(X, y)
''')
print(json.dumps({"run_id": card.run_id, "metrics": card.metrics, "matplotlib": "matplotlib" in sys.modules}))
"""  # exits without waiting for the plots: the kernel's exit waits for the helper


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.integration
def test_a_fresh_kernel_never_imports_matplotlib_and_its_exit_keeps_the_plots(wolt_home: Path) -> None:
    env = {**os.environ, "WOLT_JUPYTER_HOME": str(wolt_home)}
    out = subprocess.run(
        [sys.executable, "-c", KERNEL], env=env, capture_output=True, text=True, check=True, timeout=600
    )
    kernel = json.loads(out.stdout.strip().splitlines()[-1])
    assert kernel["matplotlib"] is False
    assert kernel["metrics"]["training_roc_auc"] > 0.9  # MLflow's metrics, still computed in fit
    store = f"sqlite:///{wolt_home / 'mlflow.db'}"
    run = MlflowClient(tracking_uri=store).get_run(kernel["run_id"])
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    for name in PLOTS:  # two classes: the confusion matrix and both curves, at MLflow's 175 dpi
        assert _png_size(artifacts / name) == (1050, 700)
    assert not list(wolt_home.glob("plots-*"))  # the helper removed the jobs it was handed


@pytest.mark.integration
def test_the_helper_reports_a_plot_it_could_not_store(tmp_path: Path) -> None:
    import numpy as np

    job = PlotJob(run_id="r", prefix="training_", labels=["a", "b", "c"], confusion=np.eye(3))
    good, bad = tmp_path / "good", tmp_path / "bad"
    for directory in (good, bad):
        directory.mkdir()
        job.save(directory)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    answers: list[str] = []
    lines = [
        json.dumps({"dir": str(good), "artifact_uri": (tmp_path / "run").as_uri(), "tracking_uri": ""}),
        json.dumps({"dir": str(bad), "artifact_uri": (blocker / "run").as_uri(), "tracking_uri": ""}),
        json.dumps({"sync": "t1"}),
        json.dumps({"sync": "t2"}),
    ]
    serve(iter(lines), answers.append)
    assert _png_size(tmp_path / "run" / "training_confusion_matrix.png") == (1050, 700)
    assert not (tmp_path / "run" / "training_roc_curve.png").exists()  # three classes: no curves
    first, second = (json.loads(a) for a in answers)
    assert first["sync"] == "t1" and len(first["errors"]) == 1 and str(blocker) in first["errors"][0]
    assert second == {"sync": "t2", "errors": []}  # each error is reported once
    assert not good.exists() and not bad.exists()


@pytest.mark.integration
def test_a_helper_that_died_is_reported_and_replaced(wolt_home: Path, tmp_path: Path) -> None:
    import numpy as np

    from wolt_jupyter.autolog_plots import LOG_NAME, _Helper, draw_later, wait_for_plots

    wolt_home.mkdir(parents=True, exist_ok=True)
    if _Helper.proc is not None:  # one helper per process: another test's (another state dir) goes first
        _Helper.finish(_Helper.proc)
        _Helper.proc = None
    job = PlotJob(run_id="r", prefix="training_", labels=["a", "b"], confusion=np.eye(2))
    draw_later([job], {"r": (tmp_path / "run1").as_uri()}, "", wolt_home)
    assert wait_for_plots() == []
    assert (tmp_path / "run1" / "training_confusion_matrix.png").is_file()
    assert (
        oct((wolt_home / LOG_NAME).stat().st_mode & 0o777) == "0o600"
    )  # its stderr: private, not the cell's
    assert _Helper.proc is not None
    _Helper.proc.kill()
    _Helper.proc.wait()
    [error] = wait_for_plots()
    assert "the plot helper ended" in error and LOG_NAME in error
    draw_later([job], {"r": (tmp_path / "run2").as_uri()}, "", wolt_home)  # a new helper takes the job
    assert wait_for_plots() == []
    assert (tmp_path / "run2" / "training_confusion_matrix.png").is_file()
