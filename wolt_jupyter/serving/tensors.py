"""V2 tensors: decode an inference request (JSON, optionally with the binary data extension) and encode a
response.

Everything a client can get wrong raises :class:`ProtocolError` with a 400 and a message that says what was
expected, so malformed input never becomes a 500. Arrays are numpy from the start: the model adapter then
hands them to the model without a per-row DataFrame where the signature allows.
"""

from __future__ import annotations

import json
import os
import random
import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from wolt_jupyter.serving import ProtocolError
from wolt_jupyter.serving.fastjson import decode as fast_decode
from wolt_jupyter.untrusted import shown_value

try:  # orjson (optional) decodes and encodes V2 JSON several times faster than the standard library
    if os.environ.get("WOLT_SERVING_ORJSON", "1") == "0":  # to test the fallback
        raise ImportError("orjson disabled by WOLT_SERVING_ORJSON=0")
    import orjson

    def json_loads(data: bytes) -> Any:
        return orjson.loads(data)

    def json_dumps(doc: Any) -> bytes:
        return orjson.dumps(doc)

except ImportError:  # pragma: no cover - exercised where orjson is not installed

    def json_loads(data: bytes) -> Any:
        return json.loads(data)

    def json_dumps(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode()


# V2 datatype -> numpy dtype (little-endian for the binary extension)
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
DATATYPE_NAMES = ", ".join(DTYPES)
# numpy kinds a JSON `data` list may hold for each datatype family (checked before casting)
_ALLOWED_KINDS = {"BOOL": "b", "INT": "iu", "UINT": "iu", "FP": "iuf"}


_ids = random.Random()  # seeded from os.urandom; a forked child re-seeds, so no two processes share ids
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """A random version-4 UUID string for a request that brought no id.

    Not ``uuid.uuid4()``: its ``os.urandom`` is a syscall that releases the GIL, and on a busy runtime every
    release lets a background thread hold the interpreter for a switch interval. Request ids name requests
    (feedback joins on them; writing feedback needs a credential): they need to be unique, not secret."""
    n = _ids.getrandbits(128)
    n = (n & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _family(datatype: str) -> str:
    for prefix in ("UINT", "INT", "FP", "BOOL"):
        if datatype.startswith(prefix):
            return prefix
    return "BYTES"


def datatype_of(arr: np.ndarray) -> str:
    """The V2 datatype for a numpy array (strings and objects are BYTES)."""
    kind = arr.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iuf":
        name = {"i": "INT", "u": "UINT", "f": "FP"}[kind]
        return f"{name}{arr.dtype.itemsize * 8}"
    return "BYTES"


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str
    inputs: list[Tensor]
    parameters: dict[str, Any]
    # names of outputs the client asked for (None = all) and which of them go binary
    output_names: list[str] | None
    binary_outputs: set[str]
    binary_all: bool


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(400, msg)


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad(
            f"input {shown_value(name)}: 'shape' must be a list of non-negative integers, got {shown_value(shape)}"
        )
    return tuple(shape)


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    want = prod(shape)
    if isinstance(data, np.ndarray):  # the fast decoder's numbers: checked for kind and nesting already
        arr = checked_cast(name, datatype, data)
        if arr.size != want:
            raise _bad(
                f"input {shown_value(name)}: shape {shown_value(list(shape))} needs {want} elements but 'data' has {arr.size}"
            )
        return arr.reshape(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        try:
            arr = np.array(data, dtype=object)
        except ValueError:
            raise _bad(
                f"input {shown_value(name)}: 'data' is ragged; expected {want} elements for shape {shown_value(list(shape))}"
            ) from None
        flat = arr.reshape(-1)
        for item in flat:
            if not isinstance(item, str):
                raise _bad(
                    f"input {shown_value(name)}: BYTES elements must be strings, got {type(item).__name__} {shown_value(item)}"
                )
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError):
            raise _bad(
                f"input {shown_value(name)}: 'data' is ragged; expected {want} elements for shape {shown_value(list(shape))}"
            ) from None
        kinds = _ALLOWED_KINDS[_family(datatype)]
        if arr.size and arr.dtype.kind not in kinds:
            what = {
                "U": "strings",
                "O": "nulls, objects or out-of-range integers",
                "b": "booleans",
                "f": "floats",
            }
            raise _bad(
                f"input {shown_value(name)}: {datatype} tensor holds {what.get(arr.dtype.kind, arr.dtype.name)}; "
                f"expected {'true/false' if datatype == 'BOOL' else 'numbers'}"
            )
        arr = checked_cast(name, datatype, arr)
    if arr.size != want:
        raise _bad(
            f"input {shown_value(name)}: shape {shown_value(list(shape))} needs {want} elements but 'data' has {arr.size} "
            f"(data shape {list(arr.shape)})"
        )
    return arr.reshape(shape)


def checked_cast(name: str, datatype: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` (numbers as decoded) as ``datatype``; 400 naming the input when a value does not fit it:
    an integer out of range, or a finite number that would become infinite (FP16 ``70000``, FP32 ``1e300``)."""
    dtype = DTYPES[datatype]
    if (
        arr.dtype == dtype
    ):  # e.g. JSON numbers decoded as float64 for FP64 (the common case): nothing to check
        return arr
    if arr.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise _bad(
                f"input {shown_value(name)}: values out of range for {datatype} ({info.min}..{info.max})"
            )
    if arr.size and dtype.kind == "f" and arr.dtype.kind in "iuf":
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(dtype, copy=False)
        overflow = np.isfinite(arr) & ~np.isfinite(cast) if arr.dtype.kind == "f" else ~np.isfinite(cast)
        if overflow.any():
            limit = float(np.finfo(dtype).max)
            raise _bad(
                f"input {shown_value(name)}: values out of range for {datatype} (magnitude above {limit:.4g})"
            )
        return cast
    return arr.astype(dtype, copy=False)


def from_binary(name: str, datatype: str, shape: tuple[int, ...], chunk: bytes) -> np.ndarray:
    want = prod(shape)
    if datatype == "BYTES":
        items: list[Any] = []
        pos, end = 0, len(chunk)
        while pos < end:
            if pos + 4 > end:
                raise _bad(f"input {shown_value(name)}: truncated BYTES element length in binary data")
            (n,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + n > end:
                raise _bad(f"input {shown_value(name)}: BYTES element of {n} bytes runs past the binary data")
            raw = chunk[pos : pos + n]
            pos += n
            try:
                items.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                items.append(raw)
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
    else:
        dtype = DTYPES[datatype]
        if len(chunk) % dtype.itemsize:
            raise _bad(
                f"input {shown_value(name)}: {len(chunk)} binary bytes is not a whole number of {datatype} elements"
            )
        arr = np.frombuffer(chunk, dtype=dtype)
    if arr.size != want:
        raise _bad(
            f"input {shown_value(name)}: shape {shown_value(list(shape))} needs {want} elements but binary data has {arr.size}"
        )
    return arr.reshape(shape)


def parse_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode a V2 inference request body; ``header_length`` is the ``Inference-Header-Content-Length``."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise _bad(
                f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes"
            )
        json_part, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        json_part, binary = body, memoryview(b"")
    # numbers straight into arrays when the fast decoder vouches for the body; else the general path below
    doc = fast_decode(json_part) if header_length is None else None
    try:
        if doc is None:
            doc = json_loads(json_part)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(
            f"request body is not valid JSON ({exc}); expected a V2 inference request object"
        ) from None
    if not isinstance(doc, dict):
        raise _bad(f"request body must be a JSON object with 'inputs', got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("request needs 'inputs': a non-empty list of {name, shape, datatype, data} tensors")
    req_id = doc.get("id")
    if req_id is None:
        req_id = new_request_id()
    elif not isinstance(req_id, str):
        raise _bad(f"'id' must be a string, got {type(req_id).__name__}")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("'parameters' must be a JSON object")
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise _bad(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"inputs[{i}] needs a non-empty string 'name'")
        if name in seen:
            raise _bad(f"input {shown_value(name)} is given twice")
        seen.add(name)
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DTYPES:
            raise _bad(
                f"input {shown_value(name)}: datatype {shown_value(datatype)} is not one of {DATATYPE_NAMES}"
            )
        shape = check_shape(name, item.get("shape"))
        tparams = item.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise _bad(f"input {shown_value(name)}: 'parameters' must be a JSON object")
        size = tparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _bad(f"input {shown_value(name)}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise _bad(
                    f"input {shown_value(name)}: binary_data_size {size} runs past the {len(binary)} bytes after the JSON "
                    "header (check Inference-Header-Content-Length)"
                )
            arr = from_binary(name, datatype, shape, bytes(binary[offset : offset + size]))
            offset += size
        elif "data" in item:
            arr = _from_json(name, datatype, shape, item["data"])
        else:
            raise _bad(f"input {shown_value(name)} has neither 'data' nor parameters.binary_data_size")
        inputs.append(Tensor(name, datatype, shape, arr, tparams))
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input")
    output_names: list[str] | None = None
    binary_outputs: set[str] = set()
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise _bad("'outputs' must be a list of {name, parameters} objects")
        output_names = []
        for o in raw_outputs:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise _bad("each requested output needs a string 'name'")
            output_names.append(o["name"])
            op = o.get("parameters") or {}
            if isinstance(op, dict) and op.get("binary_data"):
                binary_outputs.add(o["name"])
    return InferRequest(
        id=req_id,
        inputs=inputs,
        parameters=params,
        output_names=output_names or None,
        binary_outputs=binary_outputs,
        binary_all=bool(params.get("binary_data_output")),
    )


def _to_json_list(arr: np.ndarray) -> list[Any]:
    flat = arr.reshape(-1)
    if flat.dtype.kind in "OSU":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
    return flat.tolist()


def to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for x in arr.reshape(-1).tolist():
            raw = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=DTYPES[datatype]).tobytes()


def encode_response(
    *,
    model_name: str,
    model_version: str,
    req_id: str,
    outputs: list[tuple[str, np.ndarray]],
    parameters: dict[str, Any],
    binary_outputs: set[str] | None = None,
    binary_all: bool = False,
) -> tuple[bytes, int | None]:
    """Encode a V2 response; returns ``(body, json_header_length)`` (the length only when binary parts follow)."""
    out_docs = []
    chunks: list[bytes] = []
    for name, arr in outputs:
        datatype = datatype_of(arr)
        doc: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if binary_all or (binary_outputs and name in binary_outputs):
            raw = to_binary(arr, datatype)
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = _to_json_list(arr)
        out_docs.append(doc)
    header = json_dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": req_id,
            "parameters": parameters,
            "outputs": out_docs,
        }
    )
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
