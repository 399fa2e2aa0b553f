"""A/B and shadow analysis over the response log: is the challenger better, and how sure are we?

Per variant: request count, latency with a confidence interval, error rate (Wilson interval) and, where
feedback labels exist, the model metric with its interval. Against the main variant: a significance test
(two-proportion z-test for rates, Welch's t-test for per-request losses and latency, a permutation test for
AUC) and the per-arm sample size still needed to detect a given effect at 80% power.

Shadows answered the same requests as the live variants, so they are compared on those same requests:
agreement rate for classifiers, the distribution of differences for regressors.

Pure functions over DataFrames: no I/O, so they are tested with synthetic outcomes of known truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

METRICS = ("accuracy", "error_rate", "auc", "rmse", "mae")
HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "rmse": False, "mae": False, "error_rate": False}
Z_95 = 1.959963984540054


# -- intervals and tests ---------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion: honest near 0 and 1, unlike the normal approximation."""
    if n == 0:
        return (math.nan, math.nan)
    if successes == 0:  # the closed forms below, without the rounding error at the edges
        return (0.0, z * z / (n + z * z))
    if successes == n:
        return (n / (n + z * z), 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: np.ndarray, z: float = Z_95) -> tuple[float, float]:
    import numpy as np

    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    m, se = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(n))
    return (m - z * se, m + z * se)


def two_proportion_p(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test."""
    from scipy.stats import norm

    if min(n1, n2) == 0:
        return math.nan
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / se
    return float(2 * norm.sf(abs(z)))


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    import warnings

    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():  # identical samples: scipy warns, the answer (no difference) stands
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ttest_ind(a, b, equal_var=False)
    return float(result.pvalue) if math.isfinite(result.pvalue) else 1.0


def sample_size_proportion(p: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n to detect ``p`` → ``p + effect`` with a two-sided test at ``alpha`` and ``power``."""
    from scipy.stats import norm

    p2 = min(max(p + effect, 1e-9), 1 - 1e-9)
    p = min(max(p, 1e-9), 1 - 1e-9)
    za, zb = norm.isf(alpha / 2), norm.isf(1 - power)
    pbar = (p + p2) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p * (1 - p) + p2 * (1 - p2))
    return math.ceil((num / (p2 - p)) ** 2) if p2 != p else 0


def sample_size_mean(std: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n to detect a difference ``effect`` in means with standard deviation ``std``."""
    from scipy.stats import norm

    if effect == 0 or not math.isfinite(std):
        return 0
    za, zb = norm.isf(alpha / 2), norm.isf(1 - power)
    return math.ceil(2 * ((za + zb) * std / effect) ** 2)


def auc_score(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return math.nan
    return float(roc_auc_score(y, score))


def auc_permutation_p(
    y1: np.ndarray, s1: np.ndarray, y2: np.ndarray, s2: np.ndarray, rounds: int = 500
) -> float:
    """Permutation test of AUC(arm 1) - AUC(arm 2): shuffle arm labels, keep each row's (label, score)."""
    import numpy as np

    rng = np.random.default_rng(0)
    observed = abs(auc_score(y1, s1) - auc_score(y2, s2))
    if not math.isfinite(observed):
        return math.nan
    y, s, n1 = np.concatenate([y1, y2]), np.concatenate([s1, s2]), len(y1)
    hits = 0
    for _ in range(rounds):
        idx = rng.permutation(len(y))
        a, b = idx[:n1], idx[n1:]
        if abs(auc_score(y[a], s[a]) - auc_score(y[b], s[b])) >= observed:
            hits += 1
    return (hits + 1) / (rounds + 1)


# -- the comparison --------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """What ``%wolt_compare`` returns. A notebook shows :attr:`summary` (one narrow row per variant: fits a
    1,000 px notebook); :attr:`details` (= ``table``) has every number, and ``shadow_table`` the shadows
    against main on the same requests."""

    table: pd.DataFrame
    metric: str | None
    main: str
    shadow_table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05
    tolerance: float | None = None  # regression shadows: |shadow - main| counted as agreeing up to this

    @property
    def details(self) -> pd.DataFrame:
        """Every column: intervals, p-values, latency mean/p95/p99, labelled counts."""
        return self.table

    @property
    def summary(self) -> pd.DataFrame:
        """variant, requests, share, errors, p99 ms, the metric with its 95% interval, verdict."""
        return summary_table(self)

    def _repr_html_(self) -> str:
        from html import escape

        html = (
            f"<div class='wolt-compare'><b>Variants vs {escape(self.main)}</b>"
            f"{self.summary.to_html(na_rep='', border=0, classes='wolt-compare-summary')}"
        )
        html += "".join(f"<p>{escape(n)}</p>" for n in self.notes)
        html += (
            "<details class='wolt-compare-details'><summary>details (.details, .shadow_table)</summary>"
            f"{self.table.to_html(float_format=_fmt, border=0)}"
        )
        if self.shadow_table is not None and not self.shadow_table.empty:
            html += (
                f"<b>Shadows vs {escape(self.main)} on the same requests</b>"
                f"{self.shadow_table.to_html(float_format=_fmt, border=0)}"
            )
        return html + "</details></div>"

    def __repr__(self) -> str:
        text = f"Variants vs {self.main}\n{self.summary.to_string(na_rep='')}"
        return "\n".join([text, *self.notes, "(every number: .details; shadows vs main: .shadow_table)"])


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _interval_text(value: float, low: Any, high: Any) -> str:
    if not math.isfinite(value):
        return ""
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return f"{value:.4g}"
    return f"{value:.4g} [{float(low):.4g}, {float(high):.4g}]"


def summary_table(c: Comparison) -> pd.DataFrame:
    """The compact view of a comparison: counts as integers, rates as percentages, one verdict per variant."""
    import pandas as pd

    t = c.table
    live_total = int(t.loc[~t["shadow"].astype(bool), "requests"].sum())
    metric = c.metric if c.metric and c.metric in t.columns else None
    rows = []
    for variant, r in t.iterrows():
        shadow = bool(r["shadow"])
        requests = int(r["requests"])
        row: dict[str, Any] = {
            "variant": f"{variant} (shadow)" if shadow else str(variant),
            "requests": requests,
            "share": "" if shadow else f"{100 * requests / live_total:.1f}%" if live_total else "",
            "errors": int(r["errors"]),
            "p99 ms": round(float(r["latency_ms_p99"]), 1) if math.isfinite(r["latency_ms_p99"]) else None,
        }
        if metric:
            row[f"{metric} (95% CI)"] = _interval_text(
                float(r[metric]), r.get(f"{metric}_ci_low"), r.get(f"{metric}_ci_high")
            )
        row["verdict"] = _verdict(c, str(variant), r, shadow)
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def _verdict(c: Comparison, variant: str, r: Any, shadow: bool) -> str:
    if variant == c.main:
        return "baseline"
    if shadow and c.shadow_table is not None and variant in c.shadow_table.index:
        s = c.shadow_table.loc[variant]
        if "agreement" in s and math.isfinite(s["agreement"]):
            return f"agrees on {100 * s['agreement']:.1f}% of {int(s['paired_requests'])}"
        if "within_tolerance" in s and math.isfinite(s["within_tolerance"]):
            return (
                f"MAE {s['mean_abs_difference']:.3g} vs main, {100 * s['within_tolerance']:.0f}% within "
                f"±{s['tolerance']:.3g}"
            )
    name = c.metric if c.metric and f"{c.metric}_p_value" in r else "error_rate"
    p = r.get(f"{name}_p_value", math.nan)
    if p is None or not math.isfinite(p):
        return "too few requests" if not shadow else ""
    if p >= c.alpha:
        return f"no significant difference (p={p:.2g})"
    base = c.table.loc[c.main, name]
    higher = HIGHER_IS_BETTER.get(name, False)
    better = (r[name] > base) == higher
    what = name.replace("_", " ")
    return f"{'better' if better else 'worse'} {what} (p={p:.2g})"


def _first_output(frame: pd.DataFrame) -> str | None:
    cols = [c for c in frame.columns if str(c).startswith("output.")]
    return cols[0] if cols else None


def _first_output_of(rows: pd.DataFrame) -> str | None:
    """The first output column these rows (one variant's) fill: its model's first output, whatever its name."""
    for c in rows.columns:
        if str(c).startswith("output.") and rows[c].notna().any():
            return c
    return None


def _numeric(values: Any) -> np.ndarray:
    import numpy as np
    import pandas as pd

    values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in values]  # a [N,1] output's rows
    return (
        pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
        if len(values)
        else np.array([])
    )


def _per_request_loss(metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    import numpy as np

    if metric == "accuracy":
        return (y == np.round(pred)).astype(float) if pred.dtype.kind == "f" else (y == pred).astype(float)
    if metric == "rmse":
        return (pred - y) ** 2
    if metric == "mae":
        return np.abs(pred - y)
    raise InvalidArgument(f"unknown metric {metric!r}")


def compare(
    log: pd.DataFrame,
    *,
    metric: str | None = None,
    main: str | None = None,
    effect: float | None = None,
    alpha: float = 0.05,
    tolerance: float | None = None,
) -> Comparison:
    """Compare every variant in a response log against ``main`` (default: the variant named ``main``, else
    the one with most live requests).

    ``metric`` needs feedback (``ground_truth``); ``effect`` is the smallest difference worth detecting (in
    the metric's units; default 1 percentage point for rates, 5% of the main variant's value otherwise).
    ``tolerance``: how far a regression shadow may answer from main and still count as agreeing (default
    10% of the standard deviation of main's answers).
    """
    import numpy as np
    import pandas as pd

    if metric is not None and metric not in METRICS:
        raise InvalidArgument(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if log.empty:
        raise InvalidArgument("the response log is empty: send some requests first (%wolt_predict NAME DATA)")
    # one row per request per variant: requests with several input rows were expanded by the reader
    per_request = log.drop_duplicates(subset=["id", "variant"]) if "id" in log else log
    live = per_request[~per_request["shadow"].astype(bool)]
    if main is None:
        counts = live["variant"].value_counts()
        main = "main" if "main" in counts.index else (counts.index[0] if len(counts) else None)
    if main is None:
        raise InvalidArgument("no live requests in the log to compare against")
    output = _first_output(log)
    labelled = "ground_truth" in log.columns and log["ground_truth"].notna().any()
    if metric is not None and metric != "error_rate" and not labelled:
        raise InvalidArgument(
            f"metric {metric!r} needs ground truth: send labels with POST /v2/models/NAME/feedback "
            "or wolt_jupyter.responses.add_feedback(...)"
        )
    rows = []
    main_rows = log[(log["variant"] == main) & ~log["shadow"].astype(bool)]
    main_req = per_request[(per_request["variant"] == main) & ~per_request["shadow"].astype(bool)]
    for variant, group in log.groupby("variant", sort=False):
        shadow = bool(group["shadow"].astype(bool).all())
        req = per_request[per_request["variant"] == variant]
        n = len(req)
        errors = int((req["status"] >= 400).sum())
        lat = req["latency_ms"].to_numpy(dtype=float)
        lat_lo, lat_hi = mean_interval(lat)
        err_lo, err_hi = wilson_interval(errors, n)
        row: dict[str, Any] = {
            "variant": variant,
            "shadow": shadow,
            "requests": n,
            "errors": errors,
            "latency_ms_mean": float(np.mean(lat)) if n else math.nan,
            "latency_ms_p95": float(np.percentile(lat, 95)) if n else math.nan,
            "latency_ms_p99": float(np.percentile(lat, 99)) if n else math.nan,
            "latency_ms_ci_low": lat_lo,
            "latency_ms_ci_high": lat_hi,
            "error_rate": errors / n if n else math.nan,
            "error_rate_ci_low": err_lo,
            "error_rate_ci_high": err_hi,
        }
        if variant != main and len(main_req):
            row["latency_p_value"] = welch_p(lat, main_req["latency_ms"].to_numpy(dtype=float))
            row["error_rate_p_value"] = two_proportion_p(
                errors, n, int((main_req["status"] >= 400).sum()), len(main_req)
            )
        if metric and metric != "error_rate" and labelled and output:
            row.update(_metric_stats(metric, group, main_rows if variant != main else None, output))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    order = [main, *[v for v in table.index if v != main and not table.loc[v, "shadow"]]]
    table = table.loc[order + [v for v in table.index if v not in order]]  # main, live variants, shadows
    notes = _sample_size_notes(table, metric, main, effect, alpha, log, output, labelled)
    if metric:
        pcol = f"{metric}_p_value"
        if pcol in table:
            table["significant"] = table[pcol] < alpha
    shadows = shadow_agreement(log, main, output, tolerance=tolerance)
    if shadows is not None and "tolerance" in shadows and shadows["tolerance"].notna().any():
        tol = float(shadows["tolerance"].dropna().iloc[0])
        how = "given" if tolerance is not None else "10% of the s.d. of main's answers"
        notes.append(f"regression shadows: 'within' counts answers within ±{tol:.3g} of main's ({how})")
    return Comparison(
        table=table,
        metric=metric,
        main=main,
        shadow_table=shadows,
        notes=notes,
        alpha=alpha,
        tolerance=tolerance,
    )


def _labels_and_predictions(group: pd.DataFrame, output: str) -> tuple[np.ndarray, np.ndarray]:
    labelled = group[group["ground_truth"].notna()]
    return _numeric(labelled["ground_truth"].tolist()), _numeric(labelled[output].tolist())


def _metric_stats(
    metric: str, group: pd.DataFrame, main_rows: pd.DataFrame | None, output: str
) -> dict[str, Any]:
    import numpy as np

    y, pred = _labels_and_predictions(group, output)
    out: dict[str, Any] = {"labelled": len(y)}
    if metric == "auc":
        out["auc"] = auc_score(y, pred)
        if main_rows is not None:
            my, mp = _labels_and_predictions(main_rows, output)
            out["auc_p_value"] = auc_permutation_p(y, pred, my, mp)
        return out
    loss = _per_request_loss(metric, y, pred)
    if metric == "accuracy":
        hits = int(loss.sum())
        out["accuracy"] = hits / len(loss) if len(loss) else math.nan
        out["accuracy_ci_low"], out["accuracy_ci_high"] = wilson_interval(hits, len(loss))
        if main_rows is not None:
            my, mp = _labels_and_predictions(main_rows, output)
            mloss = _per_request_loss(metric, my, mp)
            out["accuracy_p_value"] = two_proportion_p(hits, len(loss), int(mloss.sum()), len(mloss))
        return out
    lo, hi = mean_interval(loss)
    if metric == "rmse":
        out["rmse"] = float(np.sqrt(np.mean(loss))) if len(loss) else math.nan
        out["rmse_ci_low"], out["rmse_ci_high"] = (math.sqrt(max(lo, 0)), math.sqrt(max(hi, 0)))
    else:
        out["mae"] = float(np.mean(loss)) if len(loss) else math.nan
        out["mae_ci_low"], out["mae_ci_high"] = lo, hi
    if main_rows is not None:
        my, mp = _labels_and_predictions(main_rows, output)
        out[f"{metric}_p_value"] = welch_p(loss, _per_request_loss(metric, my, mp))
    return out


def _sample_size_notes(
    table: pd.DataFrame,
    metric: str | None,
    main: str,
    effect: float | None,
    alpha: float,
    log: pd.DataFrame,
    output: str | None,
    labelled: bool,
) -> list[str]:
    import numpy as np

    notes = []
    base = table.loc[main]
    if metric in ("accuracy", "error_rate") or metric is None:
        name = metric or "error_rate"
        p = float(base.get(name, math.nan)) if name in table else math.nan
        if math.isfinite(p):
            eff = effect if effect is not None else 0.01
            n = sample_size_proportion(p, eff, alpha)
            have = int(base.get("labelled", base["requests"]))
            notes.append(
                f"to detect a {eff:+.3g} change in {name} from {p:.3g}: {n} requests per variant ({have} so far)"
            )
    elif metric in ("rmse", "mae") and labelled and output:
        y, pred = _labels_and_predictions(log[(log["variant"] == main) & ~log["shadow"].astype(bool)], output)
        loss = _per_request_loss(metric, y, pred)
        if len(loss) > 1:
            value = float(base[metric])
            eff = effect if effect is not None else 0.05 * value
            target = (value + eff) ** 2 - value**2 if metric == "rmse" else eff
            n = sample_size_mean(float(np.std(loss, ddof=1)), target, alpha)
            notes.append(
                f"to detect a {eff:+.3g} change in {metric} from {value:.3g}: {n} labelled requests per variant"
            )
    return notes


TOLERANCE_OF_SD = 0.1  # default tolerance of a regression shadow: this fraction of main's answers' s.d.


def shadow_agreement(
    log: pd.DataFrame, main: str, output: str | None, *, tolerance: float | None = None
) -> pd.DataFrame | None:
    """Each shadow against ``main`` on the requests both answered: agreement (classes) or, for regressors, the
    distribution of the differences: MAE, correlation, and the share within ``tolerance`` (default: 10% of
    the standard deviation of main's answers) — exact equality says nothing about real-valued answers."""
    import numpy as np
    import pandas as pd

    if output is None:
        return None
    shadows = log[log["shadow"].astype(bool)]
    if shadows.empty:
        return None
    main_rows = log[(log["variant"] == main) & ~log["shadow"].astype(bool)]
    key = ["id", "_row"]
    main_out = _first_output_of(main_rows) or output
    main_rows = main_rows.assign(_row=main_rows.groupby("id").cumcount())
    rows = []
    for variant, group in shadows.groupby("variant"):
        group = group.assign(_row=group.groupby("id").cumcount())
        # outputs pair by position: an ONNX shadow's "variable" against a scikit-learn main's "predict"
        shadow_out = _first_output_of(group) or output
        joined = group[[*key, shadow_out]].merge(
            main_rows[[*key, main_out]].rename(columns={main_out: "_main"}), on=key
        )
        a, b = _numeric(joined[shadow_out].tolist()), _numeric(joined["_main"].tolist())
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        row: dict[str, Any] = {"variant": variant, "paired_requests": len(a)}
        classes = len(a) and np.all(np.mod(a, 1) == 0) and np.all(np.mod(b, 1) == 0)
        if len(a) and classes:
            agree = int((a == b).sum())
            row["agreement"] = agree / len(a)
            row["agreement_ci_low"], row["agreement_ci_high"] = wilson_interval(agree, len(a))
        elif len(a):
            diff = a - b
            tol = tolerance if tolerance is not None else TOLERANCE_OF_SD * float(np.std(b))
            row["mean_difference"] = float(np.mean(diff))
            row["mean_abs_difference"] = float(np.mean(np.abs(diff)))
            row["p95_abs_difference"] = float(np.percentile(np.abs(diff), 95))
            row["correlation"] = (
                float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and np.std(a) > 0 and np.std(b) > 0 else math.nan
            )
            row["tolerance"] = tol
            row["within_tolerance"] = float(np.mean(np.abs(diff) <= tol))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")
