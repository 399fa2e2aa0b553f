from __future__ import annotations

import pytest

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import DeploymentSpec

BASE = {
    "name": "eta-predictor",
    "variants": [
        {"name": "main", "model": "models:/eta@champion", "traffic": 90},
        {"name": "challenger", "model": "models:/eta/7", "traffic": 10},
        {"name": "shadow", "model": "models:/eta/8", "shadow": True},
    ],
    "routing": {"sticky_key": "user_id"},
}


def test_round_trip_through_yaml() -> None:
    spec = DeploymentSpec.from_dict(BASE)
    again = DeploymentSpec.from_yaml(spec.to_yaml())
    assert again == spec
    assert [v.name for v in spec.live] == ["main", "challenger"] and [v.name for v in spec.shadows] == [
        "shadow"
    ]
    assert again.to_dict()["variants"][2] == {"name": "shadow", "model": "models:/eta/8", "shadow": True}


def test_logging_probabilities_is_kept_only_when_set() -> None:
    spec = DeploymentSpec.from_dict({**BASE, "logging": {"probabilities": True}})
    assert spec.logging.probabilities and spec.to_dict()["logging"]["probabilities"] is True
    assert DeploymentSpec.from_yaml(spec.to_yaml()) == spec
    plain = DeploymentSpec.from_dict(BASE)
    assert not plain.logging.probabilities and "probabilities" not in plain.to_dict()["logging"]


def test_a_variant_timeout_is_kept_only_when_set() -> None:
    doc = {**BASE, "variants": [{**BASE["variants"][0], "timeout": 0.5}, *BASE["variants"][1:]]}
    spec = DeploymentSpec.from_dict(doc)
    assert spec.variant("main").timeout == 0.5 and spec.variant("challenger").timeout is None
    assert spec.to_dict()["variants"][0]["timeout"] == 0.5
    assert "timeout" not in spec.to_dict()["variants"][1]  # specs without one read and render as before
    assert DeploymentSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.with_traffic({"main": 50, "challenger": 50}).variant("main").timeout == 0.5


def test_logging_on_full_is_serve_unless_refuse_is_asked() -> None:
    spec = DeploymentSpec.from_dict({**BASE, "logging": {"on_full": "refuse"}})
    assert spec.logging.on_full == "refuse" and spec.to_dict()["logging"]["on_full"] == "refuse"
    assert DeploymentSpec.from_yaml(spec.to_yaml()) == spec
    plain = DeploymentSpec.from_dict(BASE)  # specs without it read and render as before
    assert plain.logging.on_full == "serve" and "on_full" not in plain.to_dict()["logging"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Eta_Predictor"}, "not a DNS-1123 label"),
        ({"variants": []}, "no variants"),
        ({"variants": [{"name": "a", "model": "models:/m/1", "traffic": 60}]}, "sum to 100, got 60"),
        ({"variants": [{"name": "s", "model": "models:/m/1", "shadow": True}]}, "every variant is a shadow"),
        (
            {"variants": [{"name": "a", "model": "models:/m/1", "traffic": 50}] * 2},
            "used twice",
        ),
        ({"variants": [{"name": "a", "model": "eta", "traffic": 100}]}, "not a model URI"),
        ({"variants": [{"name": "a", "model": "models:/m/1", "traffic": 100, "weight": 1}]}, "malformed"),
        ({"logging": {"sample": 2}}, "at logging.sample: 2 is greater than the maximum of 1"),
        ({"replicas": 0}, "replicas"),
        ({"colour": "red"}, "unknown spec field"),
        ({"resources": {"cpu": "half"}}, r"resources.requests.cpu 'half' is not a Kubernetes quantity"),
        ({"resources": {"memory": "1GB"}}, r"resources.requests.memory '1GB' is not a Kubernetes quantity"),
        ({"resources": {"gpu": 1}}, r"'gpu' is not a Kubernetes resource name"),
        (
            {"resources": {"requests": {"cpu": 2}, "limits": {"cpu": "1"}}},
            "cpu request 2 is above its limit 1",
        ),
        ({"resources": "lots"}, r"malformed deployment spec at resources: 'lots' is not of type"),
        (
            {"routing": {"sticky_key": "user id"}},
            "routing.sticky_key 'user id' must name a request parameter",
        ),
        ({"logging": {"responses": "yes"}}, r"at logging.responses: 'yes' is not of type 'boolean'"),
        ({"logging": {"sample": True}}, r"at logging.sample: True is not of type 'number'"),
        ({"logging": {"probabilities": 1}}, r"at logging.probabilities: 1 is not of type 'boolean'"),
        (
            {"logging": {"on_full": "drop"}},
            r"logging.on_full must be serve \(answer, count the rows not logged\)",
        ),
        ({"logging": {"on_full": True}}, r"at logging.on_full: True is not of type 'string'"),
        (
            {"variants": [{"name": "a", "model": "models:/m/1", "traffic": 100, "shadow": "no"}]},
            r"at variants\[0\].shadow: 'no' is not of type 'boolean'",
        ),
        (
            {"variants": [{"name": "a", "model": "models:/m/1", "traffic": 100, "timeout": "fast"}]},
            r"at variants\[0\].timeout: 'fast' is not of type 'number', 'null'",
        ),
        (
            {"variants": [{"name": "a", "model": "models:/m/1", "traffic": 100, "timeout": True}]},
            r"at variants\[0\].timeout: True is not of type 'number', 'null'",
        ),
        *(
            (
                {"variants": [{"name": "a", "model": "models:/m/1", "traffic": 100, "timeout": bad}]},
                r"variant 'a': timeout must be a number of seconds above 0 and at most 3600 \(e.g. 0.5\), "
                rf"got {shown}",
            )
            for bad, shown in ((0, "0"), (-0.5, "-0.5"), (3601, "3601"), (float("nan"), "nan"))
        ),
    ],
)
def test_invalid_specs_say_what_is_wrong(change: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        DeploymentSpec.from_dict({**BASE, **change})


def test_traffic_promote_and_pin() -> None:
    spec = DeploymentSpec.from_dict(BASE)
    moved = spec.with_traffic({"main": 50, "challenger": 50})
    assert [v.traffic for v in moved.live] == [50, 50]
    with pytest.raises(InvalidArgument, match="sum to 100"):
        spec.with_traffic({"main": 50})
    with pytest.raises(InvalidArgument, match="is a shadow"):
        spec.with_traffic({"shadow": 100})
    promoted = spec.promoted("challenger")
    assert [(v.name, v.traffic) for v in promoted.live] == [("challenger", 100)]
    assert promoted.shadows == spec.shadows
    pinned = spec.pinned(lambda uri: uri.replace("@champion", "/3"))
    assert pinned.variant("main").model == "models:/eta/3"


def test_resource_quantities_follow_the_kubernetes_grammar() -> None:
    from wolt_jupyter.spec import check_resources, parse_quantity

    assert parse_quantity("250m", "cpu") == parse_quantity("0.25", "cpu") == parse_quantity(".25", "cpu")
    assert parse_quantity("1Gi", "memory") == 2**30 and parse_quantity("1G", "memory") == 10**9
    assert parse_quantity("1e3", "memory") == parse_quantity("1k", "memory") == parse_quantity(1000, "memory")
    flat = DeploymentSpec.from_dict({**BASE, "resources": {"cpu": 1, "nvidia.com/gpu": 1}})
    assert check_resources(flat.resources) == {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}}


def test_a_named_champion_is_a_live_variant_at_any_weight() -> None:
    """``routing.champion``: the update service keeps the champion at weight 0 while a candidate takes all
    traffic; a promotion makes the promoted variant the champion; a spec without one reads as before."""
    doc = {
        "name": "eta",
        "variants": [
            {"name": "main", "model": "models:/eta/1", "traffic": 0},
            {"name": "candidate", "model": "models:/eta/2", "traffic": 100},
        ],
        "routing": {"champion": "main"},
    }
    spec = DeploymentSpec.from_dict(doc)
    assert spec.routing.champion == "main" and DeploymentSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.promoted("candidate").routing.champion is None
    assert spec.with_traffic({"main": 100}).routing.champion == "main"
    assert "champion" not in DeploymentSpec.from_dict(BASE).to_dict()["routing"]
    for bad in ("nobody", "shadowed"):
        variants = [*doc["variants"], {"name": "shadowed", "model": "models:/eta/3", "shadow": True}]
        with pytest.raises(InvalidArgument, match=f"routing.champion '{bad}' must name a live variant"):
            DeploymentSpec.from_dict({**doc, "variants": variants, "routing": {"champion": bad}})
