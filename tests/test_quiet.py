"""MLflow's routine stderr goes into the card's collapsed log; the user's real warnings are still shown, once;
a new embedded store is made from the schema script, identical to what MLflow's migrations make."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

CELL = """
import warnings
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=500).fit(X, y)
for _ in range(3):
    warnings.warn("check the class balance", UserWarning)
"""


def test_cards_keep_mlflow_stderr_in_a_collapsed_log(shell, capsys, recwarn) -> None:
    card = shell.run_cell_magic("wolt_experiment", "quiet --run-name one", CELL)
    assert card.status == "FINISHED" and card.models  # autologged
    shell.run_line_magic("wolt_register", "model --name quiet-m --input-example X")
    second = shell.run_line_magic("wolt_register", "model --name quiet-m --input-example X")
    err = capsys.readouterr().err
    # nothing routine reached stderr: not MLflow's registry chatter, not library FutureWarnings
    assert "Created version" not in err and "already exists" not in err and "FutureWarning" not in err
    # the user's own warning is shown (pytest records what would be printed), once; no routine one is
    shown = [str(w.message) for w in recwarn]
    assert shown.count("check the class balance") == 1, shown
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert any("Registered model 'quiet-m' already exists" in line for line in second.log)
    assert any("Created version '2' of model 'quiet-m'" in line for line in second.log)
    html = second._repr_html_()
    assert "<details class='wolt-log'><summary>log (" in html and "<details open" not in html
    assert "Created version &#x27;2&#x27;" in html
    assert "check the class balance" in "\n".join(card.log)  # kept in the log as well


def test_slow_path_store_creation_is_logged_and_schema_matches(
    shell, wolt_home, monkeypatch, tmp_path
) -> None:
    from wolt_jupyter import mlflow_schema

    # no schema script for this MLflow (as after an upgrade): MLflow's own migrations make the store, their
    # "Creating initial MLflow database tables..." goes to the card's log, and the schema is kept in the cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mlflow_schema, "HERE", tmp_path / "nothing-shipped")
    card = shell.run_cell_magic("wolt_experiment", "slow", "x = 1")
    assert any("Creating initial MLflow database tables" in line for line in card.log)
    cached = tmp_path / "cache" / "wolt_jupyter" / f"mlflow-schema-{mlflow_schema.schema_key()}.sql"
    assert cached.is_file()

    # the shipped script makes the very schema MLflow's migrations make
    monkeypatch.undo()
    seeded = tmp_path / "seeded.db"
    assert mlflow_schema.seed(seeded) and oct(seeded.stat().st_mode & 0o777) == "0o600"
    migrated = tmp_path / "migrated.db"
    mlflow_schema.create_with_mlflow(migrated)
    assert _schema(seeded) == _schema(migrated)
    assert not mlflow_schema.seed(seeded)  # an existing store is never touched


def _schema(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        # a CHECK's IN list is rendered from a Python set by MLflow's migrations: its order follows the hash
        # seed, so each statement is compared as its sorted words
        rows = [
            (kind, name, table, sorted(re.findall(r"[\w.']+", sql or ""))) for kind, name, table, sql in rows
        ]
        return rows + conn.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        conn.close()


@pytest.mark.usefixtures("wolt_home")
def test_shipped_schema_script_is_for_the_installed_mlflow() -> None:
    from wolt_jupyter import mlflow_schema

    key = mlflow_schema.schema_key()
    assert (mlflow_schema.HERE / f"{key}.sql").is_file(), (
        "MLflow's migrations changed: run `python -m wolt_jupyter.mlflow_schema` and commit the new script"
    )
