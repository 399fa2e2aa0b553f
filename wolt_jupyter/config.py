"""Settings: one object, read from the environment and an optional TOML file.

Precedence, highest first: environment variables, ``<home>/config.toml``, embedded defaults. The embedded
defaults need no server at all: MLflow runs on a SQLite file under the state dir.

This module imports nothing heavy; ``%load_ext wolt_jupyter`` reads it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from wolt_jupyter._display import Card
from wolt_jupyter.errors import ConfigError
from wolt_jupyter.masking import MASK as _MASK
from wolt_jupyter.masking import mask_url as mask_url  # the one masking function, long imported from here
from wolt_jupyter.untrusted import shown_value

HOME_ENV = "WOLT_JUPYTER_HOME"
CONFIG_FILE = "config.toml"
# The deploy targets: name -> the module whose Backend subclass registers that name. The one list: the magic's
# --target choices, the MLflow plugin's target names (``wolt-<name>``), the settings' default_target check
# and the backend lookup all derive from it (the plugin's entry points in pyproject.toml are checked against
# it by tests/test_packaging.py).
TARGET_MODULES = {
    "local": "wolt_jupyter.backends.local",
    "kubernetes": "wolt_jupyter.backends.kubernetes",
    "seldon": "wolt_jupyter.backends.kubernetes",
    "kserve": "wolt_jupyter.backends.kubernetes",
}
TARGETS = tuple(TARGET_MODULES)


def unknown_target(target: str, *, prefix: str = "") -> str:
    """The one line for a target name not in the table, listing the names that are."""
    return f"unknown target {shown_value(target)}; choose one of {', '.join(prefix + t for t in TARGETS)}"


# setting name -> environment variable that overrides it
_ENV = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "registry_uri": "MLFLOW_REGISTRY_URI",
    "default_target": "WOLT_DEFAULT_TARGET",
    "prometheus_url": "WOLT_PROMETHEUS_URL",
    "namespace": "WOLT_NAMESPACE",
    "default_experiment": "WOLT_DEFAULT_EXPERIMENT",
    "response_store_url": "WOLT_RESPONSE_STORE_URL",
    "response_max_age": "WOLT_RESPONSE_MAX_AGE",
    "response_max_bytes": "WOLT_RESPONSE_MAX_BYTES",
    "response_rollup_max_age": "WOLT_RESPONSE_ROLLUP_MAX_AGE",
    "kubeconfig": "KUBECONFIG",
    "kube_context": "WOLT_KUBE_CONTEXT",
    "runtime_image": "WOLT_RUNTIME_IMAGE",
    "cluster_tracking_uri": "WOLT_CLUSTER_TRACKING_URI",
    "cluster_response_store_url": "WOLT_CLUSTER_RESPONSE_STORE_URL",
    "pod_monitor": "WOLT_POD_MONITOR",
    "service_account": "WOLT_SERVICE_ACCOUNT",
    "request_logger_url": "WOLT_REQUEST_LOGGER_URL",
    "unreachable_artifacts": "WOLT_UNREACHABLE_ARTIFACTS",
}
# setting name -> what it means, for the settings reference the documentation site generates from this module
# (tests/test_docs.py checks every field of Settings has a line here)
SETTING_HELP = {
    "home": "the state dir: embedded MLflow store, deployments, response logs, tokens (0700)",
    "tracking_uri": "MLflow tracking; default `sqlite:///<home>/mlflow.db` (embedded, no server)",
    "registry_uri": "MLflow model registry; default: the tracking URI",
    "artifact_root": "where the embedded store keeps artifacts; default `<home>/artifacts` (embedded store only)",
    "default_target": "deploy target when none is given: `local`, `kubernetes`, `seldon` or `kserve`",
    "default_experiment": "experiment a model variable is logged in when none is named",
    "prometheus_url": "Prometheus the monitoring panel reads; none: it reads the response log",
    "namespace": "Kubernetes namespace of the cluster targets",
    "response_store_url": "the response store; default SQLite under `<home>/responses/`. A new deployment's "
    "record keeps the store it writes to, and readers follow the record",
    "response_max_age": "response-log retention by age, per deployment (`none`: unbounded); a spec's "
    "`logging.retention` wins",
    "response_max_bytes": "response-log retention by size on disk, per deployment (`none`: unbounded); a "
    "spec's `logging.retention` wins",
    "response_rollup_max_age": "how long the monitoring panel's per-second counts are kept",
    "kubeconfig": "kubeconfig file; default `~/.kube/config`",
    "kube_context": "kubeconfig context; default its current context",
    "runtime_image": "the runtime image the `kubernetes` target runs; default "
    "`wolt-jupyter-runtime:<version>` (the repository's Dockerfile)",
    "cluster_tracking_uri": "MLflow as pods reach it; default `tracking_uri` when that is a server",
    "cluster_response_store_url": "the response store as the `kubernetes` target's pods reach it (e.g. a "
    "Service name; sent in the `<name>-credentials` Secret); default `response_store_url` when that is a "
    "server. A logging deploy is refused when neither names a PostgreSQL server the pods reach",
    "pod_monitor": "`true`: the `kubernetes` target adds a PodMonitor (needs the Prometheus operator)",
    "service_account": "the account cluster pods (and Seldon's and KServe's model download) run as",
    "request_logger_url": "where Seldon's and KServe's request logger sends CloudEvents; default: the "
    "operator's",
    "unreachable_artifacts": "`warn` or `refuse` a cluster deploy whose model artifacts are files on this "
    "machine",
}
_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
UNREACHABLE_ARTIFACTS = ("warn", "refuse")
# environment variables that are credentials: shown only masked
SECRET_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "WOLT_PROMETHEUS_TOKEN")


@dataclass(frozen=True, repr=False)
class Settings(Card, title="wolt-jupyter settings", css_class="wolt-config"):
    """The effective settings. Build with :func:`settings`; values are plain strings and paths."""

    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: Path
    default_target: str = "local"
    default_experiment: str = "wolt-jupyter"
    prometheus_url: str | None = None
    namespace: str = "default"
    response_store_url: str | None = None
    # response-log retention per deployment when its spec says nothing (logging.retention); "none": unbounded
    response_max_age: str = "14d"
    response_max_bytes: str = "5GB"
    response_rollup_max_age: str = "90d"  # the panel's per-second counts outlive the log
    kubeconfig: str | None = None
    kube_context: str | None = None
    runtime_image: str | None = None  # default: the image the Dockerfile builds for this version
    cluster_tracking_uri: str | None = None  # MLflow as pods reach it (default: tracking_uri if a server)
    # the response store as the kubernetes target's pods reach it (default: response_store_url if a server)
    cluster_response_store_url: str | None = None
    pod_monitor: bool = False  # kubernetes target: also a PodMonitor (needs the Prometheus operator)
    service_account: str | None = None  # cluster pods (and Seldon/KServe model download) run as this account
    request_logger_url: str | None = None  # Seldon/KServe request logger sink; None: the operator's default
    unreachable_artifacts: str = "warn"  # cluster targets, model artifacts on this machine: warn or refuse
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def embedded(self) -> bool:
        """True when MLflow runs in-process on the SQLite file under ``home`` (no server)."""
        return self.tracking_uri == embedded_tracking_uri(self.home)

    @property
    def tracking_is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def cluster_tracking(self) -> str | None:
        """MLflow as cluster pods reach it: ``cluster_tracking_uri``, else ``tracking_uri`` when a server."""
        return self.cluster_tracking_uri or (self.tracking_uri if self.tracking_is_server else None)

    def cluster_response_store(self, notebook_url: str | None) -> str | None:
        """The response store as the kubernetes target's pods reach it: ``cluster_response_store_url``, else
        ``notebook_url`` (the store the deployment's record names) when that is a server URL."""
        return self.cluster_response_store_url or (notebook_url if is_server_url(notebook_url) else None)

    def as_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """Settings as a dict for display; URLs masked and secrets shown only as set/unset."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            if masked and isinstance(value, str):
                value = mask_url(value)
            out[f.name] = value
        for name in SECRET_ENV:
            if os.environ.get(name):
                out[name] = _MASK if masked else os.environ[name]
        return out

    def to_dict(self) -> dict[str, Any]:
        """What a card or the server shows: :meth:`as_dict`, masked."""
        return self.as_dict()

    def _rows(self) -> list[tuple[str, object]]:
        return [
            (k, f"{v}  ({self.sources[k]})" if self.sources.get(k) else v) for k, v in self.as_dict().items()
        ]


def is_server_url(url: str | None) -> bool:
    """True for a database URL naming a host (``postgresql://u@db:5432/x``); False for a file (SQLite), a URL
    without a host (a Unix socket of this machine) or nothing."""
    if not url or url.startswith("sqlite"):
        return False
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


def default_home() -> Path:
    return Path.home() / ".wolt_jupyter"


def embedded_tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    # allow both a flat file and a [wolt_jupyter] table
    data = data.get("wolt_jupyter", data)
    known = {f.name for f in fields(Settings)} - {"home", "sources"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def _boolean(value: Any, name: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    parsed = _BOOLEANS.get(str(value).strip().lower())
    if parsed is None:
        raise ConfigError(f"{name} {value!r} ({source}) is not true or false")
    return parsed


def settings() -> Settings:
    """Read the settings now (cheap: no caching, so a changed environment is honoured at once)."""
    home = Path(os.environ.get(HOME_ENV) or default_home()).expanduser().resolve()
    file_values = _read_file(home / CONFIG_FILE)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {"home": "environment" if os.environ.get(HOME_ENV) else "default"}
    for name in (*_ENV, "artifact_root"):
        env_name = _ENV.get(name)
        if env_name and os.environ.get(env_name):
            values[name], sources[name] = os.environ[env_name], f"${env_name}"
        elif name in file_values:
            values[name], sources[name] = file_values[name], str(home / CONFIG_FILE)
    tracking_uri = values.pop("tracking_uri", None) or embedded_tracking_uri(home)
    sources.setdefault("tracking_uri", "embedded default")
    registry_uri = values.pop("registry_uri", None) or tracking_uri
    sources.setdefault("registry_uri", sources["tracking_uri"])
    artifact_root = Path(values.pop("artifact_root", None) or home / "artifacts").expanduser()
    if "pod_monitor" in values:
        values["pod_monitor"] = _boolean(values["pod_monitor"], "pod_monitor", sources["pod_monitor"])
    s = Settings(
        home=home,
        tracking_uri=str(tracking_uri),
        registry_uri=str(registry_uri),
        artifact_root=artifact_root,
        sources=sources,
        **values,
    )
    if s.unreachable_artifacts not in UNREACHABLE_ARTIFACTS:
        raise ConfigError(
            f"unreachable_artifacts {s.unreachable_artifacts!r} ({sources.get('unreachable_artifacts')}) "
            f"is not one of {', '.join(UNREACHABLE_ARTIFACTS)}"
        )
    if s.default_target not in TARGETS:
        raise ConfigError(
            f"default_target {s.default_target!r} ({sources.get('default_target')}) is not one of {', '.join(TARGETS)}"
        )
    return s
