"""A classifier's autologged plots drawn by a helper process instead of inside the kernel's ``fit``.

MLflow's scikit-learn autologging draws a confusion matrix (and for two classes the ROC and precision-recall
curves) with matplotlib inside the patched ``fit``: importing matplotlib and saving three 175-dpi PNGs is
~0.8 s of CPU, a fifth of a first ``%%wolt_experiment`` in a new kernel. In an experiment block MLflow still
computes and logs the training metrics in ``fit`` (its own functions); the plots' numbers (confusion matrix,
curve points, AUC, average precision) are computed there too, from predictions taken at once — so the next
cell cannot change them — and handed to one helper process per kernel that draws them with matplotlib and
stores them in the run's artifacts under MLflow's names (``training_confusion_matrix.png``,
``training_roc_curve.png``, ``training_precision_recall_curve.png``; mlflow/sklearn/utils.py). The
kernel never imports matplotlib for this.

A thread in the kernel would not do: MLflow's import hooks hold a lock while autologging sets up, and a
thread importing matplotlib at that moment deadlocks the kernel (seen here). The helper reads jobs from its
stdin and ends when the kernel does; :func:`wait_for_plots` waits until it has stored everything sent.
For an MLflow whose private function differs from what this expects, nothing changes: MLflow draws in ``fit``.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import logging
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wolt_jupyter.private import private_tree

log = logging.getLogger(__name__)

# the parameters of mlflow.sklearn.utils._log_specialized_estimator_content this replacement understands
_EXPECTED = (
    "autologging_client",
    "fitted_estimator",
    "run_id",
    "prefix",
    "X",
    "y_true",
    "sample_weight",
    "pos_label",
    "model_id",
    "dataset",
)
DPI = 175  # MLflow's savefig.dpi for these plots
LOG_NAME = "autolog-plots.log"  # the helper's stderr, in the state dir
FIGSIZE = (6.0, 4.0)


@dataclass
class PlotJob:
    """One fitted classifier's plots as numbers: what the helper draws."""

    run_id: str
    prefix: str
    labels: list[str]
    confusion: Any  # rows: true label, columns: predicted, normalized per true label
    curves: dict[str, Any] = field(default_factory=dict)  # fpr, tpr, precision, recall (two classes only)
    scores: dict[str, float] = field(default_factory=dict)  # roc_auc, average_precision
    pos_label: str = ""

    @classmethod
    def of(cls, estimator: Any, run_id: str, prefix: str, X: Any, y_true: Any, sample_weight: Any) -> PlotJob:
        import numpy as np
        from sklearn import metrics

        y_true = np.asarray(y_true)
        labels = list(estimator.classes_) if hasattr(estimator, "classes_") else list(np.unique(y_true))
        weights = {"sample_weight": sample_weight}
        job = cls(
            run_id=run_id,
            prefix=prefix,
            labels=[str(label) for label in labels],
            confusion=metrics.confusion_matrix(
                y_true, estimator.predict(X), labels=labels, normalize="true", **weights
            ),
        )
        # like MLflow: the curves only for two classes, scored as scikit-learn's displays score them
        if len(set(y_true.tolist())) == 2 and len(labels) == 2:
            if hasattr(estimator, "predict_proba"):
                score = np.asarray(estimator.predict_proba(X))[:, 1]
            elif hasattr(estimator, "decision_function"):
                score = np.asarray(estimator.decision_function(X))
            else:
                return job
            pos = labels[1]
            fpr, tpr, _ = metrics.roc_curve(y_true, score, pos_label=pos, **weights)
            precision, recall, _ = metrics.precision_recall_curve(y_true, score, pos_label=pos, **weights)
            job.curves = {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}
            job.scores = {
                "roc_auc": float(metrics.auc(fpr, tpr)),
                "average_precision": float(
                    metrics.average_precision_score(y_true, score, pos_label=pos, **weights)
                ),
            }
            job.pos_label = str(pos)
        return job

    def save(self, directory: Path) -> None:
        import numpy as np

        np.savez(directory / "arrays.npz", confusion=self.confusion, **self.curves)
        meta = {
            "prefix": self.prefix,
            "labels": self.labels,
            "scores": self.scores,
            "pos_label": self.pos_label,
        }
        (directory / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> PlotJob:
        import numpy as np

        meta = json.loads((directory / "meta.json").read_text())
        with np.load(directory / "arrays.npz", allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
        confusion = loaded.pop("confusion")
        return cls(run_id="", confusion=confusion, curves=loaded, **meta)


# -- in the kernel --------------------------------------------------------------------------------------------
def _replacement(original: Callable[..., Any], jobs: list[PlotJob]) -> Callable[..., Any] | None:
    """MLflow's ``_log_specialized_estimator_content`` with the classifier's plots queued as numbers, or None
    when this MLflow's function is not the one expected."""
    from mlflow.sklearn import utils

    signature = inspect.signature(original)
    metrics_of = getattr(utils, "_get_classifier_metrics", None)
    if tuple(signature.parameters) != _EXPECTED or not callable(metrics_of):
        return None

    def log_content(*args: Any, **kwargs: Any) -> Any:
        import sklearn.base

        a = signature.bind(*args, **kwargs).arguments
        estimator, y_true = a["fitted_estimator"], a["y_true"]
        if y_true is None or not sklearn.base.is_classifier(estimator):
            return original(*args, **kwargs)  # no plots: MLflow's own path
        name = type(estimator).__name__
        metrics: dict[str, float] = {}
        try:  # MLflow's metrics and its handling of their failure (a warning; the fit goes on)
            metrics = metrics_of(estimator, a["prefix"], a["X"], y_true, a["sample_weight"], a["pos_label"])
        except Exception as exc:
            log.warning("Failed to autolog metrics for %s. Logging error: %s", name, exc)
        else:
            a["autologging_client"].log_metrics(
                run_id=a["run_id"], metrics=metrics, model_id=a["model_id"], dataset=a["dataset"]
            )
        try:
            jobs.append(PlotJob.of(estimator, a["run_id"], a["prefix"], a["X"], y_true, a["sample_weight"]))
        except Exception as exc:
            log.warning("Failed to autolog artifacts for %s. Logging error: %s", name, exc)
        return metrics

    return log_content


@contextmanager
def plots_after_the_block() -> Iterator[list[PlotJob]]:
    """In the block, autologged classifiers queue their plots in the yielded list instead of drawing them."""
    from mlflow.sklearn import utils

    original = utils._log_specialized_estimator_content
    jobs: list[PlotJob] = []
    replacement = _replacement(original, jobs)
    if replacement is None:
        yield jobs
        return
    utils._log_specialized_estimator_content = replacement
    try:
        yield jobs
    finally:
        utils._log_specialized_estimator_content = original


class _Helper:
    """The helper process of this kernel: started on the first job, restarted if it has died. Its stderr
    goes to a file in the state dir: in a Jupyter kernel, output on the kernel's own descriptors would show
    up in whichever cell runs at the time."""

    proc: subprocess.Popen[str] | None = None
    log: Path | None = None

    @classmethod
    def running(cls, home: Path) -> subprocess.Popen[str]:
        if cls.proc is None or cls.proc.poll() is not None:
            from wolt_jupyter.private import private_file

            package_root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
            cls.log = private_file(home / LOG_NAME)
            with cls.log.open("a") as stderr:
                cls.proc = subprocess.Popen(
                    [sys.executable, "-m", "wolt_jupyter.autolog_plots"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env={**os.environ, "PYTHONPATH": path, "MPLBACKEND": "Agg"},
                )
            atexit.register(cls.finish, cls.proc)
        return cls.proc

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
        """At the kernel's exit: end of input, so the helper stores what it was sent and ends; waited for."""
        # still drawing after the timeout: it finishes on its own
        with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.wait(timeout)
            proc.stdout.close()

    @staticmethod
    def write(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    @classmethod
    def send(cls, message: dict[str, Any], home: Path) -> None:
        try:
            cls.write(cls.running(home), message)
        except OSError:  # it ended since the last job (BrokenPipeError): once more with a new one
            cls.proc = None
            cls.write(cls.running(home), message)


def draw_later(jobs: list[PlotJob], artifact_uris: dict[str, str], tracking_uri: str, home: Path) -> None:
    """Hand ``jobs`` to the helper process; ``artifact_uris`` maps each job's run id to its artifact URI."""
    for job in jobs:
        directory = Path(tempfile.mkdtemp(prefix="plots-", dir=home))  # 0700
        job.save(directory)
        private_tree(directory)  # the job's arrays are training data: 0600 whatever the umask
        message = {
            "dir": str(directory),
            "artifact_uri": artifact_uris[job.run_id],
            "tracking_uri": tracking_uri,
        }
        _Helper.send(message, home)


def wait_for_plots(timeout: float = 120.0) -> list[str]:
    """Wait until the helper has stored every plot sent so far; returns its errors since the last wait."""
    proc = _Helper.proc
    if proc is None:
        return []
    token = uuid.uuid4().hex
    try:
        _Helper.write(proc, {"sync": token})
    except OSError:
        return [f"the plot helper ended (exit code {proc.poll()}); its messages are in {_Helper.log}"]
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while selector.select(timeout):
            line = proc.stdout.readline()
            if not line:
                return [f"the plot helper ended (exit code {proc.wait()}); its messages are in {_Helper.log}"]
            answer = json.loads(line)
            if answer.get("sync") == token:
                return list(answer.get("errors", []))
    raise TimeoutError(f"the plot helper did not answer within {timeout:g} s")


# -- in the helper process ------------------------------------------------------------------------------------
def draw(job: PlotJob, directory: Path) -> list[Path]:
    """Draw ``job``'s plots as PNGs in ``directory`` (matplotlib's object API, Agg)."""
    from matplotlib.figure import Figure

    font = min(8.0, 50.0 / max(len(job.labels), 1))  # MLflow's rule: smaller for many classes
    written = []
    for name, title, plot in _plots(job):
        figure = Figure(figsize=FIGSIZE, layout="tight")
        axes = figure.subplots()
        plot(figure, axes, font)
        axes.set_title(title, fontsize=font + 1)
        path = directory / f"{job.prefix}{name}.png"
        figure.savefig(path, format="png", dpi=DPI)
        written.append(path)
    return written


def _plots(job: PlotJob) -> Iterator[tuple[str, str, Callable[[Any, Any, float], None]]]:
    yield "confusion_matrix", "Normalized confusion matrix", lambda f, ax, font: _confusion(job, f, ax, font)
    if job.curves:
        yield "roc_curve", "ROC curve", lambda f, ax, font: _roc(job, ax, font)
        yield "precision_recall_curve", "Precision recall curve", lambda f, ax, font: _pr(job, ax, font)


def _confusion(job: PlotJob, figure: Any, ax: Any, font: float) -> None:
    matrix = job.confusion
    image = ax.imshow(matrix, interpolation="nearest", cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax)
    ticks = range(len(job.labels))
    ax.set_xticks(ticks, job.labels, fontsize=font)
    ax.set_yticks(ticks, job.labels, fontsize=font)
    ax.set_xlabel("Predicted label", fontsize=font)
    ax.set_ylabel("True label", fontsize=font)
    for (row, col), value in _cells(matrix):
        color = "white" if value > 0.5 else "black"  # readable on both ends of the colormap
        ax.text(col, row, f"{value:.2g}", ha="center", va="center", color=color, fontsize=font)


def _cells(matrix: Any) -> Iterator[tuple[tuple[int, int], float]]:
    for row in range(matrix.shape[0]):
        for col in range(matrix.shape[1]):
            yield (row, col), float(matrix[row, col])


def _roc(job: PlotJob, ax: Any, font: float) -> None:
    ax.plot(job.curves["fpr"], job.curves["tpr"], label=f"AUC = {job.scores['roc_auc']:.2f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance level")
    ax.set_xlabel(f"False positive rate (positive label: {job.pos_label})", fontsize=font)
    ax.set_ylabel(f"True positive rate (positive label: {job.pos_label})", fontsize=font)
    ax.legend(loc="lower right", fontsize=font)


def _pr(job: PlotJob, ax: Any, font: float) -> None:
    label = f"AP = {job.scores['average_precision']:.2f}"
    ax.step(job.curves["recall"], job.curves["precision"], where="post", label=label)
    ax.set_xlabel(f"Recall (positive label: {job.pos_label})", fontsize=font)
    ax.set_ylabel(f"Precision (positive label: {job.pos_label})", fontsize=font)
    ax.legend(loc="lower left", fontsize=font)


def _store(png_dir: Path, artifact_uri: str, tracking_uri: str) -> None:
    """Put the PNGs in the run's artifacts: a local artifact store is a directory (what MLflow's local
    repository does: copy the files in); anything else through MLflow's artifact repositories."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        target = Path(unquote(parsed.path))
        target.mkdir(parents=True, exist_ok=True)
        for png in png_dir.iterdir():
            shutil.copyfile(png, target / png.name)
        return
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    mlflow.set_tracking_uri(tracking_uri)  # mlflow-artifacts:/ URIs are resolved against the tracking server
    get_artifact_repository(artifact_uri).log_artifacts(str(png_dir))


def serve(lines: Iterator[str], answer: Callable[[str], None]) -> None:
    """The helper's loop: draw and store each job; answer each sync with the errors since the last one."""
    errors: list[str] = []
    for line in lines:
        message = json.loads(line)
        if "sync" in message:
            answer(json.dumps({"sync": message["sync"], "errors": errors}))
            errors = []
            continue
        directory = Path(message["dir"])
        try:
            job = PlotJob.load(directory)
            png_dir = directory / "png"
            png_dir.mkdir()
            draw(job, png_dir)
            _store(png_dir, message["artifact_uri"], message["tracking_uri"])
        except Exception as exc:
            errors.append(f"plots not stored in {message.get('artifact_uri')}: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    with contextlib.suppress(OSError, AttributeError):  # background work: the kernel's cells go first
        os.nice(10)
    os.umask(0o077)  # the PNGs it stores in a local artifact store are the user's alone

    def answer(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    serve(iter(sys.stdin.readline, ""), answer)


if __name__ == "__main__":
    main()
