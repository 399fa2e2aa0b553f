"""The notebook-facing reports over a deployment: ``compare`` (A/B + shadows) and ``drift``.

They join the pure analysis (:mod:`.analysis`, :mod:`.drift`) with where the data lives: the response log
and the reference sample kept with each model version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument, NotFound
from wolt_jupyter.revisions import SINCE_DEPLOY

if TYPE_CHECKING:
    import pandas as pd

    from wolt_jupyter.monitoring.analysis import Comparison

INPUT_PREFIX = "input."


def compare(
    name: str,
    *,
    metric: str | None = None,
    since: Any = None,
    revision: Any = SINCE_DEPLOY,
    effect: float | None = None,
    tolerance: float | None = None,
) -> Comparison:
    """A/B comparison of a deployment's variants from its response log (feedback joined for ``metric``);
    ``revision`` chooses the rows (default: the revisions since the last deploy, so a rerun never mixes in an
    earlier deploy; a number, several, or ``"all"``); ``tolerance``: how far a regression shadow may answer
    from main and still count as agreeing."""
    from wolt_jupyter import deployments
    from wolt_jupyter.deployments import revisions_text
    from wolt_jupyter.monitoring.analysis import METRICS
    from wolt_jupyter.monitoring.analysis import compare as analyse

    if metric is not None and metric not in METRICS:
        raise InvalidArgument(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    revisions = deployments.revisions_for(name, revision)
    log = deployments.read_responses(name, since=since, revision=revisions)
    if log.empty:
        raise InvalidArgument(
            f"deployment {name!r} has logged no responses yet: send traffic first (read: the rows "
            f"{revisions_text(revisions, revision)})"
        )
    result = analyse(log, metric=metric, effect=effect, tolerance=tolerance)
    result.notes.insert(0, f"rows {revisions_text(revisions, revision)}")
    mixed = _mixed_versions(log)
    if mixed:
        result.notes.insert(
            1,
            f"{mixed} in these rows: each variant's numbers mix its model versions "
            "(--revision N compares one deploy)",
        )
    return result


def _mixed_versions(log: pd.DataFrame) -> str | None:
    """``variant main served models:/m/1 and /3`` when a variant name answered with several model versions in
    ``log`` (rows of several deploys read together); None otherwise."""
    if "model_version" not in log.columns:
        return None
    served = log.groupby("variant")["model_version"].unique()
    parts = [
        f"variant {variant} served versions {' and '.join(sorted(map(str, versions)))}"
        for variant, versions in served.items()
        if len(versions) > 1
    ]
    return "; ".join(parts) or None


@dataclass
class DriftReport:
    deployment: str
    variant: str
    model: str
    table: pd.DataFrame
    current_rows: int
    rows: str = ""  # which rows were compared, in words

    @property
    def drifted(self) -> list[str]:
        return [str(f) for f in self.table.index[self.table["drifted"]]]

    def _title(self) -> str:
        flagged = ", ".join(self.drifted) or "none"
        return (
            f"Drift of {self.deployment}/{self.variant} ({self.model}) over {self.current_rows} logged rows "
            f"{self.rows} vs the training reference: drifted features: {flagged}"
        ).replace("  ", " ")

    def _repr_html_(self) -> str:
        from html import escape

        styled = self.table.to_html(float_format=lambda x: f"{x:.4g}")
        return f"<div class='wolt-drift'><b>{escape(self._title())}</b>{styled}</div>"

    def __repr__(self) -> str:
        return f"{self._title()}\n{self.table.to_string(float_format=lambda x: f'{x:.4g}')}"


def drift(
    name: str,
    *,
    variant: str | None = None,
    since: Any = None,
    revision: Any = SINCE_DEPLOY,
    psi_threshold: float = 0.2,
) -> DriftReport:
    """Inputs a variant's model version answered (from the response log) against that version's reference
    sample. The version is the one the variant serves in the newest revision read (``revision``: default the
    revisions since the last deploy; a number, several, or ``"all"``); only rows that version answered
    count, so a redeploy or an earlier run's traffic under the same variant name never mixes in."""
    from wolt_jupyter import deployments
    from wolt_jupyter.config import settings
    from wolt_jupyter.deployments import revisions_text
    from wolt_jupyter.monitoring.drift import drift_table
    from wolt_jupyter.registry import load_reference, pinned_version
    from wolt_jupyter.revisions import RevisionStore

    revisions = deployments.revisions_for(name, revision)
    store = RevisionStore(settings().home)
    stored = store.revisions(name)
    if not stored:
        raise NotFound(f"no deployment named {name!r} was made here: its model versions are not known")
    if revisions:
        newest = max(revisions)
    else:  # every row: the variant as it is served now (or was, last, once undeployed)
        newest = store.record(name).revision if store.exists(name) else stored[-1]
    spec = store.spec(name, newest)
    chosen = spec.variant(variant) if variant else spec.live[0]
    version = pinned_version(chosen.model)
    if version is None:
        raise InvalidArgument(
            f"variant {chosen.name!r} serves {chosen.model}, not a registered version: no reference"
        )
    reference = load_reference(*version)
    log = deployments.read_responses(name, since=since, variant=chosen.name, revision=revisions)
    if not log.empty:  # the rows that version answered: not another version under the same variant name
        log = log[(log["model_name"] == version[0]) & (log["model_version"].astype(str) == version[1])]
    inputs = log[[c for c in log.columns if str(c).startswith(INPUT_PREFIX)]]
    inputs.columns = [str(c)[len(INPUT_PREFIX) :] for c in inputs.columns]
    if inputs.empty:
        raise NotFound(
            f"variant {chosen.name!r} of {name!r} ({chosen.model}) has no logged inputs "
            f"{revisions_text(revisions, revision)} yet: send traffic first"
        )
    table = drift_table(reference, inputs, psi_threshold=psi_threshold)
    if table.empty:
        raise InvalidArgument(
            f"no feature in common between the reference ({', '.join(map(str, reference.columns))}) and the "
            f"logged inputs ({', '.join(map(str, inputs.columns))})"
        )
    return DriftReport(
        name, chosen.name, chosen.model, table, len(inputs), revisions_text(revisions, revision)
    )
