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


@contextlib.contextmanager
def postgres_server(tmpdir: Path | str, *, dbname: str = "wolt_test", fast: bool = True) -> Iterator[str]:
    """Start a private PostgreSQL on 127.0.0.1 with trust auth; yield its SQLAlchemy URL; stop it on exit.

    ``fast`` turns off fsync and synchronous commit: durability is irrelevant for a test cluster.
    """
    bindir = find_bindir()
    root = _owned_dir(Path(tmpdir))
    data, sockets, logfile = root / "data", root / "s", root / "server.log"
    port = free_port()
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(sockets, "postgres", "postgres")
    _run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        ),
        "initdb",
    )
    opts = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    if fast:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    started = False
    try:
        try:
            _run(
                _as_owner(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-o",
                        opts,
                        "-l",
                        str(logfile),
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                ),
                "pg_ctl start",
            )
        except PostgresUnavailable as exc:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise PostgresUnavailable(f"{exc}\n{tail}") from None
        started = True
        _run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname]
            if (bindir / "createdb").is_file()
            else [
                str(bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-c",
                f"CREATE DATABASE {dbname}",
            ],
            "createdb",
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{dbname}"
    finally:
        if started:
            subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
