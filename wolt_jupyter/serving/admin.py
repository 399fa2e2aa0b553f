"""The deployment's bearer tokens, kept in the state dir with mode 0600.

``admin.token``: the local backend, the CLI and the notebook read it to change traffic, promote or roll back a
running deployment. ``feedback.token``: a separate, narrower credential that only lets its holder send ground
truth (``POST /v2/models/{m}/feedback``), so a labelling job need not hold the admin token. Anybody else on
the machine gets 401.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from pathlib import Path

from wolt_jupyter.private import private_dir

TOKEN_FILE = "admin.token"
FEEDBACK_TOKEN_FILE = "feedback.token"


def deployment_dir(state_dir: Path, deployment: str) -> Path:
    """``<state_dir>/deployments/<name>``: the runtime's files for one deployment."""
    return Path(state_dir) / "deployments" / deployment


def token_path(state_dir: Path, deployment: str, file: str = TOKEN_FILE) -> Path:
    return deployment_dir(state_dir, deployment) / file


def ensure_token(state_dir: Path, deployment: str, file: str = TOKEN_FILE) -> str:
    """Read a token of the deployment, creating it (0600, never world-readable even briefly) if absent."""
    path = token_path(state_dir, deployment, file)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        for _ in range(20):  # another process may have created it a moment ago and still be writing
            token = path.read_text().strip()
            if token:
                return token
            time.sleep(0.05)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_token(state_dir: Path, deployment: str, file: str = TOKEN_FILE) -> str:
    return token_path(state_dir, deployment, file).read_text().strip()


def authorized(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())
