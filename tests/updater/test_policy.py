"""Policy parsing: YAML files, dicts and Python objects; every bad field named in one line."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from wolt_jupyter.updater.policy import CanaryStep, Policy, PolicyError, Step, parse

FULL = """
deployment: eta
watch: {model: eta, alias: challenger, poll_seconds: 2}
offline:
  dataset: holdout.parquet
  target: y
  metrics: {rmse: min, r2: max, mean_absolute_error: min}
  min_improvement: 0.01
  latency_budget_ms: 20
replay: {requests: 500, max_error_rate: 0.01, min_agreement: 0.9, metric: accuracy}
rollout:
  shadow: {requests: 300, duration: 10m}
  canary: [{weight: 5, bake: 1m}, {weight: 50, bake: 90s}, {weight: 100, bake: 2m}]
guards:
  max_error_rate: 0.02
  max_p99_ms: 250
  alpha: 0.01
  limit_alpha: 0.005
  live_metric: {name: mae, min_effect: 0.5}
  min_sample: 150
  step_deadline: 30m
notify: {webhook: "http://127.0.0.1:9/hook", secret_env: WOLT_TEST_HOOK_SECRET, rate_limit: 3, per: 10m}
retrain: {command: ["python", "train.py"], drift_threshold: 0.2, cooldown: 1h, window: 30m, metric: mse, check_every: 10s}
"""


def test_full_yaml_policy(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WOLT_TEST_HOOK_SECRET", "s3cret-value")
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    p = Policy.load(path)
    assert p.deployment == "eta" and p.watch.alias == "challenger" and p.watch.poll_seconds == 2
    assert p.offline is not None and p.offline.dataset == str(
        tmp_path / "holdout.parquet"
    )  # relative to the file
    assert [(m.name, m.direction, m.min_improvement) for m in p.offline.metrics] == [
        ("rmse", "min", 0.01),
        ("r2", "max", 0.01),
        ("mean_absolute_error", "min", 0.01),
    ]
    assert p.replay is not None and p.replay.requests == 500 and p.replay.metric == "accuracy"
    assert p.rollout.shadow is not None and p.rollout.shadow.duration == 600
    assert p.rollout.canary == (CanaryStep(5, 60), CanaryStep(50, 90), CanaryStep(100, 120))
    assert p.guards.alpha == 0.01 and p.guards.step_deadline == 1800 and p.guards.min_sample == 150
    assert p.guards.limit_alpha == 0.005
    assert p.guards.live_metric is not None and p.guards.live_metric.direction == "min"
    assert p.notify is not None and p.notify.secret == "s3cret-value" and p.notify.per == 600
    assert "s3cret-value" not in repr(p) and "s3cret-value" not in str(p.to_dict())
    assert p.to_dict()["notify"]["secret"] == "****"
    assert p.retrain is not None and p.retrain.command == ("python", "train.py")
    assert (p.retrain.window, p.retrain.metric, p.retrain.check_every, p.retrain.min_labels) == (
        1800,
        "mse",
        10,
        50,
    )
    assert [s.label for s in p.steps()] == [
        "offline",
        "replay",
        "shadow",
        "canary 5%",
        "canary 50%",
        "canary 100%",
    ]


def test_python_objects_and_defaults() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})

    def my_metric(y_true, y_pred) -> float:
        return 0.0

    p = Policy.load(
        {
            "deployment": "churn",
            "watch": {"model": "churn"},
            "offline": {
                "dataset": frame,
                "target": "y",
                "metrics": [{"name": my_metric, "direction": "max"}, "roc_auc"],
            },
        }
    )
    assert p.offline is not None and p.offline.dataset is frame
    assert p.offline.metrics[0].fn is my_metric and p.offline.metrics[0].name == "my_metric"
    assert p.offline.metrics[1].direction == "max" and p.offline.metrics[1].needs_scores
    assert p.watch.alias is None and p.watch.tag is None  # every new READY version
    assert [s.kind for s in p.steps()] == ["offline", "shadow", "canary", "canary", "canary", "canary"]
    assert Policy.load(p) is p
    assert p.to_dict()["offline"]["dataset"] == "<DataFrame>"
    assert p.steps()[-1] == Step("canary", 100, 300.0)


def test_per_metric_settings_in_the_mapping_form() -> None:
    p = parse({"deployment": "a", "watch": {"model": "m"},
               "offline": {"dataset": "d.csv", "target": "y", "min_improvement": 0.01,
                           "metrics": {"rmse": {"min_improvement": 0.2}, "f1": "max"}}})  # fmt: skip
    assert p.offline is not None
    assert [(m.name, m.direction, m.min_improvement) for m in p.offline.metrics] == [
        ("rmse", "min", 0.2),
        ("f1", "max", 0.01),
    ]


def test_guards_defaults_and_the_levels_of_old_policies() -> None:
    g = parse({"deployment": "a", "watch": {"model": "m"}}).guards
    assert (g.max_error_rate, g.alpha, g.limit_alpha, g.limit_min_requests) == (0.05, 0.02, 0.02, 10)
    # a policy written before the exact error-rate test still loads; its error_rate_min_effect is not used
    old = parse(
        {"deployment": "a", "watch": {"model": "m"}, "guards": {"alpha": 0.05, "error_rate_min_effect": 0.01}}
    )
    assert old.guards.alpha == 0.05 and "error_rate_min_effect" not in old.to_dict()["guards"]
    assert (
        parse(
            {"deployment": "a", "watch": {"model": "m"}, "guards": {"limit_alpha": 0.001}}
        ).guards.limit_alpha
        == 0.001
    )


def test_tag_matching() -> None:
    p = parse({"deployment": "a", "watch": {"model": "m", "tag": "stage=ready"}})
    assert p.watch.tag_match({"stage": "ready"}) and not p.watch.tag_match({"stage": "no"})
    q = parse({"deployment": "a", "watch": {"model": "m", "tag": "validated"}})
    assert q.watch.tag_match({"validated": "anything"}) and not q.watch.tag_match({})


BASE = {"deployment": "eta", "watch": {"model": "eta"}}


def _with(path: str, value):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"watch": {"model": "m"}}, "deployment", "required"),
        (_with("deployment", "Bad_Name"), "deployment", "DNS-1123"),
        ({"deployment": "a"}, "watch", "required"),
        (_with("watch.model", "a/b"), "watch.model", "cannot contain"),
        (_with("watch.alias", "latest"), "watch.alias", "not allowed"),
        (_with("watch.colour", "red"), "watch.colour", "unknown key"),
        (_with("surprise", 1), "surprise", "unknown key"),
        (_with("offline", {"target": "y", "metrics": {"rmse": "min"}}), "offline.dataset", "required"),
        (
            _with("offline", {"dataset": "x.txt", "target": "y", "metrics": {"rmse": "min"}}),
            "offline.dataset",
            ".parquet",
        ),
        (
            _with("offline", {"dataset": "x.csv", "target": "y", "metrics": {"rsme": "min"}}),
            "offline.metrics.rsme",
            "unknown metric",
        ),
        (
            _with("offline", {"dataset": "x.csv", "target": "y", "metrics": {"rmse": "down"}}),
            "offline.metrics.rmse.direction",
            "'max' or 'min'",
        ),
        (_with("offline", {"dataset": "x.csv", "metrics": {"rmse": "min"}}), "offline.target", "required"),
        (
            _with("offline", {"dataset": "x.csv", "target": "y", "metrics": {}}),
            "offline.metrics",
            "at least one",
        ),
        (
            _with(
                "offline",
                {"dataset": "x.csv", "target": "y", "metrics": {"rmse": "min"}, "latency_budget_ms": -1},
            ),
            "offline.latency_budget_ms",
            "positive",
        ),
        (_with("replay", {"requests": 0}), "replay.requests", "integer >= 1"),
        (_with("replay", {"max_error_rate": 1.5}), "replay.max_error_rate", "fraction"),
        (_with("replay", {"metric": "nope"}), "replay.metric", "unknown metric"),
        (
            _with("rollout", {"canary": [{"weight": 5, "bake": "1m"}, {"weight": 5, "bake": "1m"}]}),
            "rollout.canary[1].weight",
            "increase",
        ),
        (_with("rollout", {"canary": [{"weight": 150, "bake": "1m"}]}), "rollout.canary[0].weight", "1..100"),
        (
            _with("rollout", {"canary": [{"weight": 50, "bake": "1m"}]}),
            "rollout.canary",
            "last weight must be 100",
        ),
        (
            _with("rollout", {"canary": [{"weight": 100, "bake": "soon"}]}),
            "rollout.canary[0].bake",
            "duration",
        ),
        (_with("rollout", {"canary": [{"weight": 100}]}), "rollout.canary[0].bake", "required"),
        (_with("rollout", {"shadow": {}}), "rollout.shadow", "requests: N"),
        (_with("guards", {"alpha": 0}), "guards.alpha", "(0, 0.5]"),
        (_with("guards", {"limit_alpha": 0.9}), "guards.limit_alpha", "(0, 0.5]"),
        (_with("guards", {"error_rate_min_effect": 0}), "guards.error_rate_min_effect", "(0, 1]"),
        (_with("guards", {"min_sample": 2.5}), "guards.min_sample", "integer"),
        (_with("guards", {"step_deadline": "-5m"}), "guards.step_deadline", "duration"),
        (
            _with("guards", {"live_metric": {"name": "auc", "min_effect": 1}}),
            "guards.live_metric.name",
            "one of",
        ),
        (_with("guards", {"live_metric": {"name": "mae"}}), "guards.live_metric.min_effect", "required"),
        (_with("notify", {"webhook": "ftp://x"}), "notify.webhook", "http"),
        (
            _with("notify", {"webhook": "http://x", "secret_env": "WOLT_SURELY_UNSET_VAR"}),
            "notify.secret_env",
            "not set",
        ),
        (_with("notify", {"webhook": "http://x", "events": ["party"]}), "notify.events", "list of"),
        (_with("notify", {"webhook": "http://x", "retries": -1}), "notify.retries", ">= 0"),
        (_with("notify", {"webhook": "http://x", "backoff": "soon"}), "notify.backoff", "duration"),
        (
            _with("retrain", {"command": "x", "notebook": "t.ipynb", "drift_threshold": 0.2}),
            "retrain",
            "exactly one",
        ),
        (_with("retrain", {"command": "x"}), "retrain", "drift_threshold"),
        (
            _with("retrain", {"command": "x", "drift_threshold": 0.2, "metric": "auc"}),
            "retrain.metric",
            "mae",
        ),
        (
            _with("retrain", {"command": "x", "drift_threshold": 0.2, "window": "soon"}),
            "retrain.window",
            "5m",
        ),
        (
            _with("retrain", {"command": "x", "drift_threshold": 0.2, "min_labels": 0}),
            "retrain.min_labels",
            ">= 1",
        ),
    ],
)
def test_every_bad_field_is_named_in_one_line(data, field: str, hint: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse(data)
    message = str(err.value)
    assert message.startswith(f"policy field {field!r}:"), message
    assert hint in message and "\n" not in message


def test_files_that_cannot_be_read(tmp_path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployment: [unclosed\n")
    with pytest.raises(PolicyError, match="cannot read policy file") as err:
        Policy.load(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(PolicyError, match="a Policy, a dict, YAML text or a YAML file path"):
        Policy.load(42)  # type: ignore[arg-type]


def test_yaml_text_is_a_policy_too(monkeypatch) -> None:
    monkeypatch.setenv("WOLT_TEST_HOOK_SECRET", "s3cret")
    from_text = Policy.load(FULL)  # what a notebook variable holds (%wolt_autoupdate NAME --policy VAR)
    assert from_text == parse(yaml.safe_load(FULL)) and from_text.notify.rate_limit == 3
    assert Policy.load("{deployment: eta, watch: {model: eta}}") == parse(BASE)  # one line, a flow mapping
    assert (from_text.notify.retries, from_text.notify.backoff) == (8, 2.0)  # the delivery defaults
    with pytest.raises(PolicyError, match="cannot read policy YAML text") as err:
        Policy.load("deployment: [unclosed\nwatch: {}\n")
    assert "\n" not in str(err.value)
    with pytest.raises(PolicyError, match="policy field 'watch'"):
        Policy.load("deployment: eta\n")


def test_the_background_copy_keeps_secrets_and_refuses_what_it_cannot_carry(wolt_home) -> None:
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.updater.policy import without_unset
    from wolt_jupyter.updater.run import start

    data = {
        "deployment": "eta",
        "watch": {"model": "eta", "webhook": {"port": 8801, "secret": "hook-s3cret"}},
        "notify": {"webhook": "http://127.0.0.1:9/hook", "secret": "notify-s3cret"},
    }
    p = parse(data)
    copy = parse(yaml.safe_load(yaml.safe_dump(without_unset(p.to_dict(secrets=True)))))
    assert copy == p and copy.notify.secret == "notify-s3cret" and copy.watch.webhook.secret == "hook-s3cret"
    assert "s3cret" not in str(p.to_dict())  # shown, they stay masked
    frame = {"dataset": pd.DataFrame({"x": [1.0], "y": [1.0]}), "target": "y", "metrics": {"rmse": "min"}}
    with pytest.raises(InvalidArgument, match=r"DataFrame, which the background service cannot receive"):
        start({**data, "offline": frame})
