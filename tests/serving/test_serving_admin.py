"""The admin token file: created once with mode 0600, reused by later starts, checked in constant time."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from wolt_jupyter.serving.admin import authorized, ensure_token, token_path


def test_token_is_private_stable_and_checked(tmp_path: Path) -> None:
    token = ensure_token(tmp_path, "dep")
    path = token_path(tmp_path, "dep")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(token) >= 32
    assert ensure_token(tmp_path, "dep") == token  # a restart keeps the token clients already have
    assert ensure_token(tmp_path, "other") != token  # one token per deployment
    path.chmod(0o644)
    ensure_token(tmp_path, "dep")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # loosened permissions are tightened again
    assert authorized(f"Bearer {token}", token)
    for header in (None, "", token, f"Bearer {token}x", "Basic abc", f"bearer{token}"):
        assert not authorized(header, token)


def test_empty_token_file_gets_a_token(tmp_path: Path) -> None:
    path = token_path(tmp_path, "dep")
    path.parent.mkdir(parents=True)
    path.write_text("")
    token = ensure_token(tmp_path, "dep")
    assert token and path.read_text().strip() == token
