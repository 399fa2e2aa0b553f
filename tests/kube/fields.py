"""Object algebra for the test API server: field sets (managedFields), merges, patches and selectors.

Server-side apply is what `KubeCluster.apply` relies on, so its observable rules are modelled here rather
than faked: a manager owns the leaf fields it applied, dropping a field from the next apply removes it
(unless another manager also owns it), and changing a field someone else owns is a conflict unless forced.
Paths use the real `fieldsV1` element syntax (`f:name`, `k:{"name":"x"}`) so managedFields look familiar.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str, ...]
FieldSet = set[Path]

# keys of associative lists in built-in kinds (containers by name, ports by number, ...). CRD lists are
# atomic, as on a real cluster whose CRD schemas carry no x-kubernetes-list-type markers
_ASSOC_KEYS = ("containerPort", "port", "name", "mountPath", "devicePath", "ip", "type")
# identity and server-owned metadata are not tracked, as on the real server
_TRACKED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")


def assoc_key(items: list[Any]) -> str | None:
    """The merge key of a list of maps, or None for an atomic list."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _ASSOC_KEYS:
        if all(key in i for i in items):
            return key
    return None


def _item_element(key: str, item: dict) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))


def field_set(obj: dict, *, assoc: bool) -> FieldSet:
    """Paths of the leaves (and associative-list items) an object sets, as an apply would own them."""
    out: FieldSet = set()

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, (*path, f"f:{k}"))
            return
        key = assoc_key(value) if assoc and isinstance(value, list) else None
        if key is None:
            out.add(path)
            return
        for item in value:
            item_path = (*path, _item_element(key, item))
            out.add(item_path)
            walk(item, item_path)

    for top, value in obj.items():
        if top in ("apiVersion", "kind", "status"):
            continue
        if top == "metadata":
            for mk in _TRACKED_METADATA:
                if mk in value:
                    walk(value[mk], ("f:metadata", f"f:{mk}"))
            continue
        walk(value, (f"f:{top}",))
    return out


def encode_fields(fields: FieldSet) -> dict:
    """FieldSet -> fieldsV1 dict; list items carry a "." marker, like the real server writes them."""
    root: dict = {}
    for path in sorted(fields):
        node = root
        for element in path:
            node = node.setdefault(element, {})
        if path[-1].startswith("k:"):
            node["."] = {}
    return root


def decode_fields(tree: dict, prefix: Path = ()) -> FieldSet:
    out: FieldSet = set()
    for element, sub in tree.items():
        if element == ".":
            out.add(prefix)
            continue
        path = (*prefix, element)
        if sub:
            out |= decode_fields(sub, path)
        else:
            out.add(path)
    return out


def render_path(path: Path) -> str:
    """`.spec.template.spec.containers[name="server"].image`, the way conflict messages print fields."""
    text = ""
    for element in path:
        if element.startswith("f:"):
            text += "." + element[2:]
        else:
            ((k, v),) = json.loads(element[2:]).items()
            text += f"[{k}={json.dumps(v)}]"
    return text


MISSING = object()


def _step(container: Any, element: str) -> Any:
    if element.startswith("f:"):
        return container.get(element[2:], MISSING) if isinstance(container, dict) else MISSING
    ((k, v),) = json.loads(element[2:]).items()
    if isinstance(container, list):
        for item in container:
            if isinstance(item, dict) and item.get(k) == v:
                return item
    return MISSING


def get_path(obj: Any, path: Path) -> Any:
    """The value at a path, or the module's MISSING sentinel."""
    node = obj
    for element in path:
        node = _step(node, element)
        if node is MISSING:
            return MISSING
    return node


def remove_path(obj: dict, path: Path) -> None:
    """Delete the value at a path, then prune maps that the removal left empty."""
    parents = [obj]
    for element in path[:-1]:
        nxt = _step(parents[-1], element)
        if nxt is MISSING:
            return
        parents.append(nxt)
    _remove_child(parents[-1], path[-1])
    # prune now-empty maps bottom-up; list items and the top-level sections stay
    for depth in range(len(path) - 1, 1, -1):
        node = parents[depth]
        if isinstance(node, dict) and not node and path[depth - 1].startswith("f:"):
            _remove_child(parents[depth - 1], path[depth - 1])
        else:
            break


def _remove_child(container: Any, element: str) -> None:
    if element.startswith("f:") and isinstance(container, dict):
        container.pop(element[2:], None)
    elif isinstance(container, list):
        target = _step(container, element)
        if target is not MISSING:
            container.remove(target)


def merge_apply(live: Any, applied: Any, *, assoc: bool) -> Any:
    """Apply-style merge: maps merge, associative lists merge item by key, anything else is replaced."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = copy.deepcopy(live)
        for k, v in applied.items():
            out[k] = merge_apply(live[k], v, assoc=assoc) if k in live else copy.deepcopy(v)
        return out
    if assoc and isinstance(live, list) and isinstance(applied, list):
        key = assoc_key(applied)
        if key and (not live or assoc_key(live) == key):
            out = [copy.deepcopy(i) for i in live]
            for item in applied:
                match = next((n for n, old in enumerate(out) if old.get(key) == item[key]), None)
                if match is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[match] = merge_apply(out[match], item, assoc=True)
            return out
    return copy.deepcopy(applied)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, maps merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch that also merges lists of named maps (containers, env, ports) item by item."""
    if isinstance(patch, dict):
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge_patch(out.get(k), v)
        return out
    if isinstance(patch, list) and isinstance(target, list):
        key = assoc_key(patch)
        if key and (not target or assoc_key(target) == key):
            out = [copy.deepcopy(i) for i in target]
            for item in patch:
                match = next((n for n, old in enumerate(out) if old.get(key) == item[key]), None)
                if item.get("$patch") == "delete":
                    if match is not None:
                        out.pop(match)
                elif match is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[match] = strategic_merge_patch(out[match], item)
            return out
    return copy.deepcopy(patch)


# --- managedFields ---------------------------------------------------------------------------------


@dataclass
class Manager:
    """One managedFields entry."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: FieldSet = field(default_factory=set)

    def entry(self) -> dict:
        return {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields(self.fields),
        }


def managers_of(obj: dict | None) -> list[Manager]:
    entries = (obj or {}).get("metadata", {}).get("managedFields") or []
    return [
        Manager(
            e["manager"],
            e["operation"],
            e.get("apiVersion", ""),
            e.get("time", ""),
            decode_fields(e.get("fieldsV1") or {}),
        )
        for e in entries
    ]


def set_managers(obj: dict, managers: list[Manager], before: list[Manager]) -> None:
    """Write managers back; an entry keeps its old time unless its field set changed (no-ops stay no-ops)."""
    old = {(m.manager, m.operation): m for m in before}
    out = []
    for m in managers:
        if not m.fields:
            continue
        prev = old.get((m.manager, m.operation))
        if prev is not None and prev.fields == m.fields:
            m.time = prev.time
        out.append(m.entry())
    obj.setdefault("metadata", {})["managedFields"] = out


# --- selectors -------------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t for t in terms if t.strip()]


def parse_label_selector(selector: str) -> list[tuple[str, str, frozenset[str]]]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` into (key, op, values); ValueError when malformed."""
    parsed = []
    for term in _split_terms(selector):
        if m := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            parsed.append((m.group(1), m.group(2), values))
        elif m := _EQ_TERM.match(term):
            op = "!=" if m.group(2) == "!=" else "="
            parsed.append((m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS_TERM.match(term):
            parsed.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
        else:
            raise ValueError(f"unable to parse requirement: {term.strip()!r}")
    return parsed


def labels_match(labels: dict[str, str], requirements: list[tuple[str, str, frozenset[str]]]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        ok = {
            "=": present and labels.get(key) in values,
            "in": present and labels.get(key) in values,
            "!=": not present or labels.get(key) not in values,
            "notin": not present or labels.get(key) not in values,
            "exists": present,
            "!exists": not present,
        }[op]
        if not ok:
            return False
    return True


_FIELD_TERM = re.compile(r"^\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*([\w.-]*)\s*$")


def parse_field_selector(selector: str) -> list[tuple[str, bool, str]]:
    """Only the fields every kind supports: metadata.name and metadata.namespace."""
    out = []
    for term in _split_terms(selector):
        m = _FIELD_TERM.match(term)
        if not m:
            raise ValueError(f'field label not supported: "{term.strip().split("=")[0].rstrip("!")}"')
        out.append((m.group(1).split(".")[1], m.group(2) != "!=", m.group(3)))
    return out


def fields_match(obj: dict, requirements: list[tuple[str, bool, str]]) -> bool:
    meta = obj.get("metadata", {})
    return all((meta.get(field) == value) == equal for field, equal, value in requirements)
