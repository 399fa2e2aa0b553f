"""The one place that points MLflow at the configured store and turns its failures into one-line errors.

MLflow's HTTP client retries an unreachable server for minutes with exponential backoff; a notebook user
wants to hear within seconds that the server named in ``MLFLOW_TRACKING_URI`` is down. So before talking to
a server we probe ``/health`` once with a short timeout (cached briefly), and any connection failure that
still escapes MLflow is translated into :class:`TrackingUnavailable`.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from wolt_jupyter.config import Settings, mask_url, settings
from wolt_jupyter.errors import InvalidArgument, NotFound, TrackingUnavailable
from wolt_jupyter.private import private_dir, private_file, private_tree

if TYPE_CHECKING:
    from mlflow import MlflowClient

PROBE_TIMEOUT_S = 3.0
_PROBE_TTL_S = 10.0
_probed: dict[str, float] = {}  # tracking URI -> monotonic time of the last successful probe


def _unavailable(s: Settings, reason: object) -> TrackingUnavailable:
    hint = "start it, or unset MLFLOW_TRACKING_URI to use the embedded store"
    return TrackingUnavailable(
        f"cannot reach the MLflow tracking server at {mask_url(s.tracking_uri)}: {reason} ({hint})"
    )


def probe(s: Settings) -> None:
    """Fail fast with one readable line when a tracking server does not answer."""
    if not s.tracking_is_server:
        return
    now = time.monotonic()
    if now - _probed.get(s.tracking_uri, -_PROBE_TTL_S) < _PROBE_TTL_S:
        return
    url = s.tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as resp:
            resp.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise _unavailable(s, f"HTTP {exc.code} from /health") from None
        # a proxy or auth layer answering 401/403/404 still means a server is there; MLflow will say more
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _unavailable(s, mask_url(str(reason))) from None
    except (ValueError, http.client.HTTPException):  # InvalidURL: e.g. an unencoded "@" in the password
        # its message quotes the piece it could not parse (a piece of the password): never shown
        raise _unavailable(
            s, "the URL is malformed (percent-encode special characters of the user and password)"
        ) from None
    _probed[s.tracking_uri] = now


def configure() -> Settings:
    """Read the settings, make the state dir, point MLflow's fluent API at the store. Call before any MLflow use."""
    import mlflow

    s = settings()
    private_dir(s.home)  # the embedded mlflow.db and artifacts live here: the notebook user's alone
    if s.embedded:
        from wolt_jupyter.mlflow_schema import seed

        seed(s.home / "mlflow.db")  # the schema as one script, not MLflow's ~70 migrations
        private_file(s.home / "mlflow.db")
    if s.artifact_root.is_relative_to(s.home):
        private_dir(s.artifact_root)
    probe(s)
    mlflow.set_tracking_uri(s.tracking_uri)
    mlflow.set_registry_uri(s.registry_uri)
    return s


def mlflow_client(s: Settings | None = None) -> MlflowClient:
    """An MLflow client on the configured tracking and registry stores (not :mod:`wolt_jupyter.client`,
    the V2 inference client)."""
    from mlflow import MlflowClient

    s = s or configure()
    return MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.registry_uri)


def private_artifacts(s: Settings, artifact_uri: str | None) -> None:
    """Make the experiment folder holding ``artifact_uri`` private (0700/0600), when it is in the local
    artifact store under the state dir: MLflow writes runs' artifacts and logged models there with the
    kernel's umask (0644). Called after each write of ours (a run's end, a registration)."""
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri or "")
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return
    root = s.artifact_root.resolve()
    path = Path(unquote(parsed.path)).resolve()
    if not root.is_relative_to(s.home.resolve()) or not path.is_relative_to(root) or path == root:
        return
    with suppress(OSError):  # a file removed meanwhile, a read-only store: nothing to hide there then
        private_tree(root / path.relative_to(root).parts[0])


@contextmanager
def translated_errors(s: Settings | None = None) -> Iterator[None]:
    """Turn MLflow's exceptions into the project's one-line errors; leave everything else alone."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        message = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(message) from None
        if code in ("INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"):
            raise InvalidArgument(message) from None
        if s is not None and s.tracking_is_server and _from_transport(exc):
            raise _unavailable(s, "connection failed") from None
        raise
    except OSError as exc:  # requests' ConnectionError is an OSError
        if s is not None and s.tracking_is_server:
            raise _unavailable(s, exc.__class__.__name__) from None
        raise


def _from_transport(exc: BaseException) -> bool:
    """Whether MLflow raised ``exc`` while handling a transport failure (requests' errors are OSErrors).

    MLflow wraps a failed request in an MlflowException raised inside the ``except``: the cause is on the
    chain, which is checked by type rather than by the wording of the message.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def ui_base(s: Settings) -> str | None:
    """Base URL of the MLflow UI, when the tracking store is a server (an embedded store has no UI running)."""
    return mask_url(s.tracking_uri.rstrip("/")) if s.tracking_is_server else None
