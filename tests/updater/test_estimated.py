"""Accuracy estimated before labels arrive (CBPE) in the update service: the policy's guard, the check in
every live decision, the guard's soundness under repeated looks, and the estimate read from a real response
log and a registered model's offline dataset.

The simulated world is the one of ``tests/monitoring/test_estimate.py``: P(y = 1 | x) = sigmoid(1.5 x0 - x1 +
0.3). The champion returns that probability (76% accurate); the worse candidate sees x0 only (71%) and is
overconfident about it, so it must be calibrated on its reference before its estimate means anything; the
poor one sees x1 only.
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pandas as pd
import pytest
import yaml

from wolt_jupyter.monitoring.estimate import Estimate, Reference, estimate
from wolt_jupyter.responses import ResponseRecord, ResponseWriter, add_feedback, default_store_url
from wolt_jupyter.updater.decide import (
    ESTIMATE_CHECK,
    ESTIMATE_TEST,
    ArmStats,
    LiveWindow,
    Observations,
    RolloutState,
    decide,
    levels,
)
from wolt_jupyter.updater.observe import observe
from wolt_jupyter.updater.policy import EstimatedAccuracy, PolicyError, parse, without_unset

T0 = 1_000_000.0
W, B = np.array([1.5, -1.0]), 0.3


def policy(guard: object = None, **guards: object) -> object:
    g = {"min_sample": 50, "step_deadline": "2h", **guards}
    if guard is not None:
        g["estimated_accuracy"] = guard
    return parse(
        {
            "deployment": "churn",
            "watch": {"model": "churn"},
            "rollout": {
                "shadow": False,
                "canary": [{"weight": 25, "bake": "1h"}, {"weight": 100, "bake": "1m"}],
            },
            "guards": g,
        }
    )


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def world(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 2))
    truth = sigmoid(x @ W + B)
    return x, truth, (rng.random(n) < truth).astype(np.int64)


def champion_model(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return truth


def worse_model(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return sigmoid(1.5 * x[:, 0] + 0.3)


def poor_model(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Sees x1 only (the weaker feature: about 69% accurate) and is far too sure of itself."""
    return sigmoid(3.0 * (0.3 - x[:, 1]))


def est(accuracy: float, se: float = 0.005, rows: int = 1000, reference: int = 500) -> Estimate:
    return Estimate(accuracy, se, se, rows, reference, False, 2, 0.8, 0.7)


def window(cand: Estimate | None, champ: Estimate | None, n: int = 1000) -> LiveWindow:
    return LiveWindow(ArmStats(n, 0, 10.0, estimate=cand), ArmStats(3 * n, 0, 10.0, estimate=champ))


# -- the policy ------------------------------------------------------------------------------------------------
def test_the_guard_is_off_by_default_and_validated() -> None:
    assert policy().guards.estimated_accuracy is None
    assert policy(False).guards.estimated_accuracy is None
    assert policy(True).guards.estimated_accuracy == EstimatedAccuracy()
    g = policy({"margin": 0.02, "min_effect": 0.05, "min_rows": 300, "min_reference": 1000})
    assert g.guards.estimated_accuracy == EstimatedAccuracy(0.02, 0.05, 300, 1000)
    # one more comparison at each compared step: alpha is split over it too (Bonferroni, as the rule does)
    assert levels(policy(True)).comparison == pytest.approx(levels(policy()).comparison / 2)
    # the background service's private copy reads back the same
    again = parse(yaml.safe_load(yaml.safe_dump(without_unset(g.to_dict()))))
    assert again.guards.estimated_accuracy == g.guards.estimated_accuracy
    for bad, words in (
        ({"margin": 1.0}, "guards.estimated_accuracy.margin"),
        ({"margin": -0.1}, "guards.estimated_accuracy.margin"),
        ({"min_effect": 0}, "guards.estimated_accuracy.min_effect"),
        ({"min_reference": 10}, "guards.estimated_accuracy.min_reference': must be an integer >= 30"),
        ({"metric": "f1"}, "guards.estimated_accuracy.metric': unknown key"),
        ("yes", "guards.estimated_accuracy': must be a mapping"),
    ):
        with pytest.raises(PolicyError, match=words):
            policy(bad)


# -- the decision ----------------------------------------------------------------------------------------------
def test_every_live_decision_shows_the_estimates_and_only_the_guard_judges_them() -> None:
    state = RolloutState("2", "1", 0, T0)
    # too little data: a hold, with both estimates in it
    short = LiveWindow(ArmStats(10, 0, 10.0, estimate=est(0.70)), ArmStats(30, 0, 10.0, estimate=est(0.80)))
    d = decide(policy(), state, Observations(T0 + 10, live=short))
    info = [c for c in d.checks if c.name == ESTIMATE_CHECK]
    assert d.action == "hold" and len(info) == 1 and info[0].verdict == "n/a"
    assert info[0].value == 0.70 and info[0].baseline == 0.80 and "candidate 0.700" in info[0].why
    assert "ROC AUC 0.800, F1 0.700" in info[0].why and "no concept drift" in info[0].why
    # a hard-limit rollback still shows them
    broken = LiveWindow(ArmStats(100, 60, 10.0, estimate=est(0.7)), ArmStats(300, 0, 10.0, estimate=est(0.8)))
    d = decide(policy(), state, Observations(T0 + 10, live=broken))
    assert d.action == "rollback" and "hard limit" in d.reason
    assert [c.name for c in d.checks if c.name == ESTIMATE_CHECK] == [ESTIMATE_CHECK]
    # ten points worse, guard off: shown, never a rollback
    d = decide(policy(), state, Observations(T0 + 10, live=window(est(0.70), est(0.80))))
    assert d.action == "hold" and not [c for c in d.checks if c.name == ESTIMATE_TEST]
    # no probabilities logged: no check at all
    d = decide(policy(), state, Observations(T0 + 10, live=window(None, None)))
    assert not [c for c in d.checks if c.name.startswith("estimated")]


@pytest.mark.parametrize(
    ("cand", "champ", "guard", "action", "verdict", "words"),
    [
        (est(0.70), est(0.80), True, "rollback", "fail", "worse by +0.1000"),
        (est(0.79), est(0.80), True, "hold", "pass", "not above the margin 0"),
        (est(0.85), est(0.80), True, "hold", "pass", "difference -0.0500"),
        # within the margin: a 3-point drop is tolerated when 5 are
        (est(0.77), est(0.80), {"margin": 0.05}, "hold", "pass", "not above the margin 0.05"),
        (est(0.70, reference=50), est(0.80), True, "hold", "n/a", "candidate 50/100 labelled rows"),
        (est(0.70, rows=40), est(0.80), True, "hold", "n/a", "candidate 40/100 unlabelled rows"),
        (None, est(0.80), True, "hold", "n/a", "candidate has no estimate"),
        # uncertain estimates: the same 10 points are not enough
        (est(0.70, se=0.05), est(0.80, se=0.05), True, "hold", "pass", "not above"),
    ],
)
def test_the_guard(cand, champ, guard, action: str, verdict: str, words: str) -> None:
    d = decide(policy(guard), RolloutState("2", "1", 0, T0), Observations(T0 + 10, live=window(cand, champ)))
    (test,) = [c for c in d.checks if c.name == ESTIMATE_TEST]
    assert d.action == action and test.verdict == verdict and words in test.why, test.why
    if verdict == "fail":
        assert d.reason.startswith("worse than the champion") and ESTIMATE_TEST in d.reason
        assert test.interval is not None and test.interval[0] > 0


def test_at_full_weight_the_guard_has_no_champion_to_judge_against() -> None:
    d = decide(
        policy(True), RolloutState("2", "1", 1, T0), Observations(T0 + 10, live=window(est(0.5), None))
    )
    assert not [c for c in d.checks if c.name == ESTIMATE_TEST]
    assert [c.verdict for c in d.checks if c.name == ESTIMATE_CHECK] == ["n/a"]


def _rolled_back(candidate_model, streams: int, rng: np.random.Generator, reference: int) -> float:
    """Share of canaries (25%) rolled back by the guard, looked at every 200 candidate rows up to 2000; each arm
    calibrated on its own ``reference`` labelled rows."""
    guard = {"min_effect": 0.03, "min_rows": 100, "min_reference": 100}
    pol = policy(guard)
    count = 0
    for _ in range(streams):
        x, truth, y = world(rng, reference)
        ref_c = Reference.of(candidate_model(x, truth), y)
        x, truth, y = world(rng, reference)
        ref_0 = Reference.of(champion_model(x, truth), y)
        x, truth, _ = world(rng, 2000)
        p_c = candidate_model(x, truth)
        x, truth, _ = world(rng, 6000)
        p_0 = champion_model(x, truth)
        for j, n in enumerate(range(200, 2001, 200)):
            live = window(estimate(p_c[:n], reference=ref_c), estimate(p_0[: 3 * n], reference=ref_0), n)
            if (
                decide(pol, RolloutState("2", "1", 0, T0), Observations(T0 + 60 * j, live=live)).action
                == "rollback"
            ):
                count += 1
                break
    return count / streams


def test_the_guard_is_sound_under_repeated_looks_and_catches_a_worse_model() -> None:
    """A/A: a candidate as good as the champion is (almost) never rolled back however often the loop looks; a
    candidate 5 points less accurate often is, once both arms have 2,000 labelled reference rows. Measured with
    alpha 0.05 split over the policy's two comparisons: 0 of 200 A/A streams, 66% of 200 worse ones (0% with
    300 reference rows: the reference bounds what can be told apart)."""
    rng = np.random.default_rng(11)
    alpha = 0.05
    assert _rolled_back(champion_model, 100, rng, 2000) <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / 100)
    assert _rolled_back(worse_model, 60, rng, 2000) >= 0.4  # 66% expected: 4 standard errors of margin


# -- from a real response log ----------------------------------------------------------------------------------
def test_the_estimates_come_from_the_response_log_and_roll_a_worse_canary_back(wolt_home) -> None:
    """Champion and a poor candidate log their answers and class probabilities (as logging.probabilities does);
    labels arrived for the older 40% of requests, and each arm has 2,000 rows of an offline dataset. Each arm's
    estimate on the unlabelled rows is checked against their hidden labels, and the guard rolls the candidate
    back (with only its 400 labelled rows to calibrate on, the candidate's estimate is too uncertain to)."""
    url = default_store_url("churn", wolt_home)
    rng = np.random.default_rng(12)
    start = time.time() - 1000
    hidden: dict[str, list[bool]] = {"main": [], "candidate": []}
    shown: dict[str, list[bool]] = {"main": [], "candidate": []}
    feedback = []
    with ResponseWriter(url) as w:
        for i in range(4000):
            variant, model = ("candidate", poor_model) if i % 4 == 0 else ("main", champion_model)
            x, truth, y = world(rng, 1)
            p = float(model(x, truth)[0])
            rid = uuid.uuid4().hex
            outputs = {"predict": [int(p >= 0.5)], "predict_proba": [[1 - p, p]]}
            w.submit(ResponseRecord(rid, start + i * 0.1, "churn", variant, "churn", "1", False,
                                    {"x0": [float(x[0, 0])], "x1": [float(x[0, 1])]}, outputs, 5.0, 200))  # fmt: skip
            right = int(p >= 0.5) == int(y[0])
            if i < 1600:
                feedback.append({"id": rid, "ground_truth": int(y[0])})
                shown[variant].append(right)
            else:
                hidden[variant].append(right)
    add_feedback(url, feedback)
    # a held-out dataset scored by each model (what the service makes of the policy's offline dataset)
    offline = {}
    for arm, model in (("candidate", poor_model), ("champion", champion_model)):
        x, truth, y = world(rng, 2000)
        offline[arm] = Reference.of(model(x, truth), y)
    accuracy = policy(live_metric={"name": "accuracy", "min_effect": 0.05}).guards.live_metric
    live = observe("churn", start, candidate="candidate", champion="main", shadow=False, live_metric=accuracy,
                   references=offline)  # fmt: skip
    for arm, variant in ((live.candidate, "candidate"), (live.champion, "main")):
        e = arm.estimate
        realised = float(np.mean(hidden[variant]))
        assert e is not None and e.rows == len(hidden[variant]) and e.reference == len(shown[variant]) + 2000
        assert abs(e.accuracy - realised) <= 3 * e.se_realised, (variant, e, realised)
        # the labelled live metric still reads the answer, not the probabilities logged beside it
        assert arm.metric is not None and arm.metric.mean == pytest.approx(np.mean(shown[variant]))
    assert live.candidate.estimate.calibrated  # overconfident: calibrated on its labelled rows first
    # the guard alone (no labelled metric in this policy) rolls it back
    d = decide(
        policy({"min_reference": 300}),
        RolloutState("2", "1", 0, start),
        Observations(time.time(), live=live),
    )
    assert d.action == "rollback" and ESTIMATE_TEST in d.reason, "\n".join(c.why for c in d.checks)


def test_the_offline_dataset_is_a_reference_with_the_models_own_classes(wolt_home) -> None:
    from sklearn.linear_model import LogisticRegression

    from wolt_jupyter import registry
    from wolt_jupyter.updater.gates import offline_reference

    from helpers import unique

    rng = np.random.default_rng(13)
    x, _, y = world(rng, 600)
    X = pd.DataFrame(x, columns=["x0", "x1"])
    labels = np.array(["churns", "stays"])[1 - y]  # classes_ sorts them: column 0 is "churns"
    clf = LogisticRegression().fit(X, labels)
    name = unique("churn")
    registry.register(clf, name=name, input_example=X.head(3))
    gate = parse(
        {
            "deployment": "churn",
            "watch": {"model": name},
            "offline": {"dataset": X.assign(label=labels), "target": "label", "metrics": ["accuracy"]},
        }
    ).offline
    ref = offline_reference(gate, f"models:/{name}/1")
    assert ref is not None and len(ref) == 600
    np.testing.assert_allclose(ref.proba, clf.predict_proba(X))
    assert np.array_equal(ref.truth, (labels == "stays").astype(int))  # "stays" is column 1
    assert np.array_equal(ref.pred, list(clf.classes_).index("stays") * (clf.predict(X) == "stays"))
    # a regressor has no class probabilities: no reference
    from sklearn.linear_model import LinearRegression

    registry.register(LinearRegression().fit(X, y), name=name + "-reg", input_example=X.head(3))
    assert offline_reference(gate, f"models:/{name}-reg/1") is None
