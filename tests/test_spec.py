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
