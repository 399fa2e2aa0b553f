"""Live observations of a step from the response log: candidate and champion over the same window.

A request is counted once per arm however many rows it carried; an error is a 5xx (a 4xx is the client's
malformed input, the same for both arms). In a shadow step the champion arm is restricted to the requests the
shadow saw, so both arms are judged on the same traffic; agreement is counted on the rows both answered
(:func:`wolt_jupyter.monitoring.analysis.shadow_agreement`). The live metric is the per-row loss on rows with
feedback labels. Where a classifier's class probabilities are logged, each arm's accuracy on its rows without
labels is estimated from them (:func:`wolt_jupyter.monitoring.estimate.estimate_from_log`), calibrated on its
labelled rows plus ``references`` (e.g. the offline dataset, by arm: ``"candidate"``, ``"champion"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wolt_jupyter.responses.record import PROBA_OUTPUT
from wolt_jupyter.updater.decide import ArmStats, LiveWindow, MeanStats
from wolt_jupyter.updater.policy import LiveMetric

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from wolt_jupyter.monitoring.estimate import Reference


def window_from_log(
    log: pd.DataFrame,
    *,
    candidate: str,
    champion: str,
    shadow: bool,
    live_metric: LiveMetric | None = None,
    references: Mapping[str, Reference] | None = None,
    slow_ms: tuple[float | None, float | None] = (None, None),
    champion_relative_ms: float | None = None,
) -> LiveWindow:
    """Candidate variant vs champion variant in ``log`` (a :func:`wolt_jupyter.responses` frame). ``slow_ms``:
    the p99 limits of the candidate and the champion arm (``max_p99_ms``, ``service.champion_max_p99_ms``);
    each arm counts its requests slower than its own, which the sound p99 limit judges.
    ``champion_relative_ms``: the champion's limit from its baseline (``service.champion_max_p99_ratio``)."""
    from wolt_jupyter.monitoring.analysis import shadow_agreement

    is_shadow = log["shadow"].astype(bool)
    cand = log[(log["variant"] == candidate) & (is_shadow == shadow)]
    champ = log[(log["variant"] == champion) & ~is_shadow]
    if shadow:
        champ = champ[champ["id"].isin(set(cand["id"]))]
    agreement = None
    # the answer, not the probabilities logged beside it
    proba = f"output.{PROBA_OUTPUT}"
    output = next((c for c in log.columns if str(c).startswith("output") and c != proba), None)
    if shadow and not cand.empty:
        table = shadow_agreement(log[log["id"].isin(set(cand["id"]))], champion, output)
        if table is not None and candidate in table.index and "agreement" in table.columns:
            row = table.loc[candidate]
            if not math.isnan(row["agreement"]):
                paired = int(row["paired_requests"])
                agreement = (round(float(row["agreement"]) * paired), paired)
    refs = references or {}
    champion_arm = _arm(champ, output, live_metric, refs.get("champion"), slow_ms[1])
    if champion_relative_ms is not None and not champ.empty:
        latency = champ.drop_duplicates("id")["latency_ms"].to_numpy(dtype=float)
        champion_arm = replace(champion_arm, slow_vs_baseline=int((latency > champion_relative_ms).sum()))
    return LiveWindow(
        candidate=_arm(cand, output, live_metric, refs.get("candidate"), slow_ms[0]),
        champion=champion_arm,
        agreement=agreement,
    )


def champion_baseline(
    deployment: str, champion: str, started: float, window: float, min_requests: int, url: str | None = None
) -> tuple[float, int] | None:
    """The champion's p99 latency (ms) and answered requests in the ``window`` seconds before ``started``;
    None when fewer than ``min_requests`` answered (no baseline worth a limit)."""
    import numpy as np

    from wolt_jupyter.responses import read_frame

    log = read_frame(deployment, since=started - window, until=started, variant=champion, url=url,
                     columns=("id", "variant", "shadow", "status", "latency_ms"))  # fmt: skip
    if log.empty:
        return None
    ok = log[~log["shadow"].astype(bool) & (log["status"] < 500)].drop_duplicates("id")
    latency = ok["latency_ms"].to_numpy(dtype=float)
    latency = latency[np.isfinite(latency)]
    if len(latency) < min_requests:
        return None
    return float(np.percentile(latency, 99)), len(latency)


def _arm(
    rows: pd.DataFrame,
    output: str | None,
    metric: LiveMetric | None,
    reference: Reference | None = None,
    slow_ms: float | None = None,
) -> ArmStats:
    import numpy as np

    from wolt_jupyter.monitoring.estimate import estimate_from_log

    if rows.empty:
        return ArmStats()
    per_request = rows.drop_duplicates("id")
    status = per_request["status"].to_numpy()
    latency = per_request["latency_ms"].to_numpy(dtype=float)
    latency = latency[np.isfinite(latency)]
    stats = None
    if metric is not None and output is not None and "ground_truth" in rows:
        ok = rows[(rows["status"] < 400) & rows["ground_truth"].notna()]
        if not ok.empty:
            stats = MeanStats.of(
                per_row_metric(metric.name, numbers(ok["ground_truth"]), numbers(ok[output])).tolist()
            )
    return ArmStats(
        requests=len(per_request),
        errors=int((status >= 500).sum()),
        p99_ms=float(np.percentile(latency, 99)) if len(latency) else None,
        slow=None if slow_ms is None else int((latency > slow_ms).sum()),
        metric=stats,
        estimate=estimate_from_log(rows, reference),
    )


def per_row_metric(name: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The live metric per labelled row: absolute error (mae), squared error (mse), or 1 if correct (accuracy)."""
    import numpy as np

    if name == "mae":
        return np.abs(pred - y)
    if name == "mse":
        return (pred - y) ** 2
    if name == "accuracy":
        return (pred == y).astype(float)
    raise ValueError(f"unknown live metric {name!r}")


def numbers(values: Any) -> np.ndarray:
    """Logged values as floats; anything not a number (a class name, None) becomes NaN."""
    import pandas as pd

    return pd.to_numeric(pd.Series(list(values)), errors="coerce").to_numpy(dtype=float)


def observe(
    deployment: str,
    since: float,
    *,
    candidate: str,
    champion: str,
    shadow: bool,
    live_metric: LiveMetric | None = None,
    url: str | None = None,
    references: Mapping[str, Reference] | None = None,
    slow_ms: tuple[float | None, float | None] = (None, None),
    champion_relative_ms: float | None = None,
) -> LiveWindow:
    """The window since ``since`` (epoch seconds: the step's start) read from the deployment's response log."""
    from wolt_jupyter.responses import read_frame

    log = read_frame(deployment, since=since, variant=[candidate, champion], url=url)
    return window_from_log(
        log,
        candidate=candidate,
        champion=champion,
        shadow=shadow,
        live_metric=live_metric,
        references=references,
        slow_ms=slow_ms,
        champion_relative_ms=champion_relative_ms,
    )
