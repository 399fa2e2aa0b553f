"""Confidence-based performance estimation on simulated classifiers whose labels are known.

The world: two features, P(y = 1 | x) = sigmoid(1.5 x0 - x1 + 0.3) (about 76% accuracy at best). A *calibrated*
model returns that probability; a *badly calibrated* one returns it sharpened (logit x 3: overconfident); one
that *misses a feature* sees x0 only (71%, mildly overconfident).
Labels are drawn from the true probability, so the realised accuracy of a window is known and the estimate,
made without them, is compared with it. Covariate shift: the inputs of the analysed window come from a
narrower distribution (closer to the boundary: accuracy drops), P(y | x) unchanged.

``python tests/monitoring/test_estimate.py`` prints the measurements in docs/benchmarks/results/2026-12-07-automatic-updates.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from wolt_jupyter.monitoring.estimate import (
    Reference,
    estimate,
    estimate_from_log,
    isotonic,
    log_rows,
)

W, B = np.array([1.5, -1.0]), 0.3


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def sharpened(p: np.ndarray) -> np.ndarray:
    """A badly calibrated model: the right ranking, three times too sure."""
    return sigmoid(3.0 * np.log(p / (1.0 - p)))


def misses_a_feature(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A model that sees x0 only: less accurate, and mildly overconfident (it ignores x1's noise)."""
    return sigmoid(1.5 * x[:, 0] + 0.3)


def draw(
    rng: np.random.Generator, n: int, scale: float = 1.0, model: Callable | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(the model's positive-class probability, labels drawn from the truth) for ``n`` inputs ~ N(0, scale²)."""
    x = rng.normal(0.0, scale, size=(n, 2))
    truth = sigmoid(x @ W + B)
    y = (rng.random(n) < truth).astype(np.int64)
    if model is misses_a_feature:
        return model(truth, x), y
    return (truth if model is None else model(truth)), y


def realised(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p >= 0.5).astype(np.int64) == y))


def test_isotonic_fit_matches_scikit_learn_at_the_fitted_points() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    p, y = draw(rng, 500)
    p = np.round(p, 2)  # ties in the scores, which are pooled
    cal = isotonic(p, y)
    expected = IsotonicRegression(out_of_bounds="clip").fit(p, y).predict(p)
    np.testing.assert_allclose(cal(p), expected, atol=1e-12)
    assert np.all(np.diff(cal.means) > 0)  # strictly increasing blocks: equal neighbours were pooled
    assert cal.counts.sum() == 500


def test_calibrated_probabilities_estimate_the_realised_accuracy_within_the_stated_error() -> None:
    rng = np.random.default_rng(0)
    errors, inside = [], 0
    for _ in range(100):
        p_ref, y_ref = draw(rng, 2000)
        p, y = draw(rng, 3000)
        est = estimate(p, reference=Reference.of(p_ref, y_ref))
        errors.append(est.accuracy - realised(p, y))
        inside += abs(errors[-1]) <= 1.96 * est.se_realised
        assert est.rows == 3000 and est.reference == 2000 and est.classes == 2
    errors_ = np.abs(errors)
    assert errors_.max() < 0.05 and errors_.mean() < 0.01  # measured over 300: mean 0.006, max 0.033
    assert inside >= 90  # the 95% statement holds (measured 98 of 100)
    # calibrated probabilities need no map: the cross-validated check leaves them as they are, mostly
    p_ref, y_ref = draw(rng, 2000)
    assert not estimate(draw(rng, 100)[0], reference=Reference.of(p_ref, y_ref)).calibrated


def test_covariate_shift_with_a_calibrated_model_is_tracked() -> None:
    rng = np.random.default_rng(1)
    p_ref, y_ref = draw(rng, 2000)
    ref = Reference.of(p_ref, y_ref)
    p_before, y_before = draw(rng, 4000)
    p_after, y_after = draw(rng, 4000, scale=0.4)  # inputs crowd the boundary: accuracy drops
    before, after = estimate(p_before, reference=ref), estimate(p_after, reference=ref)
    drop = realised(p_before, y_before) - realised(p_after, y_after)
    assert drop > 0.08
    assert before.accuracy - after.accuracy == pytest.approx(drop, abs=0.03)
    assert abs(after.accuracy - realised(p_after, y_after)) <= 3 * after.se_realised
    # the drop is far outside both estimates' uncertainty
    assert before.accuracy - after.accuracy > 4 * np.hypot(before.se, after.se)


def test_a_badly_calibrated_candidate_is_calibrated_on_the_reference_first() -> None:
    rng = np.random.default_rng(2)
    p_ref, y_ref = draw(rng, 2000, model=sharpened)
    p, y = draw(rng, 3000, scale=0.6, model=sharpened)
    truth = realised(p, y)
    trusted = estimate(p)  # its own probabilities taken at their word: far too high
    assert trusted.reference == 0 and not trusted.calibrated
    assert trusted.accuracy - truth > 0.1
    est = estimate(p, reference=Reference.of(p_ref, y_ref))
    assert est.calibrated
    assert abs(est.accuracy - truth) <= 3 * est.se_realised and abs(est.accuracy - truth) < 0.03


def test_mild_overconfidence_is_found_by_the_calibration_test() -> None:
    """A model missing a feature is only mildly overconfident, yet its own probabilities over-estimate its
    accuracy by ~3 points; Cox's test finds it on 2,000 reference rows and the map corrects it."""
    rng = np.random.default_rng(8)
    p_ref, y_ref = draw(rng, 2000, model=misses_a_feature)
    p, y = draw(rng, 3000, model=misses_a_feature)
    truth = realised(p, y)
    assert estimate(p).accuracy - truth > 0.02
    est = estimate(p, reference=Reference.of(p_ref, y_ref))
    assert est.calibrated and abs(est.accuracy - truth) <= 3 * est.se_realised


def test_binary_f1_and_roc_auc_are_estimated_too() -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(4)
    p_ref, y_ref = draw(rng, 3000, model=sharpened)
    p, y = draw(rng, 6000, scale=0.7, model=sharpened)
    est = estimate(p, reference=Reference.of(p_ref, y_ref))
    assert est.roc_auc == pytest.approx(roc_auc_score(y, p), abs=0.02)
    assert est.f1 == pytest.approx(f1_score(y, (p >= 0.5).astype(int)), abs=0.02)


def test_multiclass_accuracy_with_top_label_calibration() -> None:
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])

    def world(n: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 2)) * 1.2 + 0.5
        logits = -0.5 * ((x[:, None, :] - centres) ** 2).sum(axis=2)
        true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(3, p=row) for row in true])
        served = np.exp(logits * temperature)
        return served / served.sum(axis=1, keepdims=True), y

    p_ref, y_ref = world(3000, 2.5)  # overconfident by a temperature of 2.5
    p, y = world(3000, 2.5)
    truth = float(np.mean(p.argmax(axis=1) == y))
    assert estimate(p).accuracy - truth > 0.05  # uncalibrated: too sure
    est = estimate(p, reference=Reference.of(p_ref, y_ref))
    assert est.classes == 3 and est.roc_auc is None and est.calibrated
    assert abs(est.accuracy - truth) <= 3 * est.se_realised and abs(est.accuracy - truth) < 0.03


def test_from_a_response_log_labels_map_to_columns_and_labelled_rows_calibrate() -> None:
    """A frame as read_frame gives it: string labels, probabilities as lists, late labels on the older rows."""
    rng = np.random.default_rng(6)
    p, y = draw(rng, 3000, model=sharpened)
    names = np.array(["ham", "spam"])  # column 0 is "ham", 1 is "spam"
    labelled = np.arange(3000) < 1500
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(3000)],
            "status": 200,
            "output.predict": names[(p >= 0.5).astype(int)],
            "output.predict_proba": [[1 - v, v] for v in p],
            "ground_truth": [names[v] if lab else float("nan") for v, lab in zip(y, labelled, strict=True)],
        }
    )
    proba, pred, truth, has_label = log_rows(frame)
    np.testing.assert_allclose(proba[:, 1], p)
    assert has_label.sum() == 1500 and np.array_equal(pred, (p >= 0.5).astype(int))
    assert np.array_equal(truth[has_label], y[labelled]) and np.all(truth[~has_label] == -1)
    est = estimate_from_log(frame)
    assert est is not None and est.rows == 1500 and est.reference == 1500 and est.calibrated
    assert abs(est.accuracy - realised(p[~labelled], y[~labelled])) <= 3 * est.se_realised
    # no probabilities logged (a regressor, or a classifier served without logging.probabilities): nothing
    assert estimate_from_log(frame.drop(columns=["output.predict_proba"])) is None


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no rows"):
        estimate(np.empty((0, 2)))
    with pytest.raises(ValueError, match="class column"):
        estimate(np.array([[0.2, 0.8]]), pred=[2])
    with pytest.raises(ValueError, match="classes"):
        estimate(np.array([[0.2, 0.8]]), reference=Reference.of(np.full((40, 3), 1 / 3), np.zeros(40)))


def measure(reps: int = 300) -> None:
    """The estimate against the realised accuracy, per scenario: mean and largest absolute error, and how
    often the realised accuracy fell inside the stated 95% interval (printed for the benchmark result)."""
    rng = np.random.default_rng(10)
    scenarios = [
        ("calibrated, no shift", None, 1.0),
        ("calibrated, covariate shift", None, 0.4),
        ("overconfident, calibrated on reference", sharpened, 1.0),
        ("overconfident, covariate shift", sharpened, 0.4),
        ("misses a feature", misses_a_feature, 1.0),
    ]
    print(
        "| scenario | realised accuracy | mean abs error | max abs error | inside 95% interval | raw (uncalibrated) error |"
    )
    print("|---|---|---|---|---|---|")
    for label, model, scale in scenarios:
        errs, raw, inside, accs = [], [], 0, []
        for _ in range(reps):
            p_ref, y_ref = draw(rng, 2000, model=model)
            p, y = draw(rng, 3000, scale=scale, model=model)
            est = estimate(p, reference=Reference.of(p_ref, y_ref))
            truth = realised(p, y)
            accs.append(truth)
            errs.append(abs(est.accuracy - truth))
            raw.append(abs(estimate(p).accuracy - truth))
            inside += errs[-1] <= 1.96 * est.se_realised
        print(
            f"| {label} | {np.mean(accs):.3f} | {np.mean(errs):.4f} | {np.max(errs):.4f} | "
            f"{inside / reps:.0%} | {np.mean(raw):.4f} |"
        )


if __name__ == "__main__":
    measure()
