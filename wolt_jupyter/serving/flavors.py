"""Load a scikit-learn MLflow model straight from its directory, without importing MLflow.

Why: importing MLflow costs the runtime about a second of CPU (more on a busy machine) before it can load
anything, and a model saved by ``mlflow.sklearn`` needs none of it to predict. :func:`load_direct` reads the
``MLmodel`` file, deserializes the estimator as ``mlflow.sklearn``'s loader does (skops with the model's
trusted types -- plain estimators read by :mod:`~wolt_jupyter.serving.skops_format` without importing
``skops.io`` --, pickle or cloudpickle, honouring ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``) and reads the
signature and input example into the few attributes :class:`~wolt_jupyter.serving.models.ModelAdapter`
uses. It says ``None`` -- load it with ``mlflow.pyfunc`` -- for anything it does not reproduce exactly: other
flavors, code paths, model params, a signature that is not all required numeric columns (those requests go
through MLflow's schema enforcement), or an input example that is not a split-oriented DataFrame.

Only the array path is served from here: the adapter calls the estimator's predict function on a 2-D float
array in signature column order, which is what it does for the same model loaded by MLflow. The adapter's
check that this path agrees with a DataFrame predict is the loader's guard: if it does not agree (a model
that selects columns by name), the model is loaded again with MLflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# MLflow column types this loader handles, with the numpy dtype MLflow's schema casts them to
NUMERIC_COLUMNS = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}
SERIALIZATIONS = ("skops", "pickle", "cloudpickle")


@dataclass(frozen=True)
class ColumnSpec:
    """One named column of a signature (MLflow's ``ColSpec``: its type as the lower-case type name)."""

    name: str | None
    type: str
    required: bool = True


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a signature (MLflow's ``TensorSpec``: numpy dtype, shape with -1 for any)."""

    name: str | None
    type: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Schema:
    """A signature's inputs or outputs: all columns or all tensors, as MLflow's ``Schema``."""

    inputs: list[Any]

    def is_tensor_spec(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], TensorSpec)


@dataclass(frozen=True)
class Signature:
    inputs: Schema | None
    outputs: Schema | None


@dataclass
class Metadata:
    """What the adapter reads of ``PyFuncModel.metadata``."""

    flavors: dict[str, Any]
    signature: Signature | None


class SklearnWrapper:
    """What ``mlflow.sklearn`` wraps an estimator in (the adapter reads ``sklearn_model``)."""

    def __init__(self, sklearn_model: Any) -> None:
        self.sklearn_model = sklearn_model


@dataclass
class DirectModel:
    """A scikit-learn model loaded without MLflow, with the attributes of ``PyFuncModel`` the adapter uses."""

    metadata: Metadata
    input_example: Any
    _model_impl: SklearnWrapper
    _predict_fn: Any
    path: Path
    columns: list[ColumnSpec] = field(default_factory=list)

    def predict(self, data: Any) -> Any:
        """A DataFrame (or 2-D array) in, the estimator's answer out: columns selected in signature order and
        cast to the signature's types, as MLflow's schema enforcement does for numeric columns."""
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            missing = [c.name for c in self.columns if c.name not in data.columns]
            if missing:
                raise ValueError(f"missing input column(s) {', '.join(map(str, missing))}")
            data = pd.DataFrame(
                {
                    c.name: data[c.name].to_numpy().astype(NUMERIC_COLUMNS[c.type], copy=False)
                    for c in self.columns
                }
            )
        return self._predict_fn(data)


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(Path(model_dir) / "MLmodel", encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader) or {}


def sklearn_conf(mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    """The sklearn flavor's configuration when this loader can load the model, else None."""
    flavors = mlmodel.get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    sk = flavors.get("sklearn") or {}
    if pyfunc.get("loader_module") != "mlflow.sklearn" or not sk or pyfunc.get("code") or sk.get("code"):
        return None
    if pyfunc.get("model_config") or not pyfunc.get("model_path"):
        return None
    if sk.get("serialization_format", "pickle") not in SERIALIZATIONS:
        return None
    return sk


def direct_loadable(model_dir: Path) -> bool:
    """Whether :func:`load_direct` would try this directory (what a supervisor preloads by)."""
    try:
        mlmodel = read_mlmodel(model_dir)
        return sklearn_conf(mlmodel) is not None and _signature(mlmodel) is not None
    except (OSError, ValueError, TypeError, KeyError):
        return False


def estimator_modules(model_dir: Path) -> list[str]:
    """The scikit-learn modules a skops-saved model's classes live in (read from its schema, nothing built):
    what a supervisor imports before forking a restart. Empty for other formats or an unreadable file."""
    import zipfile

    try:
        sk = sklearn_conf(read_mlmodel(model_dir)) or {}
        if sk.get("serialization_format") != "skops":
            return []
        with zipfile.ZipFile(Path(model_dir) / sk["pickled_model"]) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return []
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            module = node.get("__module__")
            if (
                node.get("__loader__") == "ObjectNode"
                and isinstance(module, str)
                and module.startswith("sklearn.")
            ):
                found[module] = None
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return list(found)


def load_direct(model_dir: Path) -> DirectModel | None:
    """The model in ``model_dir`` loaded as ``mlflow.sklearn`` would, or None: load it with MLflow."""
    model_dir = Path(model_dir)
    if not (model_dir / "MLmodel").is_file() or not _pickle_allowed():
        return None
    try:
        mlmodel = read_mlmodel(model_dir)
    except (OSError, ValueError):
        return None
    sk = sklearn_conf(mlmodel)
    signature = _signature(mlmodel) if sk is not None else None
    if sk is None or signature is None:
        return None
    columns = list(signature.inputs.inputs)  # type: ignore[union-attr]
    try:
        example = _input_example(mlmodel, model_dir, columns)
    except _Unsupported:
        return None
    pyfunc = mlmodel["flavors"]["python_function"]
    estimator = _deserialize(model_dir / pyfunc["model_path"], sk)
    predict_fn = getattr(estimator, pyfunc.get("predict_fn") or "predict", None)
    if predict_fn is None:
        return None
    return DirectModel(
        metadata=Metadata(flavors=mlmodel["flavors"], signature=signature),
        input_example=example,
        _model_impl=SklearnWrapper(estimator),
        _predict_fn=predict_fn,
        path=model_dir,
        columns=columns,
    )


def _pickle_allowed() -> bool:
    """MLflow refuses to deserialize any format when this is false; then MLflow says so, in its words."""
    value = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower()
    return value in ("true", "1")


def _deserialize(path: Path, sk: dict[str, Any]) -> Any:
    fmt = sk.get("serialization_format", "pickle")
    if fmt == "skops":
        from wolt_jupyter.serving import skops_format

        try:  # plain estimators without importing skops.io (its import imports all of scikit-learn)
            return skops_format.load(path)
        except skops_format.NotPlain:
            pass
        import skops.io

        return skops.io.load(path, trusted=sk.get("skops_trusted_types"))
    with open(path, "rb") as fh:
        if fmt == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(fh)
        import pickle

        return pickle.load(fh)  # the same trust MLflow's loader gives the model's own files


class _Unsupported(Exception):
    pass


def _signature(mlmodel: dict[str, Any]) -> Signature | None:
    """The signature when its inputs are all required, named numeric columns and it has no params."""
    raw = mlmodel.get("signature")
    if not raw or raw.get("params") or not raw.get("inputs"):
        return None
    try:
        inputs = [_spec(d) for d in json.loads(raw["inputs"])]
        outputs = [_spec(d) for d in json.loads(raw["outputs"])] if raw.get("outputs") else None
    except (_Unsupported, ValueError, TypeError, KeyError):
        return None
    if not inputs or not all(
        isinstance(c, ColumnSpec) and c.type in NUMERIC_COLUMNS and c.required and c.name for c in inputs
    ):
        return None
    if outputs is not None and len({type(o) for o in outputs}) > 1:
        return None
    return Signature(Schema(inputs), Schema(outputs) if outputs else None)


def _spec(d: dict[str, Any]) -> ColumnSpec | TensorSpec:
    kind = d.get("type")
    if kind == "tensor":
        ts = d["tensor-spec"]
        return TensorSpec(d.get("name"), np.dtype(ts["dtype"]), tuple(int(x) for x in ts["shape"]))
    if not isinstance(kind, str) or kind in ("array", "object", "map", "any"):
        raise _Unsupported(kind)
    return ColumnSpec(d.get("name"), kind, bool(d.get("required", True)))


def _input_example(mlmodel: dict[str, Any], model_dir: Path, columns: list[ColumnSpec]) -> Any:
    """The saved input example as MLflow reads it for this signature (a DataFrame cast to the column
    types), None when there is none; :class:`_Unsupported` for another form."""
    info = mlmodel.get("saved_input_example_info")
    if not info:
        return None
    if info.get("type") != "dataframe" or info.get("pandas_orient", "split") != "split":
        raise _Unsupported(info.get("type"))
    try:
        doc = json.loads((model_dir / info["artifact_path"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise _Unsupported("unreadable input example") from exc
    if info.get("params"):
        doc = doc["inputs"]
    if not isinstance(doc, dict) or "data" not in doc or set(doc) - {"columns", "data", "index"}:
        raise _Unsupported("not a split DataFrame")
    import pandas as pd

    frame = pd.DataFrame(index=doc.get("index"), columns=doc.get("columns"), data=doc["data"])
    if [str(c) for c in frame.columns] != [c.name for c in columns]:
        raise _Unsupported("example columns differ from the signature")
    try:
        return frame.astype({c.name: NUMERIC_COLUMNS[c.type] for c in columns})
    except (TypeError, ValueError) as exc:  # a missing value in an integer column, say: MLflow's own reading
        raise _Unsupported("example does not cast to the signature") from exc
