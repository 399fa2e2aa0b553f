"""%%wolt_experiment and %wolt_log in a real IPython shell, on the embedded store and a real MLflow server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from wolt_jupyter.autolog_plots import wait_for_plots

from helpers import shown, unique

TRAIN = """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
clf = LogisticRegression(max_iter={max_iter}).fit(X, y)
score = clf.score(X, y)
score
"""


def client(store: str) -> MlflowClient:
    return MlflowClient(tracking_uri=store, registry_uri=store)


def test_experiment_cell_logs_params_metrics_model_and_the_cell(shell, store: str, capsys) -> None:
    name = unique("exp")
    cell = TRAIN.format(max_iter=321)
    result = shell.run_cell(f"%%wolt_experiment {name} --run-name first --tag team=search\n{cell}")
    assert result.success, result.error_in_exec
    card = result.result
    assert card.status == "FINISHED" and card.run_name == "first" and card.experiment_name == name
    assert card.params["max_iter"] == "321"  # autologged from the estimator
    assert card.metrics["training_accuracy_score"] > 0.9
    assert len(card.models) == 1
    assert shell.user_ns["score"] > 0.9  # the cell ran in the user namespace
    assert str(round(shell.user_ns["score"], 4)) in capsys.readouterr().out  # last expression displayed

    run = client(store).get_run(card.run_id)
    assert run.data.tags["team"] == "search"
    # three classes: the confusion matrix only, drawn by the plot helper after the cell
    assert wait_for_plots() == []
    artifacts = [a.path for a in client(store).list_artifacts(card.run_id)]
    assert "cell.py" in artifacts
    assert "training_confusion_matrix.png" in artifacts and "training_roc_curve.png" not in artifacts
    local = client(store).download_artifacts(card.run_id, "cell.py")
    assert "LogisticRegression(max_iter=321)" in Path(local).read_text()
    # card renders both ways; long parameter lists are cut on the card, kept whole on the object
    assert card.run_id in repr(card) and card.run_id in card._repr_html_()
    assert len(card.params) > 12 and f"(+{len(card.params) - 12} more)" in repr(card)
    if store.startswith("http"):
        assert card.ui_url == f"{store}/#/experiments/{card.experiment_id}/runs/{card.run_id}"
        assert card.ui_url in card._repr_html_()
    else:
        assert card.ui_url is None


def test_no_autolog_logs_no_model(shell, store: str) -> None:
    result = shell.run_cell(f"%%wolt_experiment {unique('exp')} --no-autolog\n{TRAIN.format(max_iter=100)}")
    assert result.success
    assert result.result.models == [] and result.result.params == {}


def _requirements(card, name: str | None = None) -> list[str]:
    import mlflow

    model_id = next(m for m in card.models if name is None or m.startswith(f"{name} "))
    model_id = model_id.rsplit("(", 1)[1].rstrip(")")
    location = mlflow.get_logged_model(model_id).artifact_location
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/requirements.txt")
    return Path(path).read_text().split()


def test_models_record_the_flavors_pins_and_other_requirements_are_still_checked(shell) -> None:
    from importlib.metadata import version

    # autologged: the flavor's own pins of the installed versions, no inference, no mismatch warning
    result = shell.run_cell(f"%%wolt_experiment {unique('exp')}\n{TRAIN.format(max_iter=200)}")
    card = result.result
    assert _requirements(card) == [
        f"mlflow=={version('mlflow')}",
        f"cloudpickle=={version('cloudpickle')}",
        f"scikit-learn=={version('scikit-learn')}",
    ]
    assert not [line for line in card.log if "mismatches" in line]
    # a requirement the cell names that the environment does not satisfy still gets MLflow's warning
    logged = "import mlflow.sklearn\nmlflow.sklearn.log_model(clf, name='pinned', pip_requirements=['scikit-learn==0.0.1'])"
    card = shell.run_cell(f"%%wolt_experiment {unique('exp')}\n{TRAIN.format(max_iter=200)}\n{logged}").result
    assert "scikit-learn==0.0.1" in _requirements(card, "pinned")
    assert [line for line in card.log if "mismatches" in line and "scikit-learn" in line]


@pytest.mark.parametrize(
    ("requirement", "pins"),
    [
        ("scikit-learn=={sklearn}", True),
        (" scikit-learn == {sklearn} ", True),
        ("scikit-learn==0.0.1", False),
        ("scikit-learn>={sklearn}", False),
        ("scikit-learn[extra]=={sklearn}", False),
        ("no-such-distribution-here==1.0", False),
        ("-r requirements.txt", False),
    ],
)
def test_only_pins_of_installed_versions_skip_mlflows_check(requirement: str, pins: bool) -> None:
    from importlib.metadata import version

    from wolt_jupyter.tracking import pins_installed

    assert pins_installed(requirement.format(sklearn=version("scikit-learn"))) is pins


def test_exception_marks_run_failed_and_reraises(shell, store: str) -> None:
    name = unique("exp")
    result = shell.run_cell(f"%%wolt_experiment {name}\nx = 1\nraise ValueError('boom')\n")
    assert isinstance(result.error_in_exec, ValueError)
    assert shell.user_ns["x"] == 1
    exp = client(store).get_experiment_by_name(name)
    runs = client(store).search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_syntax_error_starts_no_run(shell, store: str, capsys) -> None:
    name = unique("exp")
    result = shell.run_cell(f"%%wolt_experiment {name}\nx = (\n")
    assert not result.success
    assert "syntax error" in shown(capsys)
    assert client(store).get_experiment_by_name(name) is None


def test_wolt_log_numbers_become_metrics_rest_params(shell, store: str) -> None:
    shell.run_cell(f"%%wolt_experiment {unique('exp')} --no-autolog\nx = 1\n")
    card = shell.run_line_magic("wolt_log", "accuracy=0.93 epochs=5 notes=baseline")
    assert card.metrics == {"accuracy": 0.93, "epochs": 5.0}
    assert card.params == {"notes": "baseline"}
    run = client(store).get_run(card.run_id)
    assert run.data.metrics["accuracy"] == 0.93 and run.data.params["notes"] == "baseline"


def test_git_commit_and_notebook_are_tagged(shell, store: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    shell.user_ns["__session__"] = str(repo / "analysis.ipynb")
    result = shell.run_cell(f"%%wolt_experiment {unique('exp')} --no-autolog\nx = 1\n")
    tags = client(store).get_run(result.result.run_id).data.tags
    assert tags["mlflow.source.name"] == str(repo / "analysis.ipynb")
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["mlflow.source.git.commit"] == head


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("wolt_log", "nothing to log"),
        ("wolt_log accuracy", "is not KEY=VALUE"),
        ("wolt_log accuracy=1", "no run to log to"),
        ("wolt_log x=1 --step two", "invalid int value"),
        ("wolt_register --name m --alias latest", "alias 'latest' is not allowed"),
        ("wolt_register", "required: --name"),
        ("wolt_register nothere --name m", "no variable 'nothere'"),
        ("wolt_register --name m", "nothing to register"),
        ("wolt_config extra", "takes no arguments"),
    ],
)
def test_wrong_arguments_are_usage_errors_with_the_fix(shell, line: str, expected: str, capsys) -> None:
    result = shell.run_cell(f"%{line}")
    out = shown(capsys)
    assert not result.success
    assert "UsageError" in out and expected in out
    assert "Traceback" not in out


def test_wrong_experiment_arguments(shell, capsys) -> None:
    result = shell.run_cell("%%wolt_experiment e --tag novalue\nx = 1\n")
    out = shown(capsys)
    assert not result.success and "'novalue' is not KEY=VALUE" in out and "Traceback" not in out
    assert "x" not in shell.user_ns  # the cell did not run


def test_python_api_same_as_magic(wolt_home: Path) -> None:
    import wolt_jupyter

    with wolt_jupyter.experiment(unique("api"), autolog=False) as run:
        run.log(loss=0.5, optimizer="adam")
    assert run.card.metrics == {"loss": 0.5} and run.card.params == {"optimizer": "adam"}
    assert wolt_jupyter.last_run().run_id == run.run_id
    # the embedded store keeps artifacts under the state dir, not in the working directory
    assert run.card.artifact_uri.startswith((wolt_home.resolve() / "artifacts").as_uri())
