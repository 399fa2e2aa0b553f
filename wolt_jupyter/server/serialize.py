"""Domain objects as the JSON the lab extension reads (and ``openapi.yaml`` describes).

Times are epoch milliseconds, missing numbers ``null``: what a chart in the browser wants, without a second
parsing step there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from wolt_jupyter.backends.base import Deployment
    from wolt_jupyter.monitoring.data import MonitorData


def number(value: Any) -> float | None:
    """A float for JSON, ``None`` for NaN/None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def deployment(d: Deployment) -> dict[str, Any]:
    """Every field of the core's ``Deployment`` (new fields, such as restarts, appear without a change here);
    a dry run also as the YAML a reviewer reads."""
    out = d.to_dict()
    if d.manifests is not None:
        out["manifests_yaml"] = d.manifests_yaml
    return out


def _series(df: pd.DataFrame) -> dict[str, Any]:
    return {
        "time": [int(t.timestamp() * 1000) for t in df.index],
        "columns": {str(c): [number(v) for v in df[c].tolist()] for c in df.columns},
    }


def monitor_data(data: MonitorData) -> dict[str, Any]:
    """The same series the notebook's monitoring panel draws, one refresh."""
    summary = []
    for variant, row in data.summary.iterrows():
        item: dict[str, Any] = {"variant": str(variant), "shadow": bool(row["shadow"])}
        item.update({k: number(v) for k, v in row.items() if k != "shadow"})
        summary.append(item)
    return {
        "deployment": data.deployment,
        "since": int(data.since * 1000),
        "until": int(data.until * 1000),
        "step": data.step,
        "source": data.source,
        "checked_against": data.checked_against,
        "message": data.message,
        "shadows": list(data.shadows),
        "revision_marks": [
            {"time": int(m.time * 1000), "revision": m.revision, "label": m.label}
            for m in data.revision_marks
        ],
        "requests": _series(data.requests),
        "error_rate": _series(data.error_rate),
        "latency": {q: _series(df) for q, df in data.latency.items()},
        "agreement": _series(data.agreement),
        "log_health": _series(data.log_health),
        "predictions": {
            "edges": [number(e) for e in data.predictions.index],
            "columns": {str(c): [number(v) for v in data.predictions[c]] for c in data.predictions.columns},
        },
        "summary": summary,
    }
