"""The decision history: a private JSON-lines file, a table and a card, and the same in MLflow."""

from __future__ import annotations

import math
import stat

import pytest

from wolt_jupyter._mlflow import mlflow_client
from wolt_jupyter.config import settings
from wolt_jupyter.tracking import ensure_experiment
from wolt_jupyter.updater.decide import ArmStats, LiveWindow, Observations, RolloutState, decide
from wolt_jupyter.updater.history import DecisionRecord, History, history_table, record_in_mlflow, updates
from wolt_jupyter.updater.policy import parse

from helpers import unique

POLICY = parse(
    {
        "deployment": "eta",
        "watch": {"model": "eta"},
        "rollout": {"shadow": False, "canary": [{"weight": 10, "bake": "5m"}, {"weight": 100, "bake": "5m"}]},
        "guards": {"min_sample": 100, "max_p99_ms": 100, "max_error_rate": 0.2},
    }
)


def decisions(model: str = "eta", candidate: str = "7") -> list[DecisionRecord]:
    s = RolloutState("7", "6", 0, 0.0)
    looks = [
        (60.0, ArmStats(40, 0, 10.0), ArmStats(360, 1, 10.0)),  # too little data
        (400.0, ArmStats(400, 2, math.nan), ArmStats(3600, 30, 10.0)),  # NaN p99: no value, not a breach
        (500.0, ArmStats(900, 80, 12.0), ArmStats(8100, 70, 10.0)),  # clearly worse
    ]
    out = []
    for now, cand, champ in looks:
        d = decide(POLICY, s, Observations(now, live=LiveWindow(cand, champ)))
        out.append(
            DecisionRecord.of(
                d, deployment="eta", model=model, candidate=candidate, champion="6", now=1_800_000_000 + now
            )
        )
    return out


def test_history_file_table_and_card(wolt_home) -> None:
    h = History.of("eta")
    records = decisions()
    for r in records:
        h.append(r)
    assert h.path == wolt_home / "deployments" / "eta" / "updater" / "history.jsonl"
    assert stat.S_IMODE(h.path.stat().st_mode) == 0o600
    with h.path.open("a") as fh:
        fh.write('{"torn": ')  # a crash in the middle of a line
    back = h.records()
    assert [r.action for r in back] == ["hold", "advance", "rollback"]
    assert back == records

    table = history_table(back)
    assert list(table["action"]) == ["hold"] * 4 + ["advance"] * 3 + ["rollback"] * 3  # a row per check
    test = table[(table["check"] == "error rate vs champion") & (table["action"] == "rollback")].iloc[0]
    assert test["verdict"] == "fail" and test["n"] == 900 and test["n_baseline"] == 8100
    assert test["value"] == pytest.approx(80 / 900) and test["p_value"] < 0.05 and test["interval_low"] > 0
    assert "confidence sequence" in test["why"]
    p99 = table[(table["check"] == "p99 latency (ms)") & (table["action"] == "advance")].iloc[0]
    assert p99["verdict"] == "wait" and math.isnan(p99["value"])  # stored as null, shown as missing
    sample = table[table["check"] == "minimum sample"].iloc[0]
    assert sample["verdict"] == "wait" and sample["threshold"] == 100

    card = updates("eta")
    html = card._repr_html_()
    assert "version 7" in html and "rollback at canary 10%" in html and "wolt-updates" in html
    assert "error rate vs champion" in html
    assert "rollback" in repr(card)
    assert updates("other").table.empty and "none yet" in repr(updates("other"))


def test_record_in_mlflow(store: str) -> None:
    c = mlflow_client()
    model = unique("eta")
    c.create_registered_model(model)
    run = c.create_run(ensure_experiment(unique("eta-exp"), settings(), c))
    c.create_model_version(model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    records = decisions(model, candidate="1")
    run_ids = {record_in_mlflow(r) for r in records}
    assert len(run_ids) == 1  # one run per candidate
    (run_id,) = run_ids
    update_run = c.get_run(run_id)
    assert update_run.info.experiment_id == run.info.experiment_id  # the model's experiment
    assert update_run.data.tags["wolt.update.action"] == "rollback"
    assert "worse than the champion" in update_run.data.tags["wolt.update.reason"]
    assert update_run.info.status == "FAILED"
    history = c.get_metric_history(run_id, "error rate vs champion p_value")
    history = sorted(history, key=lambda m: m.timestamp)
    # the comparison runs from limit_min_requests on, so the first look (a hold) has it too
    assert [m.step for m in history] == [0, 0, 0]
    assert history[0].value > 0.05 and history[1].value > 0.05 and history[2].value < 0.05
    values = sorted(c.get_metric_history(run_id, "error rate vs champion"), key=lambda m: m.timestamp)
    assert values[-1].value == pytest.approx(80 / 900)
    mv = c.get_model_version(model, "1")
    assert mv.tags["wolt.update.action"] == "rollback" and mv.tags["wolt.update.run_id"] == run_id
    assert "**rollback** at canary 10%" in mv.description
    assert "**hold**" not in (mv.description or "")  # holds go to the run, not the version


def test_tiny_p_values_read_as_below_a_bound_never_zero(wolt_home) -> None:
    s = RolloutState("7", "6", 0, 0.0)
    worse = LiveWindow(ArmStats(20000, 3000, 10.0), ArmStats(81000, 700, 10.0))  # p underflows to 0.0
    d = decide(POLICY, s, Observations(500.0, live=worse))
    record = DecisionRecord.of(
        d, deployment="eta", model="eta", candidate="7", champion="6", now=1_800_000_500
    )
    History.of("eta").append(record)
    test = next(c for c in record.checks if c["name"] == "error rate vs champion")
    assert test["p_value"] < 1e-6 and "always-valid p < 1e-6" in test["why"] and "p=0)" not in test["why"]
    html = updates("eta")._repr_html_()
    assert "&lt; 1e-6" in html and "<td>0</td>" not in html and "0.000000" not in html


def test_the_webhook_outcome_is_folded_into_its_decision(wolt_home) -> None:
    h = History.of("eta")
    first, second, third = decisions()
    for r, i, notified in ((first, "a", "pending"), (second, "b", "pending"), (third, "c", "rate_limited")):
        r.id, r.notified = i, notified
        h.append(r)
    h.append(first)  # the same decision recorded again after a restart
    h.note("a", "sent")  # told after the fact
    h.note("b", "failed")
    assert [(r.id, r.notified) for r in h.records()] == [("a", "sent"), ("b", "failed"), ("c", "rate_limited"),
                                                         ("a", "sent")]  # fmt: skip
    row = dict(updates("eta").summary())["webhook messages"]
    assert row == "1 sent, 1 failed (see the service log), 1 held back by the rate limit"
