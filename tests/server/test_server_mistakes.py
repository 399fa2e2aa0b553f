"""The server extension answers every client mistake with a 400 and a short message (issue 25), through a
real Jupyter server (pytest-jupyter's ``jp_fetch``): JSON nested too deep, lone surrogates, bodies that are
not UTF-8, and names or values far longer than anything it quotes back."""

from __future__ import annotations

import json

API = "wolt-jupyter/api"
DEEP = "[" * 100_000 + "]" * 100_000
SHORT = 400  # a whole error: at most 120 characters of the input and the words around them


async def send(jp_fetch, *path: str, body: str | bytes, method: str = "POST") -> tuple[int, dict]:
    response = await jp_fetch(
        API, *path, method=method, body=body, raise_error=False, request_timeout=60,
        allow_nonstandard_methods=True,
    )  # fmt: skip
    return response.code, json.loads(response.body)


async def test_deep_json_and_lone_surrogates_are_400_on_every_post(jp_fetch, wolt_home) -> None:
    deep_object = '{"weights": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}"
    routes = [
        ("POST", ("deployments",)),
        ("PUT", ("deployments", "eta", "traffic")),
        ("POST", ("deployments", "eta", "promote")),
        ("POST", ("deployments", "eta", "autoupdate")),
        ("POST", ("deployments", "eta", "rollout")),
    ]
    bodies = [
        (DEEP, "deeper than 64"),
        (deep_object, "deeper than 64"),
        ('{"name": "\\ud800", "model": "models:/eta/1"}', "surrogate"),
        (b'{"name": "\xed\xa0\x80"}', "not JSON"),  # a surrogate as raw (invalid) UTF-8
        (b"\xff\xfe{}", "not JSON"),
    ]
    for method, path in routes:
        for body, says in bodies:
            code, data = await send(jp_fetch, *path, body=body, method=method)
            assert (code, data["status"]) == (400, 400), (method, path, str(body)[:40], data)
            assert says in data["error"] and len(data["error"]) < SHORT, data["error"][:500]


async def test_long_names_and_values_are_quoted_at_most_120_characters(jp_fetch, wolt_home) -> None:
    long = "a" * 200_000
    for body in (
        {"name": long, "model": "models:/eta/1"},
        {"name": "eta", "model": "x" * 200_000},
        {"name": "eta", "spec": {"name": "eta", "variants": [{"name": long, "model": "models:/eta/1"}]}},
        {"name": "eta", "spec": {"name": "eta", "variants": [[1] * 50_000]}},
        {"name": "eta", "model": "models:/eta/1", "sticky_key": long},
        {"name": "eta", "model": "models:/eta/1", "target": long},  # 404 first: no such model here
    ):
        code, data = await send(jp_fetch, "deployments", body=json.dumps(body))
        assert code in (400, 404) and len(data["error"]) < SHORT, (code, data["error"][:500])
    code, data = await send(jp_fetch, "deployments", "nl%0A", body="", method="GET")
    assert code in (400, 404) and "\n" not in data["error"], data


async def test_a_newline_name_is_refused_and_never_recorded(jp_fetch, wolt_home) -> None:
    code, data = await send(
        jp_fetch, "deployments", body=json.dumps({"name": "nl\n", "model": "models:/x/1"})
    )
    assert code == 400 and "DNS-1123" in data["error"], data
    assert not (wolt_home / "deployments").exists() or not any((wolt_home / "deployments").iterdir())
