"""A throwaway PostgreSQL server for tests: a fresh cluster in a temp dir, on a free loopback port.

Reusable from any conftest: ``with postgres_server(tmpdir) as url: ...`` yields a SQLAlchemy URL
(``postgresql+psycopg://postgres@127.0.0.1:PORT/wolt_test``) and stops the server and removes the cluster on
exit. Needs Debian's ``postgresql`` package (or ``initdb``/``pg_ctl`` on PATH); when they are missing it raises
:class:`PostgresUnavailable` rather than letting tests skip silently. PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` user via ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends postgresql"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed, or the server did not start."""


def find_bindir() -> Path:
    """Directory with ``initdb`` and ``pg_ctl``: $PG_BINDIR, the newest Debian version, or PATH."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(
        (os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    candidates.append(os.path.dirname(on_path) if on_path else "")
    for d in candidates:
        if d and (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found; install them: {INSTALL_HINT} "
        "(or set PG_BINDIR)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise PostgresUnavailable(
            f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )


def _owned_dir(tmpdir: Path) -> Path:
    """A dir the server user can write; pytest's temp dirs are 0700 root, so fall back to the system temp."""
    base = Path(tmpdir) / "pg"
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return base
    shutil.chown(base, "postgres", "postgres")
    ok = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(base)], capture_output=True)
    if ok.returncode == 0 and len(str(base)) < 60:  # the socket path must stay under 107 bytes
        return base
    short = Path(tempfile.mkdtemp(prefix="wolt-pg-"))
    shutil.chown(short, "postgres", "postgres")
    return short


class PostgresServer:
    """One private cluster: ``start``/``stop`` may be called repeatedly (same port), e.g. to test an outage."""

    def __init__(
        self,
        tmpdir: Path | str,
        *,
        dbname: str = "wolt_test",
        fast: bool = True,
        also_listen: str | None = None,
        password_from: str | None = None,
    ) -> None:
        """``also_listen``: a second address (the test cluster's bridge), where clients from
        ``password_from`` (a CIDR: the pods) must log in with a password (``self.password``)."""
        self.bindir = find_bindir()
        self.root = _owned_dir(Path(tmpdir))
        self.data, self.sockets, self.logfile = self.root / "data", self.root / "s", self.root / "server.log"
        self.port = free_port()
        self.dbname = dbname
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"
        self.running = False
        listen = "127.0.0.1" + (f",{also_listen}" if also_listen else "")
        self.also_listen, self.password_from = also_listen, password_from
        self.password = f"pw-{os.urandom(8).hex()}" if password_from else None
        self._opts = f"-p {self.port} -k {self.sockets} -c listen_addresses={listen}"
        if fast:  # durability is irrelevant for a test cluster
            self._opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    def create(self) -> None:
        """initdb with trust auth, start, and create the database."""
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.sockets, "postgres", "postgres")
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        _run(_as_owner([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"]), "initdb")
        self.start()
        psql = [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        _run(
            [*psql, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{self.dbname}"'],
            "createdb",
        )
        if self.password_from:
            sql = f"ALTER USER postgres PASSWORD '{self.password}'"
            _run([*psql, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql], "set password")
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.password_from} scram-sha-256\n")
            _run(_as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "reload"]), "pg_ctl reload")

    def url_for(self, host: str) -> str:
        """The URL as a client at ``host``'s side sees it: with the password when it needs one."""
        auth = f"postgres:{self.password}" if self.password and host != "127.0.0.1" else "postgres"
        return f"postgresql+psycopg://{auth}@{host}:{self.port}/{self.dbname}"

    def start(self) -> None:
        pg_ctl = [
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            self._opts,
            "-l",
            str(self.logfile),
        ]
        try:
            _run(_as_owner([*pg_ctl, "-w", "-t", "60", "start"]), "pg_ctl start")
        except PostgresUnavailable as exc:
            tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise PostgresUnavailable(f"{exc}\n{tail}") from None
        self.running = True

    def stop(self) -> None:
        if self.running:
            _run(
                _as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                "pg_ctl stop",
            )
            self.running = False

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(
    tmpdir: Path | str, *, dbname: str = "wolt_test", fast: bool = True, **options: str
) -> Iterator[PostgresServer]:
    """Like :func:`postgres_server` but yields the :class:`PostgresServer` (for stop/start); ``options`` as
    the server takes them (``also_listen``, ``password_from``)."""
    server = PostgresServer(tmpdir, dbname=dbname, fast=fast, **options)
    try:
        server.create()
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def postgres_server(tmpdir: Path | str, *, dbname: str = "wolt_test", fast: bool = True) -> Iterator[str]:
    """Start a private PostgreSQL on 127.0.0.1 with trust auth; yield its SQLAlchemy URL; stop it on exit.

    ``fast`` turns off fsync and synchronous commit: durability is irrelevant for a test cluster.
    """
    with running_postgres(tmpdir, dbname=dbname, fast=fast) as server:
        yield server.url


def new_database(server_url: str) -> str:
    """A fresh, empty database on the server of ``server_url``; its URL (tests never see each other's tables)."""
    import uuid

    from sqlalchemy import create_engine

    name = f"t_{uuid.uuid4().hex[:16]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name
