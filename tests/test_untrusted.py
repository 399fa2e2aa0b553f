"""Untrusted input read with bounds (issue 25): hostile YAML specs and policies refused fast, JSON bodies that
nest too deep or hold lone surrogates refused as the caller's mistake, errors quoting at most 120 characters,
and names checked with a full match."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from wolt_jupyter.errors import InvalidArgument, PolicyError
from wolt_jupyter.untrusted import parse_json, shown, shown_value

# the issue's reproducer: ~500 bytes that expand to 9^9 (387 million) strings through aliases
ALIAS_BOMB = """name: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
variants: *i
"""
# the same with mappings and merge keys, as a policy would carry it
MERGE_BOMB = (
    "deployment: eta\n"
    + "".join(
        f"k{i}: &k{i} {{" + ", ".join(f"m{j}: *k{i - 1}" if i else f"m{j}: lol" for j in range(9)) + "}\n"
        for i in range(9)
    )
    + "watch: {model: eta, <<: *k8}\n"
)
HOSTILE_YAML = {
    "alias bomb": (ALIAS_BOMB, "expands to more than"),
    "merge-key bomb": (MERGE_BOMB, "expands to more than"),
    "an alias inside itself": ("name: &a [x, *a]\n", "contains it"),
    "too many aliases": ("a: &a 1\nb: [" + ", ".join(["*a"] * 300) + "]\n", "aliases"),
    "deep flow nesting": ("name: " + "[" * 200_000 + "]" * 200_000 + "\n", "deeper than 64"),
    "deep block nesting": ("".join(f"{' ' * i}k{i}:\n" for i in range(400)) + " " * 400 + "x: 1\n", "deeper"),
    "too large": ("name: " + "x" * (1 << 21) + "\n", "characters"),
}


def _bounded(load, text: str) -> tuple[str, float, int]:
    """(error message, seconds, peak bytes allocated) of loading ``text``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(InvalidArgument) as err:
            load(text)
        return str(err.value), time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_hostile_yaml_spec_is_refused_fast_in_one_line(case: str) -> None:
    from wolt_jupyter.spec import DeploymentSpec

    text, says = HOSTILE_YAML[case]
    message, seconds, peak = _bounded(DeploymentSpec.from_yaml, text)
    assert says in message and "\n" not in message and len(message) < 300, message
    assert message.startswith("cannot read spec")
    # generous bounds for a shared 2-core machine: the bomb took minutes and 3 GB before
    assert seconds < 2.0 and peak < 64 * 2**20, (seconds, peak)


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_hostile_yaml_policy_is_refused_fast_in_one_line(case: str) -> None:
    from wolt_jupyter.updater.policy import Policy

    text, says = HOSTILE_YAML[case]
    message, seconds, peak = _bounded(Policy.load, text)
    assert says in message and "\n" not in message, message
    assert message.startswith("cannot read policy YAML text")
    assert seconds < 2.0 and peak < 64 * 2**20, (seconds, peak)


def test_a_policy_file_bomb_is_a_policy_error(tmp_path) -> None:
    from wolt_jupyter.updater.policy import Policy

    path = tmp_path / "policy.yaml"
    path.write_text(MERGE_BOMB)
    with pytest.raises(PolicyError, match=r"cannot read policy file .* expands to more than"):
        Policy.load(path)


def test_ordinary_yaml_with_a_few_aliases_still_reads() -> None:
    from wolt_jupyter.spec import DeploymentSpec

    text = (
        "name: eta\nvariants:\n  - &v {name: main, model: 'models:/eta/1', traffic: 100}\n"
        "logging: {responses: true, sample: 0.5}\n"
    )
    spec = DeploymentSpec.from_yaml(text)
    assert spec.variants[0].model == "models:/eta/1" and spec.logging.sample == 0.5
    assert DeploymentSpec.from_yaml(spec.to_yaml()) == spec


def test_schema_errors_on_a_large_document_are_fast_and_short() -> None:
    """The schema check quotes what it refuses at most ~120 characters, whatever its size."""
    from wolt_jupyter.spec import DeploymentSpec

    huge = {"name": "eta", "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]}
    for bad in (
        {"resources": [list(range(50_000))]},
        {"variants": [{"name": "m" * 200_000, "model": 1, "traffic": 100}]},
        {"routing": {"sticky_key": ["k" * 100_000]}},
    ):
        t0 = time.perf_counter()
        with pytest.raises(InvalidArgument) as err:
            DeploymentSpec.from_dict({**huge, **bad})
        assert time.perf_counter() - t0 < 2.0
        assert len(str(err.value)) < 400 and "\n" not in str(err.value), str(err.value)[:500]


def test_every_spec_error_quotes_at_most_120_characters_of_a_value() -> None:
    from wolt_jupyter.spec import DeploymentSpec

    long_name = "a" * 200_000
    for data in (
        {"name": long_name, "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]},
        {"name": "eta", "variants": [{"name": "main", "model": "x" * 200_000, "traffic": 100}]},
        {"name": "eta", "variants": [{"name": long_name, "model": "models:/eta/1", "traffic": 100}]},
        {
            "name": "eta",
            "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}],
            "routing": {"sticky_key": "?" * 100_000},
        },
    ):
        with pytest.raises(InvalidArgument) as err:
            DeploymentSpec.from_dict(data)
        assert len(str(err.value)) < 400, str(err.value)[:500]


# -- names: a full match, never "$" before a final newline -------------------------------------------------
@pytest.mark.parametrize("name", ["nl\n", "eta\n", "a" * 64, "Eta", "-eta", "eta-", "et a", ""])
def test_names_are_checked_with_a_full_match(name: str) -> None:
    from wolt_jupyter.spec import DeploymentSpec, check_dns_label

    with pytest.raises(InvalidArgument, match="DNS-1123"):
        check_dns_label(name, "deployment name")
    with pytest.raises(InvalidArgument):
        DeploymentSpec.from_dict(
            {"name": name, "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]}
        )


@pytest.mark.parametrize(
    ("check", "value"),
    [
        ("alias", "champion\n"),
        ("alias", "latest\n"),
        ("model_uri", "models:/eta/1\n"),
        ("sticky_key", "user_id\n"),
        ("quantity", "500m\n"),
        ("model_argument", "main:models:/eta/1\n"),
        ("isvc", "eta\n"),
    ],
)
def test_every_name_check_refuses_a_trailing_newline(check: str, value: str) -> None:
    from wolt_jupyter import deployments, registry
    from wolt_jupyter.backends import admission
    from wolt_jupyter.spec import Routing, Variant, parse_quantity

    calls = {
        "alias": lambda: registry.check_alias(value),
        "model_uri": lambda: Variant("main", value, 100).validate(),
        "sticky_key": lambda: Routing(sticky_key=value).validate(),
        "quantity": lambda: parse_quantity(value, "resources.cpu"),
        "model_argument": lambda: deployments.build_spec("eta", value),
        "isvc": lambda: admission.kserve_rules(
            {"metadata": {"name": value}, "spec": {"predictor": {"sklearn": {"storageUri": "s3://b/m"}}}}
        ),
    }
    with pytest.raises(InvalidArgument):
        calls[check]()
    calls_ok = {
        "alias": "champion",
        "model_uri": "models:/eta/1",
        "sticky_key": "user_id",
        "quantity": "500m",
    }
    if check in calls_ok:  # the same value without the newline passes
        value = calls_ok[check]
        calls[check]()


# -- JSON bodies --------------------------------------------------------------------------------------------
def test_parse_json_refuses_deep_nesting_and_lone_surrogates_as_the_callers_mistake() -> None:
    assert parse_json(b'{"a": [1, {"b": "\\ud83d\\ude00"}]}') == {"a": [1, {"b": "\U0001f600"}]}
    for body, says in (
        (b"[" * 100_000 + b"]" * 100_000, "deeper than 64"),
        (b"[" * 65 + b"]" * 65, "deeper than 64"),
        (b'{"feedback": [{"id": "\\ud800", "ground_truth": 1}]}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
    ):
        with pytest.raises(InvalidArgument, match=says) as err:
            parse_json(body, "the feedback body")
        assert "\n" not in str(err.value) and len(str(err.value)) < 200
    assert parse_json(b"[" * 64 + b"]" * 64) is not None  # the limit itself is fine


def test_shown_bounds_what_an_error_quotes() -> None:
    assert shown("abc") == "abc"
    assert shown("x" * 1_000_000) == "x" * 120 + "... (1000000 characters)"
    assert len(shown_value(list(range(200_000)))) <= 150
    assert len(shown_value({"k" * 10_000: ["v" * 10_000]})) <= 150
    assert shown_value("short") == "'short'"
    json.dumps(shown_value("\ud800"))  # a quote of a lone surrogate is still writable
