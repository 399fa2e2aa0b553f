"""Reading what a client or a file sent, with bounds: no input costs more than its size allows.

One place for how the project treats text it did not write:

- :func:`shown`: how much of it an error quotes back (120 characters), so no error echoes a huge input;
- :func:`parse_json`: a JSON body (admin, feedback, the server extension); malformed, nested deeper than
  :data:`MAX_DEPTH` or holding a lone surrogate (which no database or UTF-8 writer takes) is the caller's
  mistake, raised as :class:`~wolt_jupyter.errors.InvalidArgument`;
- :func:`load_yaml`: a spec or policy document; larger than :data:`MAX_YAML_BYTES`, nested deeper than
  :data:`MAX_DEPTH`, with more than :data:`MAX_YAML_ALIASES` aliases or more than :data:`MAX_YAML_NODES` nodes
  once aliases are expanded (the "billion laughs": 500 bytes that expand to ~4·10^8 nodes) is refused as the
  document is composed, before anything walks the expansion.

Imports nothing heavy: the runtime, the core and the server extension all use it.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from wolt_jupyter.errors import InvalidArgument

QUOTE_LIMIT = 120  # characters of client input an error quotes
MAX_DEPTH = 64  # nesting of a JSON or YAML document (a spec nests 4 deep, a policy 5)
MAX_YAML_BYTES = 1 << 20
MAX_YAML_ALIASES = 256
MAX_YAML_NODES = 100_000  # after expanding aliases
# a \uD800-\uDFFF escape: how a surrogate gets into UTF-8 JSON text (raw ones fail the strict decode)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_RAW_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_SURROGATE = (
    "{what} holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair); send text as UTF-8"
)
# what the flow-nesting pre-count skips: quoted scalars and comments (brackets there are text)
_QUOTED = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\n]|'')*'|#[^\n]*")
_NOT_FLOW = re.compile(r"[^\[\]{}]+")


def shown(text: str, limit: int = QUOTE_LIMIT) -> str:
    """A client-sent string as quoted back in an error: bounded, so an error never echoes a huge input."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def shown_value(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` as an error quotes it: at most ``limit`` characters, however large the value."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    return shown(short.repr(value), limit)


# -- JSON ------------------------------------------------------------------------------------------------------
def parse_json(body: bytes | str, what: str = "the request body") -> Any:
    """``body`` decoded as JSON; InvalidArgument (one line, naming ``what``) when it is not UTF-8 JSON, nests
    deeper than :data:`MAX_DEPTH`, or holds a lone surrogate."""
    if isinstance(body, str):
        text = body
        if _RAW_SURROGATE.search(text):
            raise InvalidArgument(_LONE_SURROGATE.format(what=what))
    else:
        try:  # strictly: json.loads would let raw surrogate bytes through ("surrogatepass")
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"{what} is not JSON (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise InvalidArgument(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not JSON ({shown(str(exc), 80)})") from None
    check_nesting(doc, what)
    if _SURROGATE_ESCAPE.search(text):  # a pair combines into one character; what is left is alone
        _check_strings(doc, what)
    return doc


def check_nesting(doc: Any, what: str, limit: int = MAX_DEPTH) -> None:
    """InvalidArgument if ``doc`` (lists and dicts) nests deeper than ``limit``; iterative, so any depth is
    safe to check."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            raise InvalidArgument(f"{what} nests deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def _check_strings(doc: Any, what: str) -> None:
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and _RAW_SURROGATE.search(value):
            raise InvalidArgument(_LONE_SURROGATE.format(what=what))


# -- YAML ------------------------------------------------------------------------------------------------------
class _TooBig(Exception):
    pass


@functools.cache  # one class: PyYAML is imported on first use only
def _bounded_loader() -> type:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """PyYAML's safe loader that counts, while composing, aliases and nesting: a document past a limit
        is refused before anything expands it."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.aliases = 0
            self.depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise _TooBig(f"more than {MAX_YAML_ALIASES} aliases")
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _TooBig(f"nests deeper than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader


def _flow_depth_over(text: str, limit: int) -> bool:
    """Whether ``text`` opens more than ``limit`` flow collections (``[``, ``{``) at once. PyYAML's scanner
    looks ahead over every open one for each token (quadratic: a second for 1,000 ``[``), so this is counted
    on the text first; brackets inside quotes and comments do not count."""
    depth = 0
    for c in _NOT_FLOW.sub("", _QUOTED.sub("", text)):
        depth += 1 if c in "[{" else -1
        if depth > limit:
            return True
    return False


def _expanded_size(root: Any) -> int:
    """How many nodes the document has once every alias is expanded, counted over the node graph (each node
    once, in linear time); _TooBig past :data:`MAX_YAML_NODES` or for an alias that contains itself."""
    import yaml

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise _TooBig(f"expands to more than {MAX_YAML_NODES:,} nodes through its aliases")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _TooBig("holds an alias to a node that contains it")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _TooBig("holds an alias to a node that contains it")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes.get(id(root), 0)


def load_yaml(text: str, what: str, error: type[InvalidArgument] = InvalidArgument) -> Any:
    """The one YAML document in ``text`` (None when empty), read with bounds; ``error`` ("cannot read
    ``what``: why", one line) when it is not YAML or is past a bound."""
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise error(f"cannot read {what}: {len(text):,} characters, more than the {MAX_YAML_BYTES:,} read")
    if _flow_depth_over(text, MAX_DEPTH):
        raise error(f"cannot read {what}: it nests deeper than {MAX_DEPTH} levels")
    loader = _bounded_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _TooBig as exc:
        raise error(f"cannot read {what}: it {exc}") from None
    except yaml.YAMLError as exc:
        lines = str(exc).strip().splitlines()
        raise error(
            f"cannot read {what}: not valid YAML ({shown(lines[0] if lines else type(exc).__name__)})"
        ) from None
    except RecursionError:  # a scalar PyYAML nests internally; the depth count above catches the rest
        raise error(f"cannot read {what}: it nests too deeply") from None
    finally:
        loader.dispose()
