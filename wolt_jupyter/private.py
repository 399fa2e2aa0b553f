"""Private state: the state dir and everything under it is the notebook user's alone.

The state dir holds the response log (every input and output), specs, runtime logs, tokens and the embedded
MLflow store, so directories are 0700 and files 0600, whatever the process umask is. Only the notebook user
(and the runtimes it starts, running as that user) read them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create ``path`` (and missing parents, each 0700); with ``tighten`` an existing one of ours becomes 0700.

    A shared directory (sticky, like ``/tmp``) or another user's is never changed.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
    st = path.stat()
    if (
        (tighten or missing)
        and stat.S_IMODE(st.st_mode) != DIR_MODE
        and st.st_uid == os.getuid()
        and not st.st_mode & stat.S_ISVTX
    ):
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing (never readable by others, even briefly) and make it 0600.

    An existing file is changed by path only, never opened: closing any descriptor of a SQLite database
    drops every POSIX lock this process holds on it, which would break the writer's open connections.
    """
    path = Path(path)
    private_dir(path.parent, tighten=False)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) != FILE_MODE and st.st_uid == os.getuid():
            os.chmod(path, FILE_MODE)
    return path


def open_private(path: Path, mode: str = "ab") -> IO:
    """``open(path, mode)`` for a file that is created (or tightened to) 0600 first, e.g. a runtime log."""
    private_file(path)
    return open(path, mode)  # the caller closes it (a ``with`` block)


def private_tree(root: Path) -> Path:
    """Every directory under ``root`` (``root`` too) 0700 and every file 0600: for what a library writes with
    the process umask (MLflow's local artifact store, downloaded model files). Symlinks and files of other
    users are left alone."""
    root = Path(root)
    uid = os.getuid()

    def tighten(path: str, want: int) -> None:
        try:
            st = os.lstat(path)
        except OSError:  # gone meanwhile
            return
        if stat.S_ISLNK(st.st_mode) or st.st_uid != uid or stat.S_IMODE(st.st_mode) == want:
            return
        os.chmod(path, want)

    if not root.is_dir():
        if root.is_file():
            tighten(str(root), FILE_MODE)
        return root
    tighten(str(root), DIR_MODE)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            tighten(os.path.join(folder, d), DIR_MODE)
        for f in files:
            tighten(os.path.join(folder, f), FILE_MODE)
    return root
