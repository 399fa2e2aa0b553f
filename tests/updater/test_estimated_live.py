"""The estimated-accuracy guard end to end on the real parts: a real `mlflow server`, a local deployment whose
spec logs class probabilities, the update service in a thread, clients sending requests and no label ever.

The champion (v1) is a logistic regression on both features; the candidate (v2) has the stronger feature
zeroed out: as fast, never failing, 7 points less accurate. Only the accuracy estimated from the logged
probabilities (calibrated on the policy's offline dataset) can see that; it rolls the canary back.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import unique

pytestmark = pytest.mark.usefixtures("undeploy_all")
FEATURES = ["x0", "x1"]


def world(rng: np.random.Generator, n: int) -> pd.DataFrame:
    X = pd.DataFrame(rng.normal(size=(n, 2)), columns=FEATURES)
    truth = 1.0 / (1.0 + np.exp(-(1.5 * X.x0 - X.x1 + 0.3)))
    return X.assign(y=(rng.random(n) < truth).astype(np.int64))


class Clients:
    """Two threads sending one-row V2 requests with random features until stopped; answers are counted."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.ok = self.failed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in range(2)]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(100 + seed)
        while not self.stop.is_set():
            x = rng.normal(size=2)
            body = {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [float(v)]}
                               for f, v in zip(FEATURES, x, strict=True)]}  # fmt: skip
            req = urllib.request.Request(
                f"{self.url}/v2/models/{self.name}/infer", json.dumps(body).encode(),
                {"content-type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    json.loads(resp.read())
                self.ok += 1
            except OSError:
                self.failed += 1
                time.sleep(0.05)


def test_a_less_accurate_canary_is_rolled_back_before_any_label(
    mlflow_server: str, wolt_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    import wolt_jupyter
    from wolt_jupyter import deployments
    from wolt_jupyter._mlflow import mlflow_client as client
    from wolt_jupyter.updater.decide import ESTIMATE_CHECK, ESTIMATE_TEST
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import serve

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    rng = np.random.default_rng(21)
    train, holdout = world(rng, 3000), world(rng, 3000)
    name = unique("cbpe")
    X = train[FEATURES]
    champion = LogisticRegression().fit(X, train.y)
    candidate = LogisticRegression().fit(X.assign(x0=0.0), train.y)  # blind to x0
    for model in (champion, candidate):
        wolt_jupyter.register(model, name=name, input_example=X.head(3))
    client().set_registered_model_alias(name, "champion", "1")
    spec = {
        "name": "cbpe",
        "variants": [{"name": "main", "model": f"models:/{name}/1", "traffic": 100}],
        "logging": {"responses": True, "probabilities": True},
    }
    d = deployments.deploy("cbpe", spec=spec)
    policy = Policy.load(
        {
            "deployment": "cbpe",
            "watch": {"model": name, "alias": "challenger", "poll_seconds": 0.3},
            # the offline gate tolerates the regression (min_improvement -1): only the live guard may judge
            "offline": {
                "dataset": holdout,
                "target": "y",
                "metrics": {"accuracy": "max"},
                "min_improvement": -1,
            },
            "rollout": {
                "shadow": False,
                "canary": [{"weight": 50, "bake": "10m"}, {"weight": 100, "bake": "1m"}],
            },
            "guards": {
                "min_sample": 50,
                "step_deadline": "10m",
                "estimated_accuracy": {"min_rows": 200, "min_reference": 1000},
            },
        }
    )
    stop = threading.Event()
    service = threading.Thread(target=serve, args=(policy, stop), daemon=True)
    client().set_registered_model_alias(name, "challenger", "2")
    started = time.monotonic()
    with Clients(d.url, "cbpe") as clients:
        service.start()
        try:
            deadline = time.monotonic() + 240
            while True:
                table = wolt_jupyter.updates("cbpe").table
                if not table.empty and table["action"].isin(["promote", "rollback", "reject"]).any():
                    break
                assert time.monotonic() < deadline, table.tail(10).to_string()
                time.sleep(0.3)
        finally:
            stop.set()
            service.join(60)
    took = time.monotonic() - started
    final = table[table["action"].isin(["promote", "rollback", "reject"])]
    assert set(final["action"]) == {"rollback"} and set(final["step"]) == {"canary 50%"}, final.to_string()
    test = final[final["check"] == ESTIMATE_TEST].iloc[0]
    assert test["verdict"] == "fail" and ESTIMATE_TEST in final["reason"].iloc[0]
    # the estimates against what the two models really score on fresh data (never shown to the service)
    fresh = world(rng, 20000)
    real_c = float(np.mean(candidate.predict(fresh[FEATURES].assign(x0=0.0)) == fresh.y))
    real_0 = float(np.mean(champion.predict(fresh[FEATURES]) == fresh.y))
    assert real_0 - real_c > 0.05
    assert abs(test["value"] - real_c) < 0.04 and abs(test["baseline"] - real_0) < 0.04, test.to_dict()
    # the live decisions show both arms' estimates (all but a first look before any row was logged)
    looks = [set(g["check"]) for _, g in table[table["step"] == "canary 50%"].groupby("time", sort=True)]
    assert all(ESTIMATE_CHECK in checks for checks in looks[1:]) and ESTIMATE_CHECK in looks[-1]
    info = final[final["check"] == ESTIMATE_CHECK].iloc[0]
    assert info["value"] == test["value"] and info["baseline"] == test["baseline"]
    assert [(v["name"], v["traffic"]) for v in deployments.get("cbpe").variants] == [("main", 100)]
    assert clients.failed == 0 and clients.ok > 0
    print(f"\nCBPE guard: rolled back {took:.1f}s after the alias moved, {clients.ok} requests, no label; "
          f"estimated {test['value']:.3f} vs {test['baseline']:.3f}, real {real_c:.3f} vs {real_0:.3f}")  # fmt: skip
