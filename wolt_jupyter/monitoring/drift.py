"""Input drift: each feature's recent distribution against the reference sample kept with the model version.

PSI (population stability index) over the reference's deciles, and the two-sample Kolmogorov-Smirnov test;
a feature is flagged when PSI exceeds ``psi_threshold`` (0.2 is the usual "significant shift") or the KS
p-value falls below ``alpha``. Categorical (non-numeric) features use PSI over categories.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PSI_THRESHOLD = 0.2
_EPS = 1e-4  # floor for empty bins, so PSI stays finite


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference``, bins at the reference's quantiles."""
    import numpy as np

    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if len(reference) == 0 or len(current) == 0:
        return math.nan
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: everything either equals it or not
        same_ref, same_cur = 1.0, float(np.mean(current == edges[0]))
        return _psi_terms(np.array([same_ref, 1 - same_ref]), np.array([same_cur, 1 - same_cur]))
    edges[0], edges[-1] = -np.inf, np.inf
    ref_share = np.histogram(reference, edges)[0] / len(reference)
    cur_share = np.histogram(current, edges)[0] / len(current)
    return _psi_terms(ref_share, cur_share)


def _psi_terms(ref: np.ndarray, cur: np.ndarray) -> float:
    import numpy as np

    ref, cur = np.clip(ref, _EPS, None), np.clip(cur, _EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi_categorical(reference: pd.Series, current: pd.Series) -> float:
    import numpy as np

    cats = sorted(set(reference.dropna().astype(str)) | set(current.dropna().astype(str)))
    ref = reference.dropna().astype(str).value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    cur = current.dropna().astype(str).value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
    return _psi_terms(np.asarray(ref, dtype=float), np.asarray(cur, dtype=float))


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    psi_threshold: float = PSI_THRESHOLD,
    alpha: float = 0.01,
) -> pd.DataFrame:
    """One row per feature present in both frames: PSI, KS statistic and p-value, and whether it drifted."""
    import pandas as pd
    from scipy.stats import ks_2samp

    rows = []
    for col in reference.columns:
        if col not in current.columns:
            continue
        ref, cur = reference[col], current[col]
        numeric = pd.api.types.is_numeric_dtype(ref) and pd.api.types.is_numeric_dtype(cur)
        row = {"feature": col, "reference_n": int(ref.notna().sum()), "current_n": int(cur.notna().sum())}
        if numeric:
            r, c = ref.dropna().to_numpy(dtype=float), cur.dropna().to_numpy(dtype=float)
            row["psi"] = psi(r, c)
            if len(r) and len(c):
                ks = ks_2samp(r, c)
                row["ks_statistic"], row["ks_p_value"] = float(ks.statistic), float(ks.pvalue)
            row["reference_mean"], row["current_mean"] = (
                float(r.mean()) if len(r) else math.nan,
                float(c.mean()) if len(c) else math.nan,
            )
        else:
            row["psi"] = psi_categorical(ref, cur)
        p = row.get("ks_p_value", math.nan)
        bins = 10 if numeric else max(ref.nunique(), 2)
        n_ref, n_cur = max(row["reference_n"], 1), max(row["current_n"], 1)
        row["psi_null"] = (bins - 1) * (1 / n_ref + 1 / n_cur)
        row["drifted"] = bool(
            row["psi"] - row["psi_null"] > psi_threshold or (math.isfinite(p) and p < alpha)
        )
        rows.append(row)
    columns = [
        "feature",
        "psi",
        "psi_null",
        "ks_statistic",
        "ks_p_value",
        "drifted",
        "reference_mean",
        "current_mean",
        "reference_n",
        "current_n",
    ]
    return pd.DataFrame(rows).reindex(columns=columns).set_index("feature")
