"""Read a skops file of plain scikit-learn estimators without importing ``skops.io``.

Why: MLflow 3 saves scikit-learn models with skops, and ``import skops.io`` builds its list of trusted types
by importing every scikit-learn module (``sklearn.utils.all_estimators``) and scanning ``scipy.special``:
most of a second of CPU before a model of a few kilobytes can load. A linear model, a scaler or a pipeline
of them is stored with a handful of node kinds, which this module reads itself.

The format (skops persistence protocol 2, as written by skops 0.10+): a zip whose ``schema.json`` is a tree
of nodes, each naming its ``__module__``, ``__class__`` and ``__loader__``; arrays are ``.npy`` members.
Read here: ``ObjectNode`` (``cls.__new__`` then ``__setstate__``/``__dict__``), ``DictNode``, ``ListNode``,
``TupleNode``, ``JsonNode``, ``TypeNode`` of a primitive type and ``NdArrayNode`` (``.npy`` loaded with
``allow_pickle=False``, or an object array of JSON values); a node's ``__id__`` makes a shared object one
object again, as skops does.

Trust is never wider than skops' default: an object is built only when its class is a public scikit-learn
estimator (a non-abstract ``BaseEstimator`` subclass exported under its public package, a subset of what
``all_estimators`` lists and skops trusts). Every file is checked in full before anything is built. Any other
node, class, protocol or a model that names its own trusted types raises :class:`NotPlain`: the caller then
loads the file with ``skops.io``, which applies its own rules (and refuses what it does not trust).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

PROTOCOL = 2
_PRIMITIVES = {"int": int, "float": float, "str": str, "bool": bool}
_IGNORED_PARTS = {
    "tests",
    "externals",
    "setup",
    "conftest",
    "experimental",
    "estimator_checks",
}  # as sklearn's
_CONTAINERS = {"DictNode": ("dict", dict), "ListNode": ("list", list), "TupleNode": ("tuple", tuple)}


class NotPlain(Exception):
    """The file holds something this reader does not build: load it with ``skops.io``."""


def load(path: Path) -> Any:
    """The object stored in the skops file at ``path``; :class:`NotPlain` when this reader leaves it."""
    with zipfile.ZipFile(path) as zf:
        try:
            schema = json.loads(zf.read("schema.json"))
        except (KeyError, ValueError) as exc:
            raise NotPlain("no readable schema.json") from exc
        if schema.get("protocol") != PROTOCOL:
            raise NotPlain(f"skops protocol {schema.get('protocol')}")
        reader = _Reader(zf)
        reader.check(schema)  # everything audited before anything is built
        return reader.build(schema)


class _Reader:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.built: dict[Any, Any] = {}
        self.building: set[Any] = set()
        self.classes: dict[tuple[str, str], type] = {}

    # -- audit ---------------------------------------------------------------------------------------------
    def check(self, node: Any) -> None:
        if not isinstance(node, dict) or "__loader__" not in node:
            raise NotPlain("not a node")
        kind, module, name = node["__loader__"], node.get("__module__"), node.get("__class__")
        if kind == "JsonNode":
            return
        if kind == "TypeNode":
            if module != "builtins" or name not in _PRIMITIVES:
                raise NotPlain(f"type {module}.{name}")
            return
        if kind in _CONTAINERS:
            if module != "builtins" or name != _CONTAINERS[kind][0]:
                raise NotPlain(f"{kind} of {module}.{name}")
            content = node["content"]
            if kind == "DictNode":
                self.check(node["key_types"])
                for value in content.values():
                    self.check(value)
            else:
                for value in content:
                    self.check(value)
            return
        if kind == "NdArrayNode":
            self._check_array(node)
            return
        if kind == "ObjectNode":
            self._estimator_class(module, name)
            if node.get("content") is not None:
                self.check(node["content"])
            return
        raise NotPlain(f"node {kind}")

    def _check_array(self, node: dict[str, Any]) -> None:
        import numpy as np

        module, name = node.get("__module__"), node.get("__class__")
        if module != "numpy":
            raise NotPlain(f"array of {module}.{name}")
        if name != "ndarray":
            cls = getattr(np, str(name), None)
            if not (isinstance(cls, type) and issubclass(cls, (np.number, np.bool_))):
                raise NotPlain(f"numpy.{name}")
        if node.get("type") == "numpy":
            if not isinstance(node.get("file"), str):
                raise NotPlain("array without a file")
            return
        if node.get("type") == "json" and name == "ndarray":
            for item in node["content"]:
                if not isinstance(item, dict) or item.get("__loader__") != "JsonNode":
                    raise NotPlain("object array of non-JSON values")
            self.check(node["shape"])
            return
        raise NotPlain(f"array stored as {node.get('type')}")

    def _estimator_class(self, module: Any, name: Any) -> type:
        """The class when it is a public scikit-learn estimator; :class:`NotPlain` otherwise."""
        key = (str(module), str(name))
        if key in self.classes:
            return self.classes[key]
        if not (isinstance(module, str) and module.startswith("sklearn.") and isinstance(name, str)):
            raise NotPlain(f"class {module}.{name}")
        if name.startswith(("_", "Base")):
            raise NotPlain(f"class {module}.{name}")
        import importlib

        from sklearn.base import BaseEstimator

        # the public package that exports it: sklearn.linear_model for sklearn.linear_model._logistic
        parts = module.split(".")
        public = ".".join(p for p in parts if not p.startswith("_")) if parts[-1].startswith("_") else module
        if any(p.startswith("_") for p in public.split(".")) or _IGNORED_PARTS & set(parts):
            raise NotPlain(f"class {module}.{name}")
        try:
            cls = getattr(importlib.import_module(module), name)
            exported = getattr(importlib.import_module(public), name, None)
        except (ImportError, AttributeError) as exc:
            raise NotPlain(f"class {module}.{name}") from exc
        if cls is not exported or not isinstance(cls, type) or not issubclass(cls, BaseEstimator):
            raise NotPlain(f"class {module}.{name}")
        if getattr(cls, "__abstractmethods__", None):
            raise NotPlain(f"abstract class {module}.{name}")
        self.classes[key] = cls
        return cls

    # -- build ---------------------------------------------------------------------------------------------
    def build(self, node: dict[str, Any]) -> Any:
        ident = node.get("__id__")
        if ident is not None and ident in self.built:
            return self.built[ident]
        if ident is not None:
            if ident in self.building:
                raise NotPlain("an object that contains itself")
            self.building.add(ident)
        value = self._build(node)
        if ident is not None:
            self.building.discard(ident)
            self.built[ident] = value
        return value

    def _build(self, node: dict[str, Any]) -> Any:
        kind = node["__loader__"]
        if kind == "JsonNode":
            return json.loads(node["content"])
        if kind == "TypeNode":
            return _PRIMITIVES[node["__class__"]]
        if kind == "DictNode":
            key_types = self.build(node["key_types"])
            return {
                kt(k): self.build(v) for kt, (k, v) in zip(key_types, node["content"].items(), strict=False)
            }
        if kind == "ListNode":
            return [self.build(v) for v in node["content"]]
        if kind == "TupleNode":
            return tuple(self.build(v) for v in node["content"])
        if kind == "NdArrayNode":
            return self._array(node)
        cls = self._estimator_class(node["__module__"], node["__class__"])  # ObjectNode
        instance = cls.__new__(cls)
        if node.get("content") is None:
            return instance
        attrs = self.build(node["content"])
        if attrs is not None:
            if hasattr(instance, "__setstate__"):
                instance.__setstate__(attrs)
            else:
                instance.__dict__.update(attrs)
        return instance

    def _array(self, node: dict[str, Any]) -> Any:
        import numpy as np

        if node["type"] == "numpy":
            try:
                data = self.zf.read(node["file"])
            except KeyError as exc:
                raise NotPlain(f"missing member {node['file']}") from exc
            content = np.load(io.BytesIO(data), allow_pickle=False)
            return content if node["__class__"] == "ndarray" else getattr(np, node["__class__"])(content)
        shape = self.build(node["shape"])
        items = [self.build(item) for item in node["content"]]
        if len(shape) == 1:
            out = np.ndarray(shape=len(items), dtype="O")
            for i, v in enumerate(items):
                out[i] = v
            return out
        return np.array(items, dtype="O")
