"""The object algebra under the test server's server-side apply: pure functions, no HTTP."""

from __future__ import annotations

import pytest

from .fields import (
    MISSING,
    decode_fields,
    encode_fields,
    field_set,
    get_path,
    labels_match,
    merge_apply,
    parse_label_selector,
    remove_path,
    render_path,
)
from .manifests import runtime


def test_field_sets_round_trip_through_fields_v1():
    dep = runtime("eta")[1]
    fields = field_set(dep, assoc=True)
    assert decode_fields(encode_fields(fields)) == fields
    item = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"runtime"}')
    assert item in fields and (*item, "f:image") in fields
    assert ("f:metadata", "f:name") not in fields  # identity is not owned
    assert render_path((*item, "f:image")) == '.spec.template.spec.containers[name="runtime"].image'


def test_crd_lists_are_atomic():
    obj = {"spec": {"predictors": [{"name": "a", "traffic": 90}, {"name": "b", "traffic": 10}]}}
    assert field_set(obj, assoc=False) == {("f:spec", "f:predictors")}
    merged = merge_apply(obj, {"spec": {"predictors": [{"name": "a", "traffic": 100}]}}, assoc=False)
    assert merged["spec"]["predictors"] == [{"name": "a", "traffic": 100}]


def test_assoc_lists_merge_by_key():
    live = {"c": [{"name": "a", "image": "1", "x": 1}, {"name": "b", "image": "1"}]}
    merged = merge_apply(live, {"c": [{"name": "b", "image": "2"}, {"name": "n", "image": "3"}]}, assoc=True)
    assert merged["c"] == [
        {"name": "a", "image": "1", "x": 1},
        {"name": "b", "image": "2"},
        {"name": "n", "image": "3"},
    ]


def test_remove_path_prunes_emptied_maps_but_not_list_items():
    obj = {"metadata": {"annotations": {"a": "1"}}, "spec": {"c": [{"name": "x", "image": "i"}]}}
    remove_path(obj, ("f:metadata", "f:annotations", "f:a"))
    assert obj["metadata"] == {}
    remove_path(obj, ("f:spec", "f:c", 'k:{"name":"x"}'))
    assert obj["spec"] == {"c": []}
    assert get_path(obj, ("f:spec", "f:c", 'k:{"name":"x"}')) is MISSING


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", True),
        ("app==web,tier!=db", True),
        ("app in (api, web)", True),
        ("app notin (web)", False),
        ("tier", False),
        ("!tier", True),
        ("app in (api),missing", False),
    ],
)
def test_label_selectors(selector, expected):
    assert labels_match({"app": "web"}, parse_label_selector(selector)) is expected


def test_malformed_label_selector():
    with pytest.raises(ValueError, match="unable to parse"):
        parse_label_selector("app in web")
