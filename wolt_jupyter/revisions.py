"""Deployment records in the state dir: which target runs a deployment, and every pinned spec it ran.

``<home>/deployments/<name>/``
    ``deployment.json``   target, namespace, current revision, timestamps (the local runtime adds its pid/port)
    ``revisions/0001.yaml`` … one pinned spec per applied revision; rollback = apply the previous one

Every kernel on the machine reads the same files, so a deployment made in one notebook is listed, changed or
removed from another.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import InvalidArgument, NotFound
from wolt_jupyter.private import FILE_MODE, private_dir
from wolt_jupyter.spec import DeploymentSpec, check_dns_label
from wolt_jupyter.untrusted import shown_value

RECORD = "deployment.json"
# what analyses of a response log read unless told otherwise: the revisions since the last deploy
# (RevisionStore.same_models); deployments.revisions_for resolves it
SINCE_DEPLOY = "since-deploy"


def parse_revision(value: str | None, example: str = "--revision {}") -> Any:
    """Which revisions to read, from text (a magic's ``--revision``, the lab view's ``?revision=``): a number,
    several (``3,4``) or ``all``; absent, :data:`SINCE_DEPLOY`. Anything else is an :class:`InvalidArgument`
    that shows the forms as ``example`` writes them (``"revision={}"`` for a URL)."""
    if value is None:
        return SINCE_DEPLOY
    text = value.strip().lower()
    if text == "all":
        return "all"
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        option = example.format("").strip(" =")
        raise InvalidArgument(
            f"{option} takes a revision number ({example.format(3)}), several ({example.format('3,4')}) or "
            f"all (every revision), not {shown_value(value)}; without it the revisions since the last deploy are read"
        )
    numbers = [int(p) for p in parts]
    return numbers[0] if len(numbers) == 1 else numbers


def deployments_root(home: Path) -> Path:
    return Path(home) / "deployments"


def deployment_dir(home: Path, name: str) -> Path:
    return deployments_root(home) / check_dns_label(name, "deployment name")


def write_atomic(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Write via a temp file and rename, so a reader never sees half a file; private (0600) by default."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class DeploymentRecord:
    name: str
    target: str
    namespace: str | None = None
    revision: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific: pid, port, url, …
    # the response store every runtime of the deployment writes to, as this machine reaches it (a cluster's
    # pods get their own address of it: cluster_response_store_url); None in records older than this field.
    # The file is private (0600); shown only masked
    response_store: str | None = None


def serving_revision(home: Path, name: str) -> int | None:
    """The revision a runtime serving ``name`` is about to run: the record's, which the deploy saves before it
    applies (so a switch reads the new number), or ``$WOLT_REVISION`` where there is no record (a cluster
    pod). None if neither says; the response log then has no revision for its rows."""
    try:
        data = json.loads((deployment_dir(home, name) / RECORD).read_text())
        return int(data["revision"])
    except (OSError, ValueError, KeyError, TypeError, InvalidArgument):
        pass
    env = os.environ.get("WOLT_REVISION", "")
    return int(env) if env.isdigit() else None


def _stamp(path: Path) -> int:
    """The time a removed record was set aside (its ``.<seconds>`` suffix)."""
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


class RevisionStore:
    """The deployment records under one state dir."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def dir(self, name: str) -> Path:
        return deployment_dir(self.home, name)

    # -- records --------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        root = deployments_root(self.home)
        if not root.is_dir():
            return []
        return sorted(p.parent.name for p in root.glob(f"*/{RECORD}"))

    def exists(self, name: str) -> bool:
        return (self.dir(name) / RECORD).is_file()

    def record(self, name: str) -> DeploymentRecord:
        path = self.dir(name) / RECORD
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise NotFound(f"no deployment named {name!r}; deployments: {known}") from None
        ours = {f.name for f in fields(DeploymentRecord)}  # a newer version's fields: kept out, not fatal
        return DeploymentRecord(**{k: v for k, v in data.items() if k in ours})

    def response_store(self, name: str) -> str | None:
        """The response store ``name``'s record names: the current record's, else (undeployed) the last one
        kept under ``removed/``; None when no record names one."""
        paths = [self.dir(name) / RECORD]
        paths += sorted((self.dir(name) / "removed").glob(f"{RECORD}.*"), key=_stamp, reverse=True)
        for path in paths:
            try:
                url = json.loads(path.read_text()).get("response_store")
            except (OSError, ValueError, AttributeError):
                continue
            if url:
                return str(url)
        return None

    def save_record(self, rec: DeploymentRecord) -> None:
        rec.updated = time.time()
        write_atomic(self.dir(rec.name) / RECORD, json.dumps(asdict(rec), indent=2))

    def remove(self, name: str) -> None:
        """Forget the deployment, keeping its revisions and logs under ``removed/`` for the record."""
        path = self.dir(name) / RECORD
        if path.exists():
            graveyard = self.dir(name) / "removed"
            private_dir(graveyard)
            os.replace(path, graveyard / f"{RECORD}.{int(time.time())}")

    # -- revisions ------------------------------------------------------------------------------------------
    def revisions(self, name: str) -> list[int]:
        folder = self.dir(name) / "revisions"
        return sorted(int(p.stem) for p in folder.glob("*.yaml")) if folder.is_dir() else []

    def spec(self, name: str, revision: int | None = None) -> DeploymentSpec:
        revision = revision if revision is not None else self.record(name).revision
        path = self.dir(name) / "revisions" / f"{revision:04d}.yaml"
        if not path.exists():
            raise NotFound(f"deployment {name!r} has no revision {revision}")
        return DeploymentSpec.from_yaml(path.read_text())

    def add_revision(self, spec: DeploymentSpec) -> int:
        """Store ``spec`` (already pinned) as the next revision and return its number.

        Numbers never repeat: a revision that failed to apply keeps its number under ``revisions/failed/``.
        """
        revision = self.next_revision(spec.name)
        write_atomic(self.dir(spec.name) / "revisions" / f"{revision:04d}.yaml", spec.to_yaml())
        return revision

    def next_revision(self, name: str) -> int:
        """The number the next stored revision gets (what a dry run shows it would apply as)."""
        folder = self.dir(name) / "revisions"
        failed = [int(p.stem) for p in (folder / "failed").glob("*.yaml")] if folder.is_dir() else []
        return max(self.revisions(name) + failed, default=0) + 1

    def discard_revision(self, name: str, revision: int) -> None:
        """Set aside a revision that never ran (a rollback must not land on it); its number stays used."""
        path = self.dir(name) / "revisions" / f"{revision:04d}.yaml"
        if path.exists():
            private_dir(path.parent / "failed")
            os.replace(path, path.parent / "failed" / path.name)

    def same_models(self, name: str) -> list[int]:
        """The current revision and the ones right before it that served the same models (variant -> model
        URI): "since the last deploy". A traffic change keeps the models, so an A/B test spans it; a redeploy,
        promotion or rollback to other models, or an undeploy, starts anew. What analyses of the response log
        default to."""
        current = self.record(name).revision
        runs = self.model_runs(name)
        start = runs.get(current, current)
        return sorted({current, *(r for r, s in runs.items() if s == start and r <= current)})

    def model_runs(self, name: str) -> dict[int, int]:
        """Each stored revision -> the first revision of its run: consecutive revisions serving the same
        models (variant -> model URI) with no undeploy between them. The monitoring panel draws one series a
        run, so a traffic change continues a line and a redeploy starts a new one."""
        ended = self.undeployed_at(name)
        runs: dict[int, int] = {}
        previous, previous_models = None, None
        for r in self.revisions(name):
            try:
                models: dict[str, str] | None = {v.name: v.model for v in self.spec(name, r).variants}
            except (NotFound, InvalidArgument):
                models = None
            continues = previous is not None and previous not in ended and models == previous_models
            runs[r] = runs[previous] if continues and models is not None else r  # type: ignore[index]
            previous, previous_models = r, models
        return runs

    def undeployed_at(self, name: str) -> set[int]:
        """The revisions that were current when the deployment was undeployed (from the records kept under
        ``removed/``): a deploy after one starts a new run even with the same models."""
        out: set[int] = set()
        for path in (self.dir(name) / "removed").glob(f"{RECORD}.*"):
            try:
                out.add(int(json.loads(path.read_text())["revision"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def previous(self, name: str) -> int:
        """The revision a rollback returns to: the one applied before the current one."""
        current = self.record(name).revision
        earlier = [r for r in self.revisions(name) if r < current]
        if not earlier:
            raise InvalidArgument(
                f"deployment {name!r} is at its first revision ({current}); nothing to roll back to"
            )
        return earlier[-1]
