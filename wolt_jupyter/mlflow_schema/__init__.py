"""A new embedded MLflow store in milliseconds instead of seconds.

MLflow creates a SQLite store by replaying every schema migration since its first release through alembic
(~70 of them: 4–6 s here, most of a first ``%%wolt_experiment``). The schema those migrations produce depends
only on the set of migrations, so it is kept as SQL text, named by a hash of the migration files' names:
a new store is that script run into a fresh file. The script shipped here was made by MLflow itself
(``python -m wolt_jupyter.mlflow_schema``); for an MLflow whose migrations differ, MLflow's own path
creates the store once and its schema is kept in the user's cache for the next new store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
from pathlib import Path

from wolt_jupyter.private import FILE_MODE, private_dir

HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


def _migrations_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    return path if path.is_dir() else None


def schema_key() -> str | None:
    """A name for the installed MLflow's schema: the hash of its migration files' names (cheap: one listdir)."""
    path = _migrations_dir()
    if path is None:
        return None
    names = sorted(n for n in os.listdir(path) if n.endswith(".py") and not n.startswith("__"))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16] if names else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wolt_jupyter"


def _script(key: str) -> str | None:
    for path in (HERE / f"{key}.sql", cache_dir() / f"mlflow-schema-{key}.sql"):
        try:
            return path.read_text()
        except OSError:
            continue
    return None


def dump(db: Path) -> str:
    """The schema (and the rows migrations insert, e.g. alembic's version) of a store, as one SQL script."""
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump()) + "\n"
    finally:
        conn.close()


def create_with_mlflow(db: Path) -> None:
    """What MLflow does for a new SQLite store (every migration); the slow path."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(f"sqlite:///{db}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _keep_in_cache(key: str, script: str) -> None:
    try:
        target = cache_dir()
        private_dir(target, tighten=False)
        fd, tmp = tempfile.mkstemp(dir=target, suffix=".sql")
        with os.fdopen(fd, "w") as fh:
            fh.write(script)
        os.replace(tmp, target / f"mlflow-schema-{key}.sql")
    except OSError as exc:  # a read-only home: the next new store takes the slow path again
        log.debug("cannot keep the MLflow schema in %s: %s", cache_dir(), exc)


def seed(db: Path) -> bool:
    """Create the embedded store ``db`` (0600) unless it exists; True when it was created here.

    The file appears whole or not at all (made aside, then hard-linked into place), so a kernel that finds it
    never sees a half-made schema, and of two kernels creating it at once one wins and the other uses it.
    """
    db = Path(db)
    if db.exists():
        return False
    key = schema_key()
    if key is None:
        return False
    fd, tmp_name = tempfile.mkstemp(dir=db.parent, prefix=".mlflow-", suffix=".db")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, FILE_MODE)
        script = _script(key)
        if script is not None:
            conn = sqlite3.connect(tmp)
            try:
                conn.executescript(script)
            finally:
                conn.close()
        else:
            tmp.unlink()
            create_with_mlflow(tmp)
            os.chmod(tmp, FILE_MODE)
            _keep_in_cache(key, dump(tmp))
        try:
            os.link(tmp, db)
        except FileExistsError:
            return False
        except OSError as exc:  # a file system without hard links: MLflow's own path makes the store
            log.debug("cannot link the new MLflow store into place: %s", exc)
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def main() -> None:
    """Write the installed MLflow's schema beside this module (run after upgrading MLflow)."""
    key = schema_key()
    if key is None:
        raise SystemExit("MLflow is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mlflow.db"
        create_with_mlflow(db)
        (HERE / f"{key}.sql").write_text(dump(db))
    print(HERE / f"{key}.sql")

