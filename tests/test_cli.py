from __future__ import annotations

import numpy as np

from wolt_jupyter.cli import main


def test_config_prints_effective_settings(wolt_home, capsys) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert f"sqlite:///{wolt_home.resolve()}/mlflow.db" in out and "embedded default" in out


def test_models_lists_registered_versions(wolt_home, capsys) -> None:
    assert main(["models"]) == 0
    assert "no registered models yet" in capsys.readouterr().out

    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = np.arange(8, dtype=float).reshape(4, 2)
    wolt_jupyter.register(LinearRegression().fit(X, X[:, 0]), name="cli-model", aliases=["champion"])
    assert main(["models", "cli-model"]) == 0
    out = capsys.readouterr().out
    assert "cli-model" in out and "champion" in out
    assert main(["models", "absent"]) == 1
    assert "no registered model named 'absent'" in capsys.readouterr().err
