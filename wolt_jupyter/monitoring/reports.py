"""The notebook-facing reports over a deployment: ``compare`` (A/B + shadows) and ``drift``.

They join the pure analysis (:mod:`.analysis`, :mod:`.drift`) with where the data lives: the response log
and the reference sample kept with each model version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    import pandas as pd

    from wolt_jupyter.monitoring.analysis import Comparison

INPUT_PREFIX = "input."


def compare(
    name: str,
    *,
    metric: str | None = None,
    since: Any = None,
    effect: float | None = None,
    tolerance: float | None = None,
) -> Comparison:
    """A/B comparison of a deployment's variants from its response log (feedback joined for ``metric``);
    ``tolerance``: how far a regression shadow may answer from main and still count as agreeing."""
    from wolt_jupyter import deployments
    from wolt_jupyter.monitoring.analysis import METRICS
    from wolt_jupyter.monitoring.analysis import compare as analyse

    if metric is not None and metric not in METRICS:
        raise InvalidArgument(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    log = deployments.responses(name, since=since)
    if log.empty:
        raise InvalidArgument(f"deployment {name!r} has logged no responses yet: send traffic first")
    return analyse(log, metric=metric, effect=effect, tolerance=tolerance)


@dataclass
class DriftReport:
    deployment: str
    variant: str
    model: str
    table: pd.DataFrame
    current_rows: int

    @property
    def drifted(self) -> list[str]:
        return [str(f) for f in self.table.index[self.table["drifted"]]]

    def _title(self) -> str:
        flagged = ", ".join(self.drifted) or "none"
        return (
            f"Drift of {self.deployment}/{self.variant} ({self.model}) over {self.current_rows} logged rows "
            f"vs the training reference: drifted features: {flagged}"
        )

    def _repr_html_(self) -> str:
        from html import escape

        styled = self.table.to_html(float_format=lambda x: f"{x:.4g}")
        return f"<div class='wolt-drift'><b>{escape(self._title())}</b>{styled}</div>"

    def __repr__(self) -> str:
        return f"{self._title()}\n{self.table.to_string(float_format=lambda x: f'{x:.4g}')}"


def drift(
    name: str, *, variant: str | None = None, since: Any = None, psi_threshold: float = 0.2
) -> DriftReport:
    """Inputs a variant received (from the response log) against its model version's reference sample."""
    from wolt_jupyter import deployments
    from wolt_jupyter.config import settings
    from wolt_jupyter.monitoring.drift import drift_table
    from wolt_jupyter.registry import load_reference, pinned_version
    from wolt_jupyter.revisions import RevisionStore

    spec = RevisionStore(settings().home).spec(name)
    chosen = spec.variant(variant) if variant else spec.live[0]
    version = pinned_version(chosen.model)
    if version is None:
        raise InvalidArgument(
            f"variant {chosen.name!r} serves {chosen.model}, not a registered version: no reference"
        )
    reference = load_reference(*version)
    log = deployments.responses(name, since=since, variant=chosen.name)
    inputs = log[[c for c in log.columns if str(c).startswith(INPUT_PREFIX)]]
    inputs.columns = [str(c)[len(INPUT_PREFIX) :] for c in inputs.columns]
    if inputs.empty:
        raise NotFound(f"variant {chosen.name!r} of {name!r} has no logged inputs yet: send traffic first")
    table = drift_table(reference, inputs, psi_threshold=psi_threshold)
    if table.empty:
        raise InvalidArgument(
            f"no feature in common between the reference ({', '.join(map(str, reference.columns))}) and the "
            f"logged inputs ({', '.join(map(str, inputs.columns))})"
        )
    return DriftReport(name, chosen.name, chosen.model, table, len(inputs))
