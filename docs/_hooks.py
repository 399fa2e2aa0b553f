"""mkdocs hooks: the reference pages are generated from the code at build time, never committed as text.

A page asks for generated text with a marker line, ``<!-- wolt:generate NAME -->``; :func:`on_page_markdown`
replaces it with ``GENERATORS[NAME]()``. An unknown name fails the build. What each one reads:

- ``magics``: the ``magic_arguments`` parsers of :class:`wolt_jupyter.magics.WoltMagics`
- ``cli``: the argparse parser of :func:`wolt_jupyter.cli.build_parser`, every subcommand
- ``settings``: the :class:`wolt_jupyter.config.Settings` fields, their environment variables and defaults
- ``spec-fields``: :data:`wolt_jupyter.spec.SPEC_SCHEMA`
- ``rest-api``: ``wolt_jupyter/server/openapi.yaml``
- ``v2-api``: :func:`wolt_jupyter.serving.openapi.document` (what ``GET /v2/openapi.json`` serves)
- ``python-api``: ``wolt_jupyter.__all__`` with signatures and docstrings
- ``layers``: the layers contract in ``.importlinter``
- ``benchmarks``: the dated result files under ``docs/benchmarks/results/``, newest first

:func:`on_files` also puts the repository's ``CHANGELOG.md`` and ``CONTRIBUTING.md`` into the site, and
:func:`on_config` lists the benchmark results in the navigation.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # document this checkout, whatever the environment has installed
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "docs" / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- wolt:generate ([\w-]+) -->$", re.MULTILINE)
# repository files shown as site pages: site path -> file at the repository root
ROOT_PAGES = {"changelog.md": "CHANGELOG.md", "contributing.md": "CONTRIBUTING.md"}


def _cell(text: Any) -> str:
    """One Markdown table cell: no line breaks, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def _paragraphs(doc: str | None) -> str:
    """A docstring as Markdown prose: reST's double backticks become code spans, roles are dropped."""
    text = inspect.cleandoc(doc or "")
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


# -- argparse (magics and CLI) --------------------------------------------------------------------------------
def _arguments(parser: argparse.ArgumentParser) -> list[list[str]]:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + (action.metavar or action.dest.upper())
        else:
            name = action.metavar or action.dest
        default = action.default
        flag = action.nargs == 0  # store_true, store_false, version: the flag itself is the value
        shown = "" if flag or default in (None, [], argparse.SUPPRESS) else str(default)
        help_text = formatter._expand_help(action) if action.help else ""
        if action.choices:
            help_text = (
                (help_text + "; " if help_text else "") + "one of " + ", ".join(map(str, action.choices))
            )
        if action.required and action.option_strings:
            help_text = "required; " + help_text
        rows.append([_code(name), _code(shown) if shown else "", help_text])
    return rows


def _usage(parser: argparse.ArgumentParser, prog: str | None = None) -> str:
    """The parser's usage line(s), continuation lines kept aligned; ``prog`` replaces its program name."""
    lines = [line for line in parser.format_usage().splitlines() if line.strip() not in ("", "::")]
    text = textwrap.dedent("\n".join(lines))
    if text.startswith("usage: "):
        text = textwrap.dedent(" " * 7 + text[7:])
    if prog is not None and text.lstrip("%").startswith(parser.prog.lstrip("%")):
        text = prog + text.lstrip("%")[len(parser.prog.lstrip("%")) :]
    return "```text\n" + text + "\n```"


def magics() -> str:
    from wolt_jupyter.magics import WoltMagics

    out = []
    for kind, prefix in (("cell", "%%"), ("line", "%")):
        for name in sorted(WoltMagics.magics[kind]):
            func = getattr(WoltMagics, WoltMagics.magics[kind][name])
            parser = getattr(func, "parser", None)
            out.append(f"## `{prefix}{name}`\n")
            description = parser.description if parser is not None else func.__doc__
            out.append(_paragraphs(description) + "\n")
            if parser is None:
                out.append(f"```text\n{prefix}{name}\n```\n\nIt takes no arguments.\n")
                continue
            out.append(_usage(parser, prog=f"{prefix}{name}") + "\n")
            rows = _arguments(parser)
            if rows:
                out.append(_table(["argument", "default", "meaning"], rows) + "\n")
    return "\n".join(out)


def _subcommands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", helps.get(name, ""), sub
                yield from _subcommands(sub, f"{prefix} {name}")


def cli() -> str:
    from wolt_jupyter.cli import build_parser

    parser = build_parser()
    out = [_paragraphs(parser.description) + "\n", _usage(parser) + "\n"]
    out.append(_table(["argument", "default", "meaning"], _arguments(parser)) + "\n")
    for command, help_text, sub in _subcommands(parser, parser.prog):
        out.append(f"## `{command}`\n")
        out.append(_paragraphs(help_text) + "\n")
        out.append(_usage(sub) + "\n")
        rows = _arguments(sub)
        if rows:
            out.append(_table(["argument", "default", "meaning"], rows) + "\n")
    return "\n".join(out)


# -- settings -------------------------------------------------------------------------------------------------
def settings() -> str:
    from wolt_jupyter import config

    rows = []
    for f in dataclasses.fields(config.Settings):
        if f.name == "sources":
            continue
        env = config.HOME_ENV if f.name == "home" else config._ENV.get(f.name)
        help_text = config.SETTING_HELP[f.name]
        if f.default is dataclasses.MISSING or (f.default is None and "default" in help_text):
            default = "see meaning"  # computed from other settings
        elif f.default is None:
            default = "none"
        else:
            default = _code(str(f.default).lower() if isinstance(f.default, bool) else str(f.default))
        rows.append([_code(f.name), _code(env) if env else "—", default, help_text])
    secrets = ", ".join(_code(name) for name in config.SECRET_ENV)
    return (
        _table(["setting", "environment", "default", "meaning"], rows)
        + f"\n\nCredentials in the environment ({secrets}) are shown only masked, as is any password inside a URL.\n"
    )


# -- the deployment spec --------------------------------------------------------------------------------------
def _schema_rows(schema: dict[str, Any], path: str) -> Iterator[list[str]]:
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        types = sub.get("type", "")
        kind = " or ".join(types) if isinstance(types, list) else types
        notes = []
        for key, word in (
            ("minimum", ">="),
            ("maximum", "<="),
            ("exclusiveMinimum", ">"),
            ("minLength", "length >="),
        ):
            if key in sub:
                notes.append(f"{word} {sub[key]}")
        if name in schema.get("required", ()):
            notes.insert(0, "required")
        if sub.get("additionalProperties") is False:
            notes.append("no other keys")
        yield [_code(here), kind or "any", ", ".join(notes)]
        if kind == "array" and "items" in sub:
            yield from _schema_rows(sub["items"], here + "[]")
        elif "properties" in sub:
            yield from _schema_rows(sub, here)


def spec_fields() -> str:
    from wolt_jupyter.spec import SPEC_SCHEMA

    return _table(["field", "type", "constraints"], list(_schema_rows(SPEC_SCHEMA, "")))


# -- OpenAPI documents ----------------------------------------------------------------------------------------
def _resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _schema_text(doc: dict[str, Any], schema: Any) -> str:
    if isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[`{name}`](#schema-{name.lower()})"
    return _code(json.dumps(schema, separators=(", ", ": ")))


def _content(doc: dict[str, Any], body: dict[str, Any]) -> str:
    parts = []
    for media, item in (body.get("content") or {}).items():
        schema = item.get("schema") if isinstance(item, dict) else None
        parts.append(f"{_code(media)} {_schema_text(doc, schema)}" if schema else _code(media))
    return "; ".join(parts)


def openapi(doc: dict[str, Any]) -> str:
    import yaml

    info = doc.get("info", {})
    out = [
        f"**{info.get('title', '')}**, version {info.get('version', '')} (OpenAPI {doc.get('openapi', '')}).\n"
    ]
    if info.get("description"):
        out.append(" ".join(str(info["description"]).split()) + "\n")
    for server in doc.get("servers", []):
        out.append(f"Paths are relative to {_code(server['url'])}.\n")
    schemes = doc.get("components", {}).get("securitySchemes", {})
    if schemes:
        out.append(
            "Security schemes: "
            + "; ".join(f"{_code(k)} ({_cell(json.dumps(v))})" for k, v in schemes.items())
            + ".\n"
        )
    for route, item in doc.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in ("get", "put", "post", "patch", "delete"):
            op = item.get(method)
            if op is None:
                continue
            out.append(f"## {method.upper()} `{route}`\n")
            if op.get("summary"):
                out.append(_cell(op["summary"]) + "\n")
            if op.get("description"):
                out.append(" ".join(str(op["description"]).split()) + "\n")
            if "security" in op:
                names = [name for req in op["security"] for name in req] or ["none"]
                out.append("Security: " + ", ".join(_code(n) for n in names) + ".\n")
            params = [_resolve(doc, p) for p in [*shared, *op.get("parameters", [])]]
            if params:
                rows = [[_code(p["name"]), p.get("in", ""), "yes" if p.get("required") else "no",
                         _schema_text(doc, p.get("schema", {})), p.get("description", "")] for p in params]  # fmt: skip
                out.append(_table(["parameter", "in", "required", "schema", "meaning"], rows) + "\n")
            if "requestBody" in op:
                body = _resolve(doc, op["requestBody"])
                out.append("Request body: " + _content(doc, body) + "\n")
            rows = []
            for code, response in op.get("responses", {}).items():
                response = _resolve(doc, response)
                rows.append([_code(str(code)), response.get("description", ""), _content(doc, response)])
            out.append(_table(["status", "meaning", "body"], rows) + "\n")
    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        out.append("## Schemas\n")
        for name, schema in schemas.items():
            out.append(f"### {name} {{ #schema-{name.lower()} }}\n")
            out.append("```yaml\n" + yaml.safe_dump(schema, sort_keys=False, width=100) + "```\n")
    return "\n".join(out)


def rest_api() -> str:
    import yaml

    return openapi(yaml.safe_load((ROOT / "wolt_jupyter" / "server" / "openapi.yaml").read_text()))


def v2_api() -> str:
    from wolt_jupyter.serving.openapi import document

    return openapi(document())


# -- the Python API -------------------------------------------------------------------------------------------
class _Annotation:
    """An annotation kept as the text it was written as (``from __future__ import annotations``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _signature(name: str, obj: Any) -> str:
    """``def name(...)`` or ``class name(...)``, one parameter a line when long."""
    keyword = "class" if inspect.isclass(obj) else "def"
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{keyword} {name}(...)"

    def plain(annotation: Any) -> Any:
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    params = [p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()]
    ret = sig.return_annotation
    sig = sig.replace(
        parameters=params, return_annotation=inspect.Signature.empty if keyword == "class" else plain(ret)
    )
    text = f"{keyword} {name}{sig}"
    if len(text) <= 100:
        return text
    parts = [str(p) for p in sig.parameters.values()]
    # the markers between the kinds of parameters, as str(Signature) writes them
    shown, kinds = [], [p.kind for p in sig.parameters.values()]
    for i, (part, kind) in enumerate(zip(parts, kinds, strict=True)):
        if kind is inspect.Parameter.KEYWORD_ONLY and (
            i == 0 or kinds[i - 1] is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ):
            shown.append("*")
        shown.append(part)
    tail = (
        ""
        if sig.return_annotation is inspect.Signature.empty
        else f" -> {inspect.formatannotation(sig.return_annotation)}"
    )
    return f"{keyword} {name}(\n" + "".join(f"    {part},\n" for part in shown) + f"){tail}"


def python_api() -> str:
    import wolt_jupyter

    out = []
    for name in sorted(wolt_jupyter.__all__, key=str.lower):
        if name.startswith("__"):
            continue
        obj = getattr(wolt_jupyter, name)
        out.append(f"## `wolt_jupyter.{name}`\n")
        out.append(f"```python\n{_signature(name, obj)}\n```\n")
        doc = inspect.getdoc(obj)
        if doc and not doc.startswith(f"{obj.__name__}("):  # not a dataclass's generated one
            out.append("```text\n" + doc + "\n```\n")
    return "\n".join(out)


# -- the layers -----------------------------------------------------------------------------------------------
def layers() -> str:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    section = parser["importlinter:contract:layers"]
    rows = [line.strip() for line in section["layers"].strip().splitlines() if line.strip()]
    return "```text\n" + "\n".join(rows) + "\n```"


# -- benchmarks -----------------------------------------------------------------------------------------------
def result_files() -> list[Path]:
    """The dated result files, newest first (their names start with the date)."""
    return sorted((p for p in RESULTS.glob("*.md") if re.match(r"\d{4}-\d{2}-\d{2}-", p.name)), reverse=True)


def _title(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def benchmarks() -> str:
    rows = [[p.name[:10], f"[{_cell(_title(p))}](results/{p.name})"] for p in result_files()]
    return _table(["date", "result"], rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "magics": magics,
    "cli": cli,
    "settings": settings,
    "spec-fields": spec_fields,
    "rest-api": rest_api,
    "v2-api": v2_api,
    "python-api": python_api,
    "layers": layers,
    "benchmarks": benchmarks,
}


# -- the hooks ------------------------------------------------------------------------------------------------
def on_config(config: Any) -> Any:
    """List every result file in the navigation, under the benchmarks page, newest first."""
    for entry in config.nav or []:
        if isinstance(entry, dict) and isinstance(entry.get("Benchmarks"), list):
            results = [{_title(p): f"benchmarks/results/{p.name}"} for p in result_files()]
            entry["Benchmarks"].append({"Results, newest first": results})
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for page, source in ROOT_PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri in ROOT_PAGES:  # written for the repository: links into docs/ are site links here
        markdown = markdown.replace("](docs/", "](")

    def generate(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{page.file.src_uri}: no generator {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(generate, markdown)
