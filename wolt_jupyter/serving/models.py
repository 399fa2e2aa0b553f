"""A loaded MLflow pyfunc model and the mapping between V2 tensors and what the model takes.

Why not just ``pyfunc.predict(DataFrame)``: on a 1-row request the DataFrame and schema enforcement cost
more than the model itself. Where the signature is all-numeric columns and the flavor is scikit-learn, the
adapter calls the flavor's predict function on a 2-D numpy array (columns in signature order). Every other
flavor or signature goes through ``pyfunc.predict`` with a typed DataFrame (or the tensors for tensor
signatures), so any pyfunc model stays correct.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from wolt_jupyter.private import private_dir, private_tree
from wolt_jupyter.responses.record import PROBA_OUTPUT
from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.tensors import Tensor, datatype_of
from wolt_jupyter.untrusted import shown_value

# MLflow column type -> (V2 datatype, numpy dtype, V2 datatypes a client may send for it)
_NUMERIC = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64")
_INTS = tuple(t for t in _NUMERIC if not t.startswith("FP"))
_COLTYPES: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "double": ("FP64", np.float64, (*_NUMERIC, "BOOL")),
    "float": ("FP32", np.float32, (*_NUMERIC, "BOOL")),
    "long": ("INT64", np.int64, (*_INTS, "BOOL")),
    "integer": ("INT32", np.int32, (*_INTS, "BOOL")),
    "boolean": ("BOOL", np.bool_, ("BOOL",)),
    "string": ("BYTES", object, ("BYTES",)),
    "binary": ("BYTES", object, ("BYTES",)),
    "datetime": ("BYTES", object, ("BYTES",)),
}
DEFAULT_OUTPUT = "predict"
PROBE_ROWS = 2  # rows of the made-up probe input when a model has a signature but no input example

log = logging.getLogger(__name__)


class BatchMismatch(Exception):
    """The model's output cannot be split back per request (its length is not the number of rows)."""


@dataclass(frozen=True)
class Column:
    name: str
    mlflow_type: str
    datatype: str
    dtype: Any
    accepts: tuple[str, ...]
    required: bool = True


@dataclass
class Prepared:
    """Model-ready input for one request; ``rows`` lets a batch be split back."""

    kind: str  # "array" (2-D numeric), "frame" (DataFrame), "tensor" (ndarray), "dict"
    data: Any
    rows: int
    tensors: list[Tensor]


def _mlflow_type_name(t: Any) -> str:
    return getattr(t, "name", str(t)).lower()


class ModelAdapter:
    """One variant's model, with the signature-driven input mapping and a batched predict."""

    def __init__(
        self, variant: str, uri: str, model: Any, load_seconds: float = 0.0, *, probe: bool = True
    ) -> None:
        self.variant = variant
        self.uri = uri
        self.model = model
        self.load_seconds = load_seconds
        self.model_name, self.model_version = _name_version(uri)
        meta = model.metadata
        sig = meta.signature
        self.columns: list[Column] = []
        self.tensor_specs: list[Any] = []
        self.kind = "none"
        if sig is not None and sig.inputs is not None:
            if sig.inputs.is_tensor_spec():
                self.kind = "tensor"
                self.tensor_specs = list(sig.inputs.inputs)
            else:
                self.kind = "columns"
                for i, c in enumerate(sig.inputs.inputs):
                    tname = _mlflow_type_name(c.type)
                    datatype, dtype, accepts = _COLTYPES.get(
                        tname, ("BYTES", object, ("BYTES", *_NUMERIC, "BOOL"))
                    )
                    self.columns.append(
                        Column(
                            c.name if c.name is not None else str(i),
                            tname,
                            datatype,
                            dtype,
                            accepts,
                            c.required,
                        )
                    )
        self.output_names: list[str] = []
        if sig is not None and sig.outputs is not None and not sig.outputs.is_tensor_spec():
            self.output_names = [str(c.name) for c in sig.outputs.inputs if c.name is not None]
        self.output_metadata = _output_metadata(sig)
        # an unsigned model is described by its input example, and takes arrays where the example is one
        example = getattr(model, "input_example", None)
        self._unsigned_inputs: list[dict[str, Any]] = []
        self._takes_arrays = isinstance(example, np.ndarray) or "onnx" in meta.flavors
        if self.kind == "none" and example is not None:
            for t in example_tensors(example, []) or []:
                self._unsigned_inputs.append(
                    {"name": t.name, "datatype": t.datatype, "shape": [-1, *t.shape[1:]]}
                )
        # what to_outputs renames (by position) and reshapes the model's outputs to: set by the probe
        self._served: tuple[tuple[str, tuple[int, ...] | None], ...] = ()
        self.probe_error: str | None = None
        # logging.probabilities (set by the data plane): a classifier's class probabilities are logged too
        self.log_probabilities = False
        self._proba: Any = None
        self._fast = self._fast_predict_fn()
        if self._fast is not None and not self._fast_path_agrees():
            self._fast = None
        if probe:
            self._settle_outputs(sig)
        self._proba = self._proba_fn()  # after the probe: it knows the names of the model's outputs

    # -- introspection -------------------------------------------------------------------------------------
    def _fast_predict_fn(self) -> Any:
        """The flavor's own predict on arrays, when that is the same computation as pyfunc.predict."""
        flavors = self.model.metadata.flavors
        impl = getattr(self.model, "_model_impl", None)
        fn = getattr(self.model, "_predict_fn", None)
        if "sklearn" not in flavors or impl is None or fn is None or not hasattr(impl, "sklearn_model"):
            return None
        if self.kind == "columns" and not all(c.datatype != "BYTES" for c in self.columns):
            return None
        if self.kind == "tensor":
            return None
        if getattr(fn, "__name__", "") == "predict":
            return impl.sklearn_model.predict  # the wrapper's predict only forwards to this
        return fn

    def _proba_fn(self) -> Any:
        """A scikit-learn classifier's ``predict_proba`` when pyfunc serves its ``predict`` (a model logged to
        predict probabilities already answers with them) and no output of the model has that name."""
        meta = self.model.metadata
        estimator = getattr(getattr(self.model, "_model_impl", None), "sklearn_model", None)
        pyfunc = meta.flavors.get("python_function") or {}
        if (
            "sklearn" not in meta.flavors
            or estimator is None
            or (pyfunc.get("predict_fn") or "predict") != "predict"
        ):
            return None
        if any(m.get("name") == PROBA_OUTPUT for m in self.output_metadata):
            return None
        fn = getattr(estimator, "predict_proba", None)  # absent on regressors, SVC(probability=False)
        return fn if callable(fn) and hasattr(estimator, "classes_") else None

    @property
    def logs_probabilities(self) -> bool:
        """Whether :meth:`predict_prepared` adds the log-only ``predict_proba`` output."""
        return self.log_probabilities and self._proba is not None

    def _fast_path_agrees(self) -> bool:
        """One probe row through both paths: a model that needs column names (a ColumnTransformer selecting
        by name, say) fails or differs on the array path, and then keeps ``pyfunc.predict``."""
        import pandas as pd

        try:
            cols = self.columns
            if cols:
                frame = pd.DataFrame({c.name: np.zeros(1, dtype=c.dtype) for c in cols})
                array = np.zeros((1, len(cols)), dtype=np.float64)
            else:
                n = getattr(self.model._model_impl.sklearn_model, "n_features_in_", None)
                if n is None:
                    return False
                frame, array = pd.DataFrame(np.zeros((1, n))), np.zeros((1, n))
            slow = self.to_outputs(self.model.predict(frame))
            fast = self.to_outputs(self._fast(array))
        except Exception:
            return False
        return len(slow) == len(fast) and all(
            a.shape == b.shape and np.array_equal(a.astype(str), b.astype(str))
            for (_, a), (_, b) in zip(slow, fast, strict=False)
        )

    def probe_tensors(self) -> list[Tensor] | None:
        """The request a client reading this model's metadata would send: the input example where the model
        has one, else made-up values (zeros, empty strings) shaped as the signature says; None: no way to
        know what the model takes."""
        example = getattr(self.model, "input_example", None)
        tensors = example_tensors(example, self.input_metadata()) if example is not None else None
        if tensors is None and self.kind != "none":
            tensors = synthetic_tensors(self.input_metadata())
        return tensors

    def _settle_outputs(self, sig: Any) -> None:
        """Advertise what the model really returns: one prediction on :meth:`probe_tensors` gives the
        outputs' count, order, datatypes and shapes. Names come from the signature where it names them,
        else from the model (a dict key, a DataFrame column), else ``predict``; served outputs are renamed by
        position to the advertised names, so a client asking for an advertised output by name gets it."""
        probe = self.probe_tensors()
        if probe is None:
            return
        try:
            real = self.predict_prepared(self.prepare(probe))
        except Exception as exc:  # a model that fails on its own example still loads; its requests say why
            self.probe_error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            log.warning("variant %s: one prediction on the input example failed (%s); outputs are described "
                        "from the signature only", self.variant, self.probe_error)  # fmt: skip
            return
        declared = _declared_outputs(sig)
        if declared and len(declared) != len(real):
            log.warning(
                "variant %s: the signature declares %d output(s) but the model returns %d (%s): advertising "
                "what it returns", self.variant, len(declared), len(real), ", ".join(n for n, _ in real),
            )  # fmt: skip
            declared = []
        served: list[tuple[str, tuple[int, ...] | None]] = []
        metadata: list[dict[str, Any]] = []
        for i, (real_name, arr) in enumerate(real):
            name, shape = declared[i] if declared else (None, None)
            name = name or real_name
            rest = tuple(arr.shape[1:])
            # a declared shape that holds the same values per row (e.g. [-1,1] for a model returning [N])
            # is served as declared: the signature is the contract the model was logged with
            target = None
            if shape is not None and len(shape) >= 1 and all(d >= 0 for d in shape[1:]):
                want = tuple(shape[1:])
                if want != rest and prod(want) == prod(rest):
                    target, rest = want, want
            served.append((name, target))
            metadata.append({"name": name, "datatype": datatype_of(arr), "shape": [-1, *rest]})
        if len({n for n, _ in served}) != len(served):
            log.warning("variant %s: output names %s repeat; serving the model's own", self.variant, served)
            served = [(n, t) for (n, _), (_, t) in zip(real, served, strict=True)]
            for m, (n, _) in zip(metadata, real, strict=True):
                m["name"] = n
        self._served = tuple(served)
        self.output_metadata = metadata

    def input_metadata(self) -> list[dict[str, Any]]:
        if self.kind == "columns":
            return [{"name": c.name, "datatype": c.datatype, "shape": [-1, 1]} for c in self.columns]
        if self.kind == "tensor":
            return [
                {
                    "name": s.name or "input-0",
                    "datatype": datatype_of(np.empty(0, dtype=s.type)),
                    "shape": list(s.shape),
                }
                for s in self.tensor_specs
            ]
        return self._unsigned_inputs

    # -- tensors -> model input ----------------------------------------------------------------------------
    def prepare(self, tensors: list[Tensor]) -> Prepared:
        """Map request tensors onto the model's inputs; :class:`ProtocolError` (400) when they do not fit."""
        if self.kind == "columns":
            p = self._prepare_columns(tensors)
        elif self.kind == "tensor":
            p = self._prepare_tensor(tensors)
        else:
            p = self._prepare_unsigned(tensors)
        if p.rows == 0 and p.kind != "dict":
            raise ProtocolError(400, "the request has no rows; send at least one")
        return p

    def _expected(self) -> str:
        cols = ", ".join(f"{c.name}:{c.datatype}" for c in self.columns)
        return (
            f"one tensor per column ({cols}) with shape [N] or [N,1], or one 2-D tensor of shape "
            f"[N,{len(self.columns)}] with the columns in that order"
        )

    def _prepare_columns(self, tensors: list[Tensor]) -> Prepared:
        cols = self.columns
        by_name = {t.name: t for t in tensors}
        arrays: list[np.ndarray] = []
        if len(tensors) == 1 and (tensors[0].name not in {c.name for c in cols} or len(cols) == 1):
            t = tensors[0]
            a = t.array
            if a.ndim == 1 and len(cols) == 1:
                a = a.reshape(-1, 1)
            if a.ndim != 2 or a.shape[1] != len(cols):
                raise ProtocolError(
                    400,
                    f"input {shown_value(t.name)} has shape {shown_value(list(a.shape))}; expected {self._expected()}",
                )
            for c in cols:
                if t.datatype not in c.accepts:
                    raise ProtocolError(
                        400,
                        f"input {shown_value(t.name)} is {t.datatype} but column {c.name!r} is {c.mlflow_type}; "
                        f"send one of {', '.join(c.accepts)}",
                    )
            if self._fast is not None:
                return Prepared("array", a.astype(np.float64, copy=False), a.shape[0], tensors)
            arrays = [a[:, i] for i in range(len(cols))]
        else:
            unknown = [n for n in by_name if n not in {c.name for c in cols}]
            if unknown:
                raise ProtocolError(
                    400, f"unknown input(s) {', '.join(unknown)}; expected {self._expected()}"
                )
            rows = None
            for c in cols:
                t = by_name.get(c.name)
                if t is None:
                    if c.required:
                        raise ProtocolError(400, f"missing input {c.name!r}; expected {self._expected()}")
                    arrays.append(None)  # type: ignore[arg-type]
                    continue
                if t.datatype not in c.accepts:
                    raise ProtocolError(
                        400,
                        f"input {shown_value(t.name)} is {t.datatype} but column {c.name!r} is {c.mlflow_type}; "
                        f"send one of {', '.join(c.accepts)}",
                    )
                a = t.array
                if a.ndim == 2 and a.shape[1] == 1:
                    a = a[:, 0]
                if a.ndim != 1:
                    raise ProtocolError(
                        400,
                        f"input {shown_value(t.name)} has shape {shown_value(list(t.shape))}; expected [N] or [N,1]",
                    )
                if rows is None:
                    rows = a.shape[0]
                elif a.shape[0] != rows:
                    raise ProtocolError(
                        400,
                        f"input {shown_value(t.name)} has {a.shape[0]} rows but other inputs have {rows}; "
                        "every column needs the same number of rows",
                    )
                arrays.append(a)
            if self._fast is not None and all(a is not None for a in arrays):
                x = np.empty((rows or 0, len(cols)), dtype=np.float64)
                for i, a in enumerate(arrays):
                    x[:, i] = a
                return Prepared("array", x, x.shape[0], tensors)
        import pandas as pd

        data = {}
        for c, a in zip(cols, arrays, strict=False):
            if a is not None:
                data[c.name] = a.astype(c.dtype, copy=False) if c.dtype is not object else a
        return Prepared("frame", pd.DataFrame(data), len(next(iter(data.values()))), tensors)

    def _prepare_tensor(self, tensors: list[Tensor]) -> Prepared:
        specs = self.tensor_specs
        if len(specs) == 1:
            if len(tensors) != 1:
                raise ProtocolError(400, f"expected exactly one input tensor, got {len(tensors)}")
            spec, t = specs[0], tensors[0]
            want = list(spec.shape)
            if len(want) != t.array.ndim or any(
                w not in (-1, g) for w, g in zip(want, t.array.shape, strict=False)
            ):
                raise ProtocolError(
                    400,
                    f"input {shown_value(t.name)} has shape {shown_value(list(t.shape))}; expected {want} (-1 = any)",
                )
            try:
                a = t.array.astype(spec.type, copy=False)
            except (TypeError, ValueError):
                raise ProtocolError(
                    400, f"input {shown_value(t.name)} ({t.datatype}) cannot be cast to {spec.type}"
                ) from None
            return Prepared("tensor", a, a.shape[0] if a.ndim else 1, tensors)
        by_name = {t.name: t for t in tensors}
        data = {}
        for s in specs:
            t = by_name.get(s.name)
            if t is None:
                raise ProtocolError(400, f"missing input {s.name!r}; expected {[sp.name for sp in specs]}")
            data[s.name] = t.array.astype(s.type, copy=False)
        return Prepared("dict", data, 0, tensors)

    def _prepare_unsigned(self, tensors: list[Tensor]) -> Prepared:
        if len(tensors) == 1 and tensors[0].array.ndim == 2:
            a = tensors[0].array
            if self._fast is not None or self._takes_arrays or "sklearn" in self.model.metadata.flavors:
                return Prepared("tensor", a, a.shape[0], tensors)
            import pandas as pd

            return Prepared("frame", pd.DataFrame(a), a.shape[0], tensors)
        import pandas as pd

        data = {}
        for t in tensors:
            a = t.array[:, 0] if t.array.ndim == 2 and t.array.shape[1] == 1 else t.array
            if a.ndim != 1:
                raise ProtocolError(
                    400,
                    f"input {shown_value(t.name)}: expected shape [N] or [N,1], got {shown_value(list(t.shape))}",
                )
            data[t.name] = a
        if len({len(a) for a in data.values()}) > 1:
            raise ProtocolError(400, "inputs have different numbers of rows")
        return Prepared("frame", pd.DataFrame(data), len(next(iter(data.values()))), tensors)

    # -- predict -------------------------------------------------------------------------------------------
    def predict_prepared(self, p: Prepared) -> list[tuple[str, np.ndarray]]:
        # column-major, as scikit-learn gets a DataFrame's values through pyfunc: the same BLAS summation
        # order, so the same last bits (a row-major array differs in the last place for linear models)
        raw = self._fast(np.asfortranarray(p.data)) if p.kind == "array" else self.model.predict(p.data)
        outputs = self.to_outputs(raw)
        if self.logs_probabilities and p.kind != "dict":
            try:
                data = np.asfortranarray(p.data) if p.kind == "array" else p.data
                outputs.append((PROBA_OUTPUT, np.asarray(self._proba(data), dtype=np.float64)))
            except Exception:  # only the log misses them: the answer stands
                log.debug("variant %s: predict_proba failed", self.variant, exc_info=True)
        return outputs

    def predict_batch(self, batch: list[Prepared]) -> list[list[tuple[str, np.ndarray]]]:
        """One predict over many requests' rows, split back per request (raises BatchMismatch if it can't)."""
        if len(batch) == 1:
            return [self.predict_prepared(batch[0])]
        kind = batch[0].kind
        if kind == "array" or kind == "tensor":
            merged = Prepared(kind, np.concatenate([p.data for p in batch]), sum(p.rows for p in batch), [])
        elif kind == "frame":
            import pandas as pd

            merged = Prepared(kind, pd.concat([p.data for p in batch], ignore_index=True), 0, [])
        else:
            return [self.predict_prepared(p) for p in batch]
        outputs = self.predict_prepared(merged)
        total = sum(p.rows for p in batch)
        for _, arr in outputs:
            if arr.ndim == 0 or arr.shape[0] != total:
                raise BatchMismatch()
        result = []
        start = 0
        for p in batch:
            end = start + p.rows
            result.append([(name, arr[start:end]) for name, arr in outputs])
            start = end
        return result

    def can_batch(self, a: Prepared, b: Prepared) -> bool:
        if a.kind != b.kind or a.kind == "dict":
            return False
        if a.kind in ("array", "tensor"):
            return a.data.shape[1:] == b.data.shape[1:] and a.data.dtype == b.data.dtype
        return list(a.data.columns) == list(b.data.columns)

    def to_outputs(self, raw: Any) -> list[tuple[str, np.ndarray]]:
        """Whatever pyfunc returned, as named arrays, named and shaped as :attr:`output_metadata` says."""
        outputs = self._named_outputs(raw)
        served = self._served
        if len(served) != len(outputs):
            return outputs
        return [
            (name, arr if shape is None else arr.reshape((arr.shape[0], *shape)))
            for (name, shape), (_, arr) in zip(served, outputs, strict=True)
        ]

    def _named_outputs(self, raw: Any) -> list[tuple[str, np.ndarray]]:
        import pandas as pd

        if isinstance(raw, pd.DataFrame):
            return [(str(c), _array(raw[c].to_numpy())) for c in raw.columns]
        if isinstance(raw, pd.Series):
            return [(self._single_name(raw.name), _array(raw.to_numpy()))]
        if isinstance(raw, dict):
            return [(str(k), _array(np.asarray(v))) for k, v in raw.items()]
        return [(self._single_name(None), _array(np.asarray(raw)))]

    def _single_name(self, name: Any) -> str:
        if len(self.output_names) == 1:
            return self.output_names[0]
        return str(name) if isinstance(name, str) else DEFAULT_OUTPUT


def _array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 0:
        return a.reshape(1)
    if a.dtype.kind in "US":
        return a.astype(object)
    return a


def _output_metadata(sig: Any) -> list[dict[str, Any]]:
    if sig is None or sig.outputs is None:
        return [{"name": DEFAULT_OUTPUT, "datatype": "BYTES", "shape": [-1]}]
    out = []
    if sig.outputs.is_tensor_spec():
        for s in sig.outputs.inputs:
            out.append(
                {
                    "name": s.name or DEFAULT_OUTPUT,
                    "datatype": datatype_of(np.empty(0, s.type)),
                    "shape": list(s.shape),
                }
            )
    else:
        cols = sig.outputs.inputs
        for c in cols:
            datatype = _COLTYPES.get(_mlflow_type_name(c.type), ("BYTES",))[0]
            name = c.name if c.name is not None else DEFAULT_OUTPUT
            out.append({"name": name, "datatype": datatype, "shape": [-1]})
    return out


def _declared_outputs(sig: Any) -> list[tuple[str | None, tuple[int, ...] | None]]:
    """(name or None, tensor shape or None) per output the signature declares; [] when it declares none."""
    if sig is None or sig.outputs is None:
        return []
    if sig.outputs.is_tensor_spec():
        return [(s.name or None, tuple(s.shape)) for s in sig.outputs.inputs]
    return [(c.name if c.name is not None else None, None) for c in sig.outputs.inputs]


def example_tensors(example: Any, inputs: list[dict[str, Any]]) -> list[Tensor] | None:
    """An MLflow input example (DataFrame, array, dict of arrays) as the V2 tensors the metadata asks for;
    None when it has another form."""
    import pandas as pd

    names = {m["name"]: m for m in inputs}
    if isinstance(example, pd.DataFrame):
        if inputs and len(inputs) == 1 and len(example.columns) > 1:  # a tensor model given a frame
            return [_tensor(inputs[0]["name"], example.to_numpy(), inputs[0])]
        return [_tensor(str(c), example[c].to_numpy(), names.get(str(c))) for c in example.columns]
    if isinstance(example, np.ndarray):
        name = inputs[0]["name"] if len(inputs) == 1 else "input-0"
        if example.ndim == 1:
            example = example.reshape(-1, 1) if len(inputs) != 1 or len(inputs[0]["shape"]) != 1 else example
        return [_tensor(name, example, inputs[0] if len(inputs) == 1 else None)]
    if isinstance(example, dict):
        try:
            return [_tensor(str(k), np.asarray(v), names.get(str(k))) for k, v in example.items()]
        except (TypeError, ValueError):
            return None
    return None


def synthetic_tensors(inputs: list[dict[str, Any]], rows: int = PROBE_ROWS) -> list[Tensor]:
    """Zeros (empty strings for BYTES) shaped as ``inputs`` (V2 metadata) say, ``-1`` taken as ``rows``."""
    out = []
    for m in inputs:
        shape = tuple(rows if d == -1 else d for d in m["shape"])
        if m["datatype"] == "BYTES":
            arr = np.full(shape, "", dtype=object)
        else:
            from wolt_jupyter.serving.tensors import DTYPES

            arr = np.zeros(shape, dtype=DTYPES[m["datatype"]])
        out.append(Tensor(m["name"], m["datatype"], shape, arr))
    return out


def _tensor(name: str, arr: np.ndarray, meta: dict[str, Any] | None) -> Tensor:
    """One tensor as a client would send it: column inputs as [N,1], strings as BYTES."""
    if arr.dtype.kind in "OUSM":
        arr = arr.astype(str).astype(object)
    if meta is not None and len(meta["shape"]) == 2 and meta["shape"][1] == 1 and arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    return Tensor(name, datatype_of(arr), tuple(arr.shape), arr)


def _name_version(uri: str) -> tuple[str, str]:
    """``models:/NAME/VERSION`` -> (NAME, VERSION); anything else -> (uri, "")."""
    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return name, alias
        if "/" in rest:
            name, version = rest.rsplit("/", 1)
            return name, version
        return rest, ""
    return uri, ""


def load(variant: str, uri: str, cache_dir: Path | None = None) -> ModelAdapter:
    """Load one variant's model with MLflow (tracking/registry URI from the environment).

    With ``cache_dir``, a pinned ``models:/NAME/VERSION`` is downloaded there once and loaded from there ever
    after: a version's artifacts never change, and a restart then touches neither the registry nor the
    artifact store (which is what made a restart after a crash take seconds)."""
    # sklearn warns on every array predict for a model fitted on a DataFrame: silence it once, process-wide.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    t0 = time.perf_counter()
    where = str(_cached(uri, cache_dir)) if cache_dir else uri
    direct = _load_direct(where)
    if direct is not None:
        adapter = ModelAdapter(variant, uri, direct, time.perf_counter() - t0)
        if adapter._fast is not None:  # every request takes the array path: the same as MLflow's model
            return adapter
        log.info("variant %s: %s needs MLflow's loader (its array predict differs)", variant, uri)
    import mlflow.pyfunc

    # suppress_warnings skips MLflow's pip-requirements comparison: it only warns, and costs ~1 s per load
    model = mlflow.pyfunc.load_model(where, suppress_warnings=True)
    return ModelAdapter(variant, uri, model, time.perf_counter() - t0)


def _load_direct(where: str) -> Any:
    """A scikit-learn model loaded without importing MLflow (:mod:`wolt_jupyter.serving.flavors`), or None."""
    if "://" in where or where.startswith("models:/") or not os.path.isdir(where):
        return None
    from wolt_jupyter.serving.flavors import load_direct

    return load_direct(Path(where))


def model_cache_dir(state_dir: Path, deployment: str) -> Path:
    """Where a deployment's runtime keeps (and first looks for) its pinned models' files."""
    from wolt_jupyter.revisions import deployment_dir

    return deployment_dir(Path(state_dir), deployment) / "models"


def artifact_location(uri: str) -> str:
    """Where the registry keeps a pinned ``models:/NAME/VERSION``'s files (a local path for ``file://``,
    which MLflow's ``Model.load`` does not take), asked once per process; ``uri`` itself for other URIs or
    when the registry cannot say (whoever reads it then reports why)."""
    from urllib.parse import unquote, urlparse

    from wolt_jupyter.registry import download_uri

    try:
        where = download_uri(uri)
    except Exception:
        return uri
    parsed = urlparse(where)
    return unquote(parsed.path) if parsed.scheme == "file" and parsed.netloc in ("", "localhost") else where


def prefetch(uri: str, cache_dir: Path, source: str | None = None) -> None:
    """Download a pinned model into ``cache_dir`` now (what :func:`load` would do on first use), from
    ``source`` (where the registry keeps the version's files) when the caller knows it already."""
    _cached(uri, cache_dir, source)


def preload_modules(uri: str, cache_dir: Path) -> tuple[str, ...]:
    """What :func:`load` imports for the model of ``uri`` when it is already on disk (in ``cache_dir`` or a
    local path): scikit-learn (and the estimators' modules) for a model loaded directly, MLflow's pyfunc
    loader for any other; nothing when it is not on disk yet (nothing is downloaded to find out)."""
    from wolt_jupyter.serving.flavors import direct_loadable, estimator_modules

    local = _cache_path(uri, cache_dir)
    if local is None:
        local = Path(uri) if "://" not in uri and not uri.startswith("models:/") else None
    if local is None or not (local / "MLmodel").is_file():
        return ()
    if not direct_loadable(local):
        return ("mlflow.pyfunc",)
    return ("sklearn.base", *estimator_modules(local))


def _cache_path(uri: str, cache_dir: Path) -> Path | None:
    """Where a pinned ``models:/NAME/VERSION`` is kept in ``cache_dir``; None for other URIs."""
    import re

    name, version = _name_version(uri)
    if not uri.startswith("models:/") or not version.isdigit():
        return None
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-v{version}"


def _cached(uri: str, cache_dir: Path, source: str | None = None) -> Path | str:
    """The local copy of a pinned version's artifacts (downloaded on first use); other URIs as they are."""
    local = _cache_path(uri, cache_dir)
    if local is None:
        return uri
    if (local / "MLmodel").is_file():
        return local
    import shutil
    import tempfile

    import mlflow.artifacts

    private_dir(Path(cache_dir))
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".download-"))
    try:
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source or uri, dst_path=str(tmp)))
        if not (got / "MLmodel").is_file():  # not a model directory: load it the ordinary way
            return uri
        private_tree(got)  # copied with the store's modes (0644): the cache is the user's alone
        with contextlib.suppress(OSError):  # OSError: another process cached it meanwhile
            os.replace(got, local)
        return local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
