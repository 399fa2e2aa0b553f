"""%wolt_register and %wolt_models on the embedded store and a real MLflow server; models load back."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pytest

from helpers import shown, unique

FIT = """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
clf = LogisticRegression(max_iter=500).fit(X, y)
"""


def test_register_last_run_with_champion_alias_and_load_it_back(shell, store: str) -> None:
    name = unique("iris")
    assert shell.run_cell(f"%%wolt_experiment {unique('exp')}\n{FIT}").success
    run_id = shell.last_execution_result.result.run_id
    card = shell.run_line_magic("wolt_register", f"--name {name} --alias champion --alias prod")
    assert card.name == name and card.version == "1" and card.aliases == ["champion", "prod"]
    assert card.run_id == run_id and card.status == "READY"
    assert "petal length (cm): double" in card.signature_inputs  # autologged signature
    assert card.uri == f"models:/{name}/1" and name in card._repr_html_()

    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    X = shell.user_ns["X"]
    assert np.array_equal(model.predict(X.head(20)), shell.user_ns["clf"].predict(X.head(20)))


def test_register_variable_with_input_example_then_move_alias(shell, store: str) -> None:
    name = unique("iris")
    shell.run_cell(FIT)
    first = shell.run_line_magic("wolt_register", f"clf --name {name} --alias champion --input-example X")
    assert first.version == "1" and first.run_id
    assert "sepal width (cm): double" in first.signature_inputs
    second = shell.run_line_magic("wolt_register", f"clf --name {name} --alias champion --input-example X")
    assert second.version == "2" and second.aliases == ["champion"]

    table = shell.run_line_magic("wolt_models", name)
    assert list(table["version"]) == [2, 1]
    assert list(table["aliases"]) == ["champion", ""]  # the alias moved to the new version
    assert set(table.columns) >= {"name", "version", "aliases", "status", "run_id", "created"}
    everything = shell.run_line_magic("wolt_models", "")
    assert name in set(everything["name"])


def test_register_unfitted_or_unsupported_model_says_why(shell, store: str, capsys) -> None:
    shell.run_cell(
        "from sklearn.linear_model import LogisticRegression\nraw = LogisticRegression()\nobj = object()"
    )
    shell.run_cell("%wolt_register raw --name m1")
    shell.run_cell("%wolt_register obj --name m1")
    out = shown(capsys)
    assert "not fitted: call .fit(X, y)" in out
    assert "cannot log a builtins.object" in out
    assert "Traceback" not in out


def test_run_without_a_model_cannot_be_registered(shell, store: str, capsys) -> None:
    shell.run_cell(f"%%wolt_experiment {unique('exp')} --no-autolog\nx = 1\n")
    shell.run_cell("%wolt_register --name m2")
    out = shown(capsys)
    assert "logged no model" in out and "Traceback" not in out


def test_unknown_model_is_named(shell, store: str, capsys) -> None:
    result = shell.run_cell("%wolt_models does-not-exist")
    out = shown(capsys)
    assert not result.success
    assert "no registered model named 'does-not-exist'" in out and "Traceback" not in out


def test_python_api_register_and_models(wolt_home) -> None:
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = np.arange(20, dtype=float).reshape(10, 2)
    model = LinearRegression().fit(X, X.sum(axis=1))
    card = wolt_jupyter.register(model, name="lin", aliases=["champion"], input_example=X[:2])
    frame = wolt_jupyter.models()
    assert frame.loc[0, "name"] == "lin" and frame.loc[0, "aliases"] == "champion"
    assert card.signature_inputs.startswith("tensor(float64")
    with pytest.raises(wolt_jupyter.errors.InvalidArgument, match="not both"):
        wolt_jupyter.register(model, name="lin", run_id="abc")


def test_pin_resolves_aliases_and_latest_and_rejects_missing(wolt_home) -> None:
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter.errors import NotFound
    from wolt_jupyter.registry import download_uri, pin

    X = np.arange(8, dtype=float).reshape(4, 2)
    for _ in range(2):
        wolt_jupyter.register(LinearRegression().fit(X, X[:, 0]), name="pinme")
    wolt_jupyter.registry.mlflow_client().set_registered_model_alias("pinme", "champion", "1")
    assert pin("models:/pinme@champion") == "models:/pinme/1"
    assert pin("models:/pinme/latest") == "models:/pinme/2"
    assert pin("models:/pinme/2") == "models:/pinme/2"
    assert pin("runs:/abc/model") == "runs:/abc/model"
    for missing in ("models:/pinme@nobody", "models:/pinme/9", "models:/ghost/1"):
        with pytest.raises(NotFound):
            pin(missing)
    assert download_uri("models:/pinme/1").startswith((wolt_home.resolve() / "artifacts").as_uri())
