"""What every deploy target is: an abstract base class chosen by name, and the ``Deployment`` it returns.

A backend takes a *pinned* spec (every model URI a fixed version) and makes it run; the orchestration
(pinning, revisions, rollback) lives in :mod:`wolt_jupyter.deployments` and is the same for all targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wolt_jupyter._display import Card
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.masking import shown_manifests
from wolt_jupyter.spec import DeploymentSpec

Progress = Callable[[str], None]


@dataclass
class Plan:
    """What an apply would send and what was checked on the way; a dry run shows both."""

    manifests: list[dict[str, Any]]  # what the apply sends, but each Secret's values are "****"
    checks: list[str] = field(default_factory=list)  # each says whether it ran offline or asked the cluster
    warnings: list[str] = field(default_factory=list)  # e.g. model artifacts the cluster cannot read
    # the Secrets' values, by key: put in by the apply alone (render.with_credentials), never shown
    credentials: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def shown(self) -> list[dict[str, Any]]:
        """The manifests as any structure may hold them (a dry run's ``Deployment.manifests``, ``to_dict()``,
        the server's JSON): :func:`shown_manifests`."""
        return shown_manifests(self.manifests)


@dataclass(repr=False)
class Deployment(Card, title="Deployment", css_class="wolt-deployment-card"):
    """A deployment as it runs (or would run, for a dry run)."""

    name: str
    target: str
    status: str
    url: str | None = None  # V2 REST base URL
    grpc_url: str | None = None
    revision: int | None = None
    variants: list[dict[str, Any]] = field(default_factory=list)  # name, model, traffic, shadow
    namespace: str | None = None
    message: str | None = None
    manifests: list[dict[str, Any]] | None = None  # dry run: what would be applied, Secrets' values masked
    diff: str | None = None  # dry run: against what runs
    restarts: int | None = None  # local target: crashes the supervisor restarted the runtime after
    checks: list[str] = field(default_factory=list)  # dry run: the pre-apply checks and how each ran
    warnings: list[str] = field(default_factory=list)
    response_log: str | None = None  # local target: "12,345 rows, 3.2 MB (…), N removed by retention"
    response_store: str | None = None  # the store its runtimes write to, masked (from the deployment record)

    def __post_init__(self) -> None:
        if self.manifests is not None:  # a card never holds a Secret's values, however it was made
            self.manifests = shown_manifests(self.manifests)

    @classmethod
    def describe_variants(cls, spec: DeploymentSpec) -> list[dict[str, Any]]:
        return [
            {"name": v.name, "model": v.model, "traffic": None if v.shadow else v.traffic, "shadow": v.shadow}
            for v in spec.variants
        ]

    @property
    def _shown_diff(self) -> str:
        from wolt_jupyter.config import mask_url

        return mask_url(self.diff) or ""

    @property
    def manifests_yaml(self) -> str:
        """The manifests as shown (cards, dry-run output): Secret values and URL passwords masked."""
        import yaml

        from wolt_jupyter.config import mask_url

        shown = shown_manifests(self.manifests or [])
        return mask_url(yaml.safe_dump_all(shown, sort_keys=False)) or ""

    def as_row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "status": self.status,
            "url": self.url,
            "grpc": self.grpc_url,
            "revision": self.revision,
            "restarts": self.restarts,
            "variants": ", ".join(
                f"{v['name']}={'shadow' if v['shadow'] else str(v['traffic']) + '%'} ({v['model']})"
                for v in self.variants
            ),
            "response_log": self.response_log,
        }

    def _rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [
            ("deployment", f"{self.name} ({self.target}{', ' + self.namespace if self.namespace else ''})"),
            ("status", self.status + (f": {self.message}" if self.message else "")),
            ("url", self.url),
        ]
        if self.grpc_url:
            rows.append(("gRPC", self.grpc_url))
        rows.append(("revision", self.revision))
        if self.restarts is not None:
            rows.append(("restarts", self.restarts))
        for v in self.variants:
            weight = "shadow" if v["shadow"] else f"{v['traffic']}%"
            rows.append((f"variant {v['name']}", f"{weight}  {v['model']}"))
        if self.response_store:
            rows.append(("response store", self.response_store))
        if self.response_log:
            rows.append(("response log", self.response_log))
        rows.extend(("warning", w) for w in self.warnings)
        rows.extend(("checked", c) for c in self.checks)
        return rows

    def _html_details(self) -> str:
        from html import escape

        html = ""
        if self.manifests is not None:
            html += f"<details open><summary>manifests</summary><pre>{escape(self.manifests_yaml)}</pre></details>"
        if self.diff:
            html += f"<details><summary>diff against what runs</summary><pre>{escape(self._shown_diff)}</pre></details>"
        return html

    def _text_details(self) -> str:
        text = ""
        if self.manifests is not None:
            text += "\n---\n" + self.manifests_yaml
        if self.diff:
            text += "\n--- diff against what runs ---\n" + self._shown_diff
        return text


class Backend(ABC):
    """One deploy target. Subclasses register themselves by ``target`` name."""

    target: ClassVar[str]
    registry: ClassVar[dict[str, type[Backend]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "target", None):
            Backend.registry[cls.target] = cls

    @abstractmethod
    def render(self, spec: DeploymentSpec) -> list[dict[str, Any]]:
        """What would be applied for ``spec`` (manifests, or the local runtime's launch description)."""

    @abstractmethod
    def apply(
        self, spec: DeploymentSpec, revision: int, *, wait: bool = True, progress: Progress | None = None
    ) -> Deployment:
        """Make ``spec`` run (create, or change what runs); wait until ready unless ``wait`` is false."""

    @abstractmethod
    def status(self, name: str) -> Deployment:
        """What runs now."""

    @abstractmethod
    def delete(self, name: str) -> dict[str, Any] | None:
        """Stop and remove it; not an error when it is already gone. A target may say what happened (the
        local runtime's exit summary)."""

    def revert(  # noqa: B027 - a default no-op
        self, name: str, previous: DeploymentSpec | None, revision: int | None = None
    ) -> None:
        """After a failed apply: put back what served before (``previous``, revision ``revision``), or remove what a failed first
        deploy left (None). The local target needs nothing: its new revision never replaced the old one."""

    def runtime_exits(self, name: str, since: float) -> list[str]:
        """Each time a runtime process (or container) of ``name`` ended since ``since`` (epoch seconds), as
        ``"<where>: <reason>"``; what the update service's guards read as a crash. [] where nothing says."""
        return []

    def endpoint(self, deployment: Deployment) -> tuple[str | None, str | None]:
        """The (REST URL, gRPC host:port) this process reaches the deployment at: its published ones here."""
        return deployment.url, deployment.grpc_url

    def plan(self, spec: DeploymentSpec, *, dry_run: bool = False, revision: int | None = None) -> Plan:
        """Render ``spec`` and run every check an apply would run first (what a dry run shows)."""
        return Plan(self.render(spec))

    def diff(self, spec: DeploymentSpec, manifests: list[dict[str, Any]]) -> str | None:
        """Unified diff between what runs and ``spec`` (rendered as ``manifests``); None when nothing runs."""
        return None


def backend_class(target: str) -> type[Backend]:
    """The Backend subclass of ``target``, imported on first use (the cluster ones pull in heavier code)."""
    import importlib

    from wolt_jupyter.config import TARGET_MODULES, unknown_target

    module = TARGET_MODULES.get(target)
    if module is None:
        raise InvalidArgument(unknown_target(target))
    importlib.import_module(module)
    return Backend.registry[target]
