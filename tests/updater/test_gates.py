"""The offline and replay gates with real registered scikit-learn models and a real response log."""

from __future__ import annotations

import time
import uuid

import mlflow
import mlflow.data
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score, root_mean_squared_error

from wolt_jupyter import registry, tracking
from wolt_jupyter._mlflow import configure
from wolt_jupyter.responses import ResponseRecord, ResponseWriter, add_feedback, default_store_url, read_frame
from wolt_jupyter.updater.decide import Observations, RolloutState, decide
from wolt_jupyter.updater.gates import load_dataset, offline_gate, replay_gate
from wolt_jupyter.updater.policy import parse

from helpers import ISOLATED_ENV, unique

FEATURES = ["x1", "x2", "x3"]


def regression_data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=FEATURES)
    return X.assign(y=2.0 * X.x1 - 1.0 * X.x2 + 0.5 * X.x3 + rng.normal(0, 0.3, n))


class Failing(mlflow.pyfunc.PythonModel):
    """A model that cannot answer rows with a large x1 (a bug the replay must catch before live traffic)."""

    def __init__(self, inner: LinearRegression) -> None:
        self.inner = inner

    def predict(self, context, model_input, params=None):
        if (model_input["x1"] > 1.5).any():
            raise ValueError("x1 out of range")
        return self.inner.predict(model_input[FEATURES])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """Champion v1 (sees only x1), candidate v2 (all features), worse v3 (sees only x3), broken v4; registered
    once for the module in its own state dir."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("gates") / "wolt-home"
        mp.setenv("WOLT_JUPYTER_HOME", str(home))
        for var in ISOLATED_ENV:
            mp.delenv(var, raising=False)
        yield home, _register_versions()


def _register_versions() -> dict[str, str]:
    train = regression_data(400, 0)
    X, y = train[FEATURES], train["y"]
    name = unique("eta")
    full = LinearRegression().fit(X, y)
    for model in (
        LinearRegression().fit(X.assign(x2=0.0, x3=0.0), y),
        full,
        LinearRegression().fit(X.assign(x1=0.0, x2=0.0), y),
        Failing(full),
    ):
        registry.register(model, name=name, input_example=X.head(5))
    return {v: f"models:/{name}/{v}" for v in ("1", "2", "3", "4")}


def test_offline_gate_better_and_worse_candidates(models, tmp_path) -> None:
    _, uri = models
    holdout = regression_data(300, 1)
    path = tmp_path / "holdout.parquet"
    holdout.to_parquet(path)
    policy = parse({
        "deployment": "eta",
        "watch": {"model": "eta"},
        "offline": {"dataset": str(path), "target": "y", "metrics": {"rmse": "min", "r2": "max"}, "latency_budget_ms": 1000, "min_improvement": 0.05},
    })  # fmt: skip
    gate = policy.offline
    better = offline_gate(gate, uri["2"], uri["1"])
    assert better.rows == 300 and better.error is None
    champion_pred = registry_predict(uri["1"], holdout[FEATURES])
    candidate_pred = registry_predict(uri["2"], holdout[FEATURES])
    assert better.candidate["rmse"] == pytest.approx(root_mean_squared_error(holdout.y, candidate_pred))
    assert better.champion["rmse"] == pytest.approx(root_mean_squared_error(holdout.y, champion_pred))
    assert better.candidate["r2"] == pytest.approx(r2_score(holdout.y, candidate_pred))
    assert better.candidate["rmse"] < better.champion["rmse"]
    assert better.latency_p99_ms is not None and better.latency_p99_ms > 0
    state = RolloutState("2", "1", 0, 0.0)
    assert decide(policy, state, Observations(0.0, offline=better)).action == "advance"

    worse = offline_gate(gate, uri["3"], uri["1"])
    assert worse.candidate["rmse"] > worse.champion["rmse"]
    d = decide(policy, state, Observations(0.0, offline=worse))
    assert d.action == "reject" and "rmse" in d.reason

    broken = offline_gate(gate, uri["4"], uri["1"])  # x1 > 1.5 occurs in 300 normal rows
    assert broken.error == "ValueError: x1 out of range"
    assert decide(policy, state, Observations(0.0, offline=broken)).action == "reject"

    first = offline_gate(gate, uri["2"], None)  # no champion yet
    assert (
        first.champion is None and decide(policy, state, Observations(0.0, offline=first)).action == "advance"
    )


def registry_predict(uri: str, X: pd.DataFrame) -> np.ndarray:
    configure()  # the module's store, whatever another test pointed MLflow at
    return np.asarray(mlflow.pyfunc.load_model(uri).predict(X)).ravel()


def test_datasets_of_every_kind(models, tmp_path) -> None:
    frame = regression_data(50, 2)
    csv = tmp_path / "h.csv"
    frame.to_csv(csv, index=False)
    with tracking.experiment(unique("data"), autolog=False) as run:
        parquet = tmp_path / "h.parquet"
        frame.to_parquet(parquet)
        mlflow.log_artifact(str(parquet), "data")
    kinds = [
        frame,
        str(csv),
        mlflow.data.from_pandas(frame, targets="y"),
        f"runs:/{run.run_id}/data/h.parquet",
    ]
    for dataset in kinds:
        X, y = load_dataset(dataset, "y")
        assert list(X.columns) == FEATURES and np.allclose(y.to_numpy(), frame.y.to_numpy())
    X, _ = load_dataset(frame, "y", max_rows=10)
    assert len(X) == 10
    with pytest.raises(Exception, match="'label' is not a column"):
        load_dataset(frame, "label")
    with pytest.raises(Exception, match="does not exist"):
        load_dataset(str(tmp_path / "missing.csv"), "y")


def test_ranking_metric_uses_probabilities(wolt_home) -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(400, 2)), columns=["a", "b"])
    y = (X.a + 0.5 * rng.normal(size=400) > 0).astype(int)
    name = unique("churn")
    clf = LogisticRegression().fit(X, y)
    registry.register(clf, name=name, input_example=X.head(3))
    policy = parse(
        {
            "deployment": "churn",
            "watch": {"model": name},
            "offline": {"dataset": X.assign(y=y), "target": "y", "metrics": ["roc_auc", "accuracy"]},
        }
    )
    res = offline_gate(policy.offline, f"models:/{name}/1", None)
    assert res.candidate["roc_auc"] == pytest.approx(roc_auc_score(y, clf.predict_proba(X)[:, 1]))
    assert res.candidate["roc_auc"] > res.candidate["accuracy"] - 0.2  # computed on scores, not 0/1 labels


def write_log(deployment: str, home, frame: pd.DataFrame, answer) -> list[str]:
    """The champion's traffic as the serving runtime logs it: one- and three-row requests, shadow copies too."""
    url = default_store_url(deployment, home)
    ids = []
    with ResponseWriter(url) as writer:
        start, t = 0, time.time() - 600
        while start < len(frame):
            size = 1 if start % 4 else 3
            chunk = frame.iloc[start : start + size]
            rid = uuid.uuid4().hex
            inputs = {c: chunk[c].tolist() for c in FEATURES}
            outputs = {"predictions": [float(v) for v in answer(chunk[FEATURES])]}
            for shadow in (False, True):
                writer.submit(
                    ResponseRecord(
                        rid,
                        t,
                        deployment,
                        "shadow" if shadow else "main",
                        "eta",
                        "1",
                        shadow,
                        inputs,
                        outputs,
                        1.0,
                        200,
                    )
                )
            ids.append(rid)
            start += size
            t += 0.1
        writer.submit(
            ResponseRecord(
                "bad", t, deployment, "main", "eta", "1", False, {"x1": ["oops"]}, {}, 1.0, 400, "bad input"
            )
        )
    return ids


def test_replay_gate_against_the_logged_answers(models) -> None:
    home, uri = models
    deployment = unique("eta")
    traffic = regression_data(320, 4)
    ids = write_log(deployment, home, traffic, lambda X: registry_predict(uri["1"], X))
    # ground truth arrives for the first half of the requests
    url = default_store_url(deployment, home)
    truth = []
    start = 0
    for rid in ids:
        size = 1 if start % 4 else 3
        truth.append({"id": rid, "ground_truth": traffic.y.iloc[start : start + size].tolist()})
        start += size
    add_feedback(url, truth[: len(ids) // 2])

    gate = parse(
        {
            "deployment": "eta",
            "watch": {"model": "eta"},
            "replay": {"requests": 100, "metric": "mae", "max_mean_abs_difference": 5.0},
        }
    ).replay
    res = replay_gate(gate, deployment, uri["2"], variant="main")
    assert res.requests == 100 and res.errors == 0 and res.first_error is None
    assert res.latency_p99_ms is not None and res.latency_p99_ms > 0

    # what the gate compared: the candidate's answers and the champion's logged answers, same rows
    log = read_frame(deployment, variant="main")
    log = log[log.status == 200]
    last = list(dict.fromkeys(log.id))[-100:]
    rows = log[log.id.isin(last)]
    X = rows[[f"input.{c}" for c in FEATURES]].set_axis(FEATURES, axis=1)
    cand = registry_predict(uri["2"], X)
    assert res.mean_abs_difference == pytest.approx(
        np.mean(np.abs(cand - rows["output.predictions"].to_numpy()))
    )
    labelled = rows.ground_truth.notna().to_numpy()
    assert res.labelled == labelled.sum() > 0
    y = rows.ground_truth.to_numpy()[labelled].astype(float)
    assert res.candidate_metric == pytest.approx(mean_absolute_error(y, cand[labelled]))
    assert res.champion_metric == pytest.approx(
        mean_absolute_error(y, rows["output.predictions"].to_numpy()[labelled])
    )
    assert res.candidate_metric < res.champion_metric  # the better model is better on real labels too

    policy_state = RolloutState("2", "1", 0, 0.0)
    policy = parse(
        {"deployment": "eta", "watch": {"model": "eta"}, "replay": {"requests": 100, "metric": "mae"}}
    )
    assert decide(policy, policy_state, Observations(0.0, replay=res)).action == "advance"

    broken = replay_gate(gate, deployment, uri["4"])
    assert broken.errors > 0 and broken.first_error == "ValueError: x1 out of range"
    d = decide(policy, policy_state, Observations(0.0, replay=broken))
    assert d.action == "reject" and "x1 out of range" in d.reason


def test_replay_with_no_log_is_no_data(models) -> None:
    _, uri = models
    gate = parse({"deployment": "eta", "watch": {"model": "eta"}, "replay": {"required": True}}).replay
    res = replay_gate(gate, "never-served", uri["2"])
    assert res.requests == 0
    policy = parse({"deployment": "eta", "watch": {"model": "eta"}, "replay": {"required": True}})
    d = decide(policy, RolloutState("2", "1", 0, 0.0), Observations(0.0, replay=res))
    assert d.action == "reject" and "no data" in d.reason
