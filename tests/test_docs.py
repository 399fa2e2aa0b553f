"""The documentation site: it builds strictly, its generated reference pages name what the code has, it fetches
nothing from the internet, and the README's links lead somewhere. Also the benchmarks' result-file writer."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mkdocs build --strict`` into a temporary directory: a broken link or anchor, a page missing from the
    navigation or a reference page that cannot be generated fails here."""
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def text(site: Path, page: str) -> str:
    """A built page's visible text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", (site / page).read_text()))


def test_every_magic_is_on_the_magics_page(site: Path) -> None:
    from wolt_jupyter.magics import WoltMagics

    page = text(site, "reference/magics.html")
    names = [f"%%{n}" for n in WoltMagics.magics["cell"]] + [f"%{n}" for n in WoltMagics.magics["line"]]
    assert len(names) > 15
    for name in names:
        assert re.search(rf"(?<![%\w]){re.escape(name)}\b", page), f"{name} is not on the magics page"
    for name in WoltMagics.magics["line"]:  # and each one's options, from its parser
        parser = getattr(getattr(WoltMagics, name), "parser", None)
        for action in parser._actions if parser else ():
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in page, f"%{name} {option} is not on the magics page"


def test_every_cli_command_is_on_the_cli_page(site: Path) -> None:
    from wolt_jupyter.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        out = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out += [f"{prefix} {name}", *commands(sub, f"{prefix} {name}")]
        return out

    page = text(site, "reference/cli.html")
    found = commands(build_parser(), "wolt-jupyter")
    assert {"wolt-jupyter deploy", "wolt-jupyter updater run", "wolt-jupyter updater abort"} <= set(found)
    for command in found:
        assert command in page, f"{command} is not on the CLI page"


def test_every_setting_is_on_the_settings_page(site: Path) -> None:
    from wolt_jupyter import config

    page = text(site, "reference/settings.html")
    for f in dataclasses.fields(config.Settings):
        if f.name == "sources":
            continue
        assert f.name in config.SETTING_HELP, f"setting {f.name} has no line in config.SETTING_HELP"
        assert f.name in page
    for env in [config.HOME_ENV, *config._ENV.values(), *config.SECRET_ENV]:
        assert env in page, f"{env} is not on the settings page"


def test_the_api_pages_render_both_openapi_documents(site: Path) -> None:
    import yaml

    from wolt_jupyter.serving.openapi import document

    rest = yaml.safe_load((ROOT / "wolt_jupyter" / "server" / "openapi.yaml").read_text())
    page = text(site, "reference/rest-api.html")
    for route, item in rest["paths"].items():
        for method in item.keys() & {"get", "put", "post", "delete"}:
            assert f"{method.upper()} {route}" in page, f"{method.upper()} {route} is not on the REST page"
    page = text(site, "reference/v2-api.html")
    for route, item in document()["paths"].items():
        for method in item:
            assert f"{method.upper()} {route}" in page, f"{method.upper()} {route} is not on the V2 page"
    assert "InferenceRequest" in page


def test_the_spec_policy_and_python_pages_name_every_field(site: Path) -> None:
    import wolt_jupyter
    from wolt_jupyter.spec import SPEC_SCHEMA
    from wolt_jupyter.updater import policy

    page = text(site, "reference/deployment-spec.html")
    for name, sub in SPEC_SCHEMA["properties"].items():
        assert name in page
        for inner in sub.get("properties", {}):
            assert f"{name}.{inner}" in page, f"{name}.{inner} is not on the deployment spec page"
    page = text(site, "reference/update-policy.html")
    for part in (policy.Watch, policy.OfflineGate, policy.ReplayGate, policy.Rollout, policy.Guards,
                 policy.ServiceGuards, policy.Notify, policy.Retrain):  # fmt: skip
        for f in dataclasses.fields(part):
            assert re.search(rf"\b{f.name}\b", page), f"{part.__name__}.{f.name} is not on the policy page"
    page = text(site, "reference/python-api.html")
    for name in wolt_jupyter.__all__:
        if not name.startswith("__"):
            assert f"wolt_jupyter.{name}" in page


def test_the_layers_page_draws_the_import_contract(site: Path) -> None:
    page = text(site, "architecture/layers.html")
    contract = (ROOT / ".importlinter").read_text().split("layers =", 1)[1].split("\n[", 1)[0]
    for layer in (line.strip() for line in contract.splitlines()):
        if layer:
            assert layer in page


def test_benchmark_results_are_listed_newest_first(site: Path) -> None:
    files = sorted(p.name for p in (ROOT / "docs" / "benchmarks" / "results").glob("20*.md"))
    assert files, "no dated result files"
    index = (site / "benchmarks" / "index.html").read_text()
    positions = [index.find(f"results/{name[:-3]}.html") for name in files]
    assert all(p > 0 for p in positions), "a result file is not on the benchmarks page"
    assert positions == sorted(positions, reverse=True), "results are not listed newest first"
    for name in files:  # each states when and where it was measured (by hand, or as _results.py writes it)
        body = (ROOT / "docs" / "benchmarks" / "results" / name).read_text()
        where = "**Machine**" in body or ("**Cores**" in body and "**CPU**" in body)
        assert f"**Date**: {name[:10]}" in body and where, name


def test_the_site_fetches_nothing_from_the_internet(site: Path) -> None:
    for page in site.rglob("*.html"):
        source = page.read_text()
        remote = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]+\"", source)
        assert not remote, f"{page.relative_to(site)} loads {remote[0]}"
        assert "fonts.googleapis" not in source and "fonts.gstatic" not in source


def test_changelog_and_contributing_are_on_the_site(site: Path) -> None:
    assert "Unreleased" in text(site, "changelog.html")
    page = text(site, "contributing.html")
    assert "make lint" in page and "docs/benchmarks/results" in page and "72" in page


def test_the_readme_links_lead_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in link]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    assert "make demo" in readme and "make test" in readme and "make docs" in readme
    assert "--ab" in readme and "--shadow" in readme  # how to deploy an A/B with a shadow
    assert len(readme.splitlines()) < 120


def _results_module():
    spec = importlib.util.spec_from_file_location("_results", ROOT / "benchmarks" / "_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_benchmark_writes_a_dated_result_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = _results_module()
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    day = dt.date(2031, 2, 3)
    first = results.default_path("serving", day, tmp_path)
    assert first.name == "2031-02-03-serving.md"
    first.write_text("taken")
    assert results.default_path("serving", day, tmp_path).name == "2031-02-03-serving-2.md"
    out = results.write_result(
        "serving",
        "Serving throughput",
        ["server", "rps"],
        [["wolt-ab", 4275], ["mlserver", 1586.5]],
        notes="ratio 2.7x",
        out=str(tmp_path / "r.md"),
        argv=["benchmarks/serving.py", "--rounds", "2"],
        date=day,
    )
    body = out.read_text()
    assert body.startswith("# Serving throughput\n")
    assert "**Date**: 2031-02-03" in body and f"**Cores**: {os.cpu_count()}" in body
    assert "**Python**:" in body and "**CPU**:" in body
    assert "`python benchmarks/serving.py --rounds 2`" in body
    assert "| server | rps |" in body and "| mlserver | 1,586.50 |" in body
    assert body.rstrip().endswith("ratio 2.7x")
