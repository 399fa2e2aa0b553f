"""A/B analysis on synthetic response logs whose truth is known: the test must say so at the expected rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.monitoring.analysis import (
    compare,
    sample_size_proportion,
    two_proportion_p,
    wilson_interval,
)


def classification_log(
    rng, n_main: int, n_chal: int, acc_main: float, acc_chal: float, shadow_agree: float = 0.9
):
    rows = []
    for variant, n, acc in (("main", n_main, acc_main), ("challenger", n_chal, acc_chal)):
        y = rng.integers(0, 2, n)
        correct = rng.random(n) < acc
        pred = np.where(correct, y, 1 - y)
        for i in range(n):
            rid = f"{variant}-{i}"
            rows.append(
                {
                    "id": rid,
                    "variant": variant,
                    "shadow": False,
                    "latency_ms": rng.gamma(2, 1.0),
                    "status": 200,
                    "output.predict": int(pred[i]),
                    "ground_truth": int(y[i]),
                }
            )
            if variant == "main":  # the shadow sees a copy of every main request
                agree = rng.random() < shadow_agree
                rows.append(
                    {
                        "id": rid,
                        "variant": "shadow",
                        "shadow": True,
                        "latency_ms": rng.gamma(2, 1.5),
                        "status": 200,
                        "output.predict": int(pred[i] if agree else 1 - pred[i]),
                        "ground_truth": int(y[i]),
                    }
                )
    return pd.DataFrame(rows)


def test_wilson_and_two_proportion_basics() -> None:
    lo, hi = wilson_interval(0, 50)
    assert lo == 0 and 0 < hi < 0.1
    lo, hi = wilson_interval(45, 50)
    assert lo < 0.9 < hi
    assert two_proportion_p(50, 100, 50, 100) == pytest.approx(1.0)
    assert two_proportion_p(80, 100, 50, 100) < 1e-4
    # the textbook case: 10% -> 12% needs about 3,800 per arm at 80% power
    assert 3700 < sample_size_proportion(0.10, 0.02) < 3950


def _significant_calls(seed: int, n: int, accuracy: tuple[float, float], rounds: int) -> int:
    """How many of ``rounds`` synthetic logs (main and challenger at ``accuracy``, ``n`` rows each) ``compare``
    calls the challenger significantly different."""
    rng = np.random.default_rng(seed)
    return sum(
        bool(
            compare(classification_log(rng, n, n, *accuracy), metric="accuracy").table.loc[
                "challenger", "significant"
            ]
        )
        for _ in range(rounds)
    )


def test_truly_better_challenger_is_detected_at_high_power() -> None:
    detected = _significant_calls(1, 1500, (0.70, 0.76), rounds=40)
    assert detected >= 36  # power for 6 points at n=1500/arm is ~0.98


def test_truly_equal_challenger_is_rarely_called_significant() -> None:
    false_positives = _significant_calls(2, 600, (0.75, 0.75), rounds=200)
    assert false_positives <= 20  # alpha = 0.05 → about 10 of 200; 20 leaves room for chance


def test_table_shape_intervals_and_shadow_agreement() -> None:
    log = classification_log(np.random.default_rng(3), 800, 200, 0.8, 0.8, shadow_agree=0.9)
    result = compare(log, metric="accuracy")
    table = result.table
    assert list(table.index) == ["main", "challenger", "shadow"]
    assert table.loc["main", "requests"] == 800 and table.loc["challenger", "requests"] == 200
    assert bool(table.loc["shadow", "shadow"]) and not bool(table.loc["main", "shadow"])
    for v in ("main", "challenger"):
        assert table.loc[v, "accuracy_ci_low"] < table.loc[v, "accuracy"] < table.loc[v, "accuracy_ci_high"]
    assert table.loc["main", "accuracy"] == pytest.approx(0.8, abs=0.05)
    # the shadow is compared with main on the very same requests
    shadow = result.shadow_table.loc["shadow"]
    assert shadow["paired_requests"] == 800
    assert shadow["agreement_ci_low"] < 0.9 < shadow["agreement_ci_high"]
    assert "requests per variant" in result.notes[0]
    assert "challenger" in repr(result) and "<table" in result._repr_html_()


def test_regression_metrics_and_difference_distribution() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for variant, noise in (("main", 1.0), ("challenger", 2.0)):
        y = rng.normal(size=2000)
        for i, (truth, pred) in enumerate(zip(y, y + rng.normal(scale=noise, size=2000), strict=True)):
            rows.append(
                {
                    "id": f"{variant}{i}",
                    "variant": variant,
                    "shadow": False,
                    "latency_ms": 1.0,
                    "status": 200,
                    "output.predict": pred,
                    "ground_truth": truth,
                }
            )
    table = compare(pd.DataFrame(rows), metric="rmse").table
    assert table.loc["main", "rmse"] == pytest.approx(1.0, abs=0.1)
    assert table.loc["challenger", "rmse"] == pytest.approx(2.0, abs=0.15)
    assert bool(table.loc["challenger", "significant"])


def test_errors_latency_and_bad_input() -> None:
    rng = np.random.default_rng(5)
    log = classification_log(rng, 500, 500, 0.8, 0.8)
    log.loc[(log["variant"] == "challenger") & (rng.random(len(log)) < 0.2), "status"] = 500
    log.loc[log["variant"] == "challenger", "latency_ms"] += 5
    table = compare(log, metric="error_rate").table
    assert table.loc["challenger", "error_rate"] == pytest.approx(0.2, abs=0.05)
    assert table.loc["challenger", "error_rate_p_value"] < 1e-6
    assert table.loc["challenger", "latency_p_value"] < 1e-6
    with pytest.raises(InvalidArgument, match="unknown metric"):
        compare(log, metric="f7")
    with pytest.raises(InvalidArgument, match="needs ground truth"):
        compare(log.drop(columns=["ground_truth"]), metric="accuracy")
    with pytest.raises(InvalidArgument, match="empty"):
        compare(log.iloc[:0])


def test_summary_table_is_compact_with_integer_counts_and_verdicts() -> None:
    log = classification_log(np.random.default_rng(3), 800, 200, 0.8, 0.8, shadow_agree=0.9)
    result = compare(log, metric="accuracy")
    summary = result.summary
    assert list(summary.columns) == ["requests", "share", "errors", "p99 ms", "accuracy (95% CI)", "verdict"]
    assert list(summary.index) == ["main", "challenger", "shadow (shadow)"]
    assert summary["requests"].dtype.kind == "i" and summary["errors"].dtype.kind == "i"
    assert summary.loc["main", "requests"] == 800 and summary.loc["main", "share"] == "80.0%"
    assert summary.loc["main", "verdict"] == "baseline"
    low, high = result.table.loc["main", ["accuracy_ci_low", "accuracy_ci_high"]]
    assert (
        summary.loc["main", "accuracy (95% CI)"]
        == f"{result.table.loc['main', 'accuracy']:.4g} [{low:.4g}, {high:.4g}]"
    )
    assert summary.loc["challenger", "verdict"].startswith(("no significant difference", "better", "worse"))
    assert summary.loc["shadow (shadow)", "verdict"].startswith("agrees on ")
    assert result.details is result.table and result.details.shape[1] > 12  # the rest, on demand
    html = result._repr_html_()
    # the summary first; every number inside a closed <details>
    assert html.index("wolt-compare-summary") < html.index("<details class='wolt-compare-details'>")
    assert "accuracy_p_value" not in html.split("<details")[0]
    assert "73.0" not in repr(result) and ".details" in repr(result)


def test_regression_shadow_reports_error_distribution_not_exact_agreement() -> None:
    rng = np.random.default_rng(6)
    rows = []
    for i in range(1000):
        main_answer = rng.normal(scale=10.0)
        for variant, shadow, answer in (
            ("main", False, main_answer),
            ("shadow", True, main_answer + rng.normal(scale=0.5)),
        ):
            rows.append(
                {
                    "id": f"r{i}",
                    "variant": variant,
                    "shadow": shadow,
                    "latency_ms": 1.0,
                    "status": 200,
                    "output.predict": answer,
                }
            )
    result = compare(pd.DataFrame(rows))
    shadow = result.shadow_table.loc["shadow"]
    assert "agreement" not in result.shadow_table.columns  # no exact equality for real-valued answers
    assert shadow["mean_abs_difference"] == pytest.approx(0.5 * np.sqrt(2 / np.pi), rel=0.1)
    assert shadow["correlation"] > 0.99
    assert shadow["tolerance"] == pytest.approx(1.0, rel=0.1)  # 10% of main's s.d. (10)
    assert shadow["within_tolerance"] == pytest.approx(0.954, abs=0.03)  # |N(0, 0.5)| <= 1: 2 sigma
    assert result.summary.loc["shadow (shadow)", "verdict"].startswith("MAE 0.4")
    assert any("within ±" in n for n in result.notes)
    given = compare(pd.DataFrame(rows), tolerance=0.5).shadow_table.loc["shadow"]
    assert given["tolerance"] == 0.5 and given["within_tolerance"] == pytest.approx(0.683, abs=0.04)


def test_shadow_with_differently_named_outputs_pairs_by_position() -> None:
    """An ONNX shadow answers ``variable`` ([N,1] rows), the scikit-learn main ``predict``: still paired."""
    rows = []
    for i in range(50):
        rows.append({"id": f"r{i}", "variant": "main", "shadow": False, "latency_ms": 1.0, "status": 200,
                     "output.predict": float(i)})  # fmt: skip
        rows.append({"id": f"r{i}", "variant": "onnx", "shadow": True, "latency_ms": 1.0, "status": 200,
                     "output.variable": [float(i) + (0.5 if i < 10 else 0.0)]})  # fmt: skip
    table = compare(pd.DataFrame(rows)).shadow_table
    assert table.loc["onnx", "paired_requests"] == 50
    assert table.loc["onnx", "mean_abs_difference"] == pytest.approx(10 * 0.5 / 50)


def test_runtime_shadow_comparison_is_by_position_and_shape_tolerant() -> None:
    from wolt_jupyter.serving.shadow import disagrees

    live = np.array([1.0, 2.0, 3.0])
    assert disagrees(live, live.reshape(-1, 1)) is False  # [N] and [N,1] hold the same values
    assert disagrees(live, np.array([[1.0], [2.0], [4.0]])) is True
    assert disagrees(live, np.array([1.0, 2.0])) is True
    assert disagrees(None, live) is None
