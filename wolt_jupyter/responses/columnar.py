"""The compact stored form: a batch of logged rows as one Parquet blob, one column a feature.

Why: the log used to keep each payload as JSON text in its row (~600 bytes for 20 numbers). Here a batch of
records is spread the way the reader shows it (one row per input row of a request, ``input.<name>`` and
``output.<name>`` columns) and written as Parquet with zstd: numbers are stored as typed columns, repeated
fields (variant, model version, status) as dictionaries, and reading back is ``read_table`` + ``to_pandas``
with no per-row Python. A column whose values are not scalars (a list of another length, a dict) is kept as
JSON text and marked as such, so nothing a client sends is refused.

Spreading rule (the one the reader always had): a request carrying ``n`` rows gives ``n`` stored rows; an
input or output list of length ``n`` is spread over them, any other value is repeated as is. ``_row`` (the
position inside the request) and ``_rows`` (``n``) are kept so ground truth can be spread the same way and
``limit`` counts logged requests, not rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

# per logged record, repeated over its spread rows; "deployment" lives in the chunk's index row
RECORD_COLUMNS = (
    "id",
    "time",
    "variant",
    "shadow",
    "model_name",
    "model_version",
    "revision",
    "latency_ms",
    "status",
    "error",
)
ROW_COLUMNS = ("_row", "_rows")
JSON_MARK = b"wolt.json"  # field metadata: the column holds JSON text, decoded on read
# field metadata: a list column of one width stored as fixed-size binary ("<numpy dtype>:<width>"), which
# Parquet encodes without per-value repetition levels: ~half the CPU of the list for a 20-number feature vector
VECTOR_MARK = b"wolt.vector"


def payload_columns(payload: Any, prefix: str) -> dict[str, Any]:
    """``{"x": [..]}`` -> ``{"input.x": [..]}``; a bare (unnamed) payload keeps one column named ``prefix``.
    Numeric numpy arrays stay arrays (the spread takes them whole); other numpy values become Python ones."""
    if isinstance(payload, str):  # a row from an older spool file: JSON text
        payload = json.loads(payload)
    if isinstance(payload, dict):
        return {
            f"{prefix}.{k}": v if type(v) is list or _is_numeric_array(v) else _plain(v)
            for k, v in payload.items()
        }
    if payload is None:
        return {}
    return {prefix: payload if _is_numeric_array(payload) else _plain(payload)}


def _is_numeric_array(value: Any) -> bool:
    """A numpy array of numbers or booleans with at least one dimension (what the runtime logs for large
    tensors); 64-bit unsigned integers excepted (they may not fit the signed column)."""
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return (
        kind is not None and kind in "biuf" and getattr(value, "ndim", 0) >= 1
        and not (kind == "u" and value.dtype.itemsize >= 8)
    )  # fmt: skip


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as Python values (what JSON would have made of them)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (str, bytes)):
        return tolist()
    return value


def _length(value: Any) -> int:
    """How many rows a payload value spreads over (0: not a sequence, repeated on every row)."""
    if type(value) is list:
        return len(value)
    shape = getattr(value, "shape", None)
    return shape[0] if shape else 0


def spread(rows: Sequence[dict[str, Any]], shared: bool = False) -> pa.Table:
    """Rows (the writer's dicts: record fields, ``inputs``/``outputs`` payloads) as one spread Arrow table.

    ``shared`` (for :func:`encode` only): what repeats is stored once and referenced (dictionary columns):
    a record's text fields over its rows, and a payload array that several records hold (the live and the
    shadow records of one request share their inputs: half the bytes to copy and compress).
    :func:`decode` gives plain columns back."""
    table = _spread_single(rows)
    return table if table is not None else _spread_any(rows, shared)


def _spread_single(rows: Sequence[dict[str, Any]]) -> pa.Table | None:
    """The common case in C-speed comprehensions: every record carries one row (each payload value a
    one-element list) under the same names. None when that is not so (the general path takes over)."""
    if not rows:
        return None
    ins: list[Any] = [r.get("inputs") for r in rows]  # dicts, checked just below
    outs: list[Any] = [r.get("outputs") for r in rows]
    if set(map(type, ins)) != {dict} or set(map(type, outs)) != {dict}:
        return None
    in_keys, out_keys = tuple(ins[0]), tuple(outs[0])
    if any(tuple(p) != in_keys for p in ins) or any(tuple(p) != out_keys for p in outs):
        return None
    payload: dict[str, list[Any]] = {}
    for prefix, payloads, keys in (("input", ins, in_keys), ("output", outs, out_keys)):
        for k in keys:
            values = [p[k] for p in payloads]
            if set(map(type, values)) != {list} or set(map(len, values)) != {1}:  # C loops, no genexpr
                return None
            payload[f"{prefix}.{k}"] = [v[0] for v in values]
    base = {c: [r.get(c) for r in rows] for c in RECORD_COLUMNS}
    base["_row"] = [0] * len(rows)
    base["_rows"] = [1] * len(rows)
    return _table(base, payload)


def _spread_any(rows: Sequence[dict[str, Any]], shared: bool = False) -> pa.Table:
    """Any mix of request sizes and payload shapes. Record fields are taken once per record and repeated by
    Arrow; a column every record gives as a numeric array of its row count is concatenated by numpy (a
    100-row request is one copy, not 2,000 Python floats); anything else goes value by value."""
    import numpy as np
    import pyarrow as pa

    per_record = [
        {**payload_columns(r.get("inputs"), "input"), **payload_columns(r.get("outputs"), "output")}
        for r in rows
    ]
    counts = [max(map(_length, cols.values()), default=0) or 1 for cols in per_record]
    n_counts = np.asarray(counts, dtype=np.int64)
    total = int(n_counts.sum())
    spread_rows = total != len(rows)
    take = pa.array(np.repeat(np.arange(len(rows), dtype=np.int32), n_counts)) if spread_rows else None
    types = _base_types()
    base: dict[str, Any] = {}
    for c in RECORD_COLUMNS:
        array = pa.array([r.get(c) for r in rows], type=types[c])
        if take is None:
            base[c] = array
        elif shared and pa.types.is_string(array.type) and not array.null_count:
            # a reference per row, not a copy (Parquet takes no null inside a dictionary)
            base[c] = pa.DictionaryArray.from_arrays(take, array)
        else:
            base[c] = array.take(take)
    n32 = n_counts.astype(np.int32)
    within = np.arange(total, dtype=np.int32) - np.repeat(np.cumsum(n32, dtype=np.int32) - n32, n32)
    base["_row"] = pa.array(within)
    base["_rows"] = pa.array(np.repeat(n32, n32))
    names: dict[str, None] = {}
    for cols in per_record:
        names.update(dict.fromkeys(cols))
    payload: dict[str, Any] = {}
    for name in names:
        values = [cols.get(name) for cols in per_record]
        column = _numeric_column(values, counts, within if shared else None)
        payload[name] = column if column is not None else _python_column(values, counts)
    return _table(base, payload)


def _numeric_column(values: list[Any], counts: list[int], within: Any = None) -> Any:
    """The column as one Arrow array when every record gives a numeric array of its own row count with the
    same kind and per-row shape (a scalar or a vector per row); None otherwise. With ``within`` (each
    row's position in its record), an array several records hold is stored once: a dictionary column."""
    import numpy as np
    import pyarrow as pa

    first = values[0]
    if not _is_numeric_array(first) or first.ndim > 2 or 0 in first.shape[1:]:
        return None
    kind, inner = first.dtype.kind, first.shape[1:]
    for value, n in zip(values, counts, strict=True):
        if not _is_numeric_array(value) or value.shape[0] != n or value.shape[1:] != inner:
            return None
        if value.dtype.kind != kind and {value.dtype.kind, kind} - {"i", "u"}:
            return None
    dtype = np.bool_ if kind == "b" else np.float64 if kind == "f" else np.int64
    indices = None
    if within is not None:
        first_row: dict[int, int] = {}  # id(array) -> its first row in the dictionary
        unique, starts, size = [], [], 0
        for value in values:
            start = first_row.get(id(value))
            if start is None:
                start = first_row[id(value)] = size
                unique.append(value)
                size += value.shape[0]
            starts.append(start)
        if len(unique) < len(values):
            indices = np.repeat(np.asarray(starts, dtype=np.int32), counts) + within
            values = unique
    flat = np.concatenate(values).astype(dtype, copy=False)
    if not inner:
        array = pa.array(flat)
    else:
        width = inner[0]
        offsets = pa.array(np.arange(0, flat.shape[0] * width + 1, width, dtype=np.int32))
        array = pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)))
    return array if indices is None else pa.DictionaryArray.from_arrays(pa.array(indices), array)


def _python_column(values: list[Any], counts: list[int]) -> list[Any]:
    """The spreading rule value by value: a list (or array) of the record's row count is spread over its
    rows, any other value repeated on each; a record without the column gives nulls."""
    out: list[Any] = []
    for value, n in zip(values, counts, strict=True):
        if _is_numeric_array(value):
            value = value.tolist()
        if isinstance(value, list) and len(value) == n:
            out.extend(value)
        else:
            out.extend([value] * n)
    return out


_TYPES: dict[str, Any] = {}


def _base_types() -> dict[str, Any]:
    import pyarrow as pa

    if not _TYPES:
        _TYPES.update(
            id=pa.string(), time=pa.float64(), variant=pa.string(), shadow=pa.bool_(), model_name=pa.string(),
            model_version=pa.string(), revision=pa.int64(), latency_ms=pa.float64(), status=pa.int32(),
            error=pa.string(), _row=pa.int32(), _rows=pa.int32(),
        )  # fmt: skip
    return _TYPES


def _table(base: dict[str, Any], payload: dict[str, Any]) -> pa.Table:
    """Record columns (lists, numpy arrays or Arrow arrays), then inputs, then outputs; a payload column
    already built as Arrow is taken as it is."""
    import pyarrow as pa

    types = _base_types()
    ins = [c for c in payload if c.startswith("input")]
    outs = [c for c in payload if not c.startswith("input")]
    fields, arrays = [], []
    for c, values in base.items():
        array = values if isinstance(values, pa.Array) else pa.array(values, type=types[c])
        fields.append(pa.field(c, array.type))
        arrays.append(array)
    for c in (*ins, *outs):
        values = payload[c]
        array, is_json = (values, False) if isinstance(values, pa.Array) else _column(values)
        fields.append(pa.field(c, array.type, metadata={JSON_MARK: b"1"} if is_json else None))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _column(values: list[Any]) -> tuple[pa.Array, bool]:
    """A typed Arrow array when every value is a scalar of one kind or a list of numbers (a feature vector
    per row: a typed list column, not JSON text per row, which cost most of a 100-row request's logging),
    else JSON text (never refused)."""
    import pyarrow as pa

    try:
        array = pa.array(values, from_pandas=False)
        kind = array.type
        if is_number_list(kind):
            return array, False
        scalar = not (
            pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or pa.types.is_fixed_size_binary(kind)
        )  # fmt: skip
        if scalar and (not pa.types.is_null(kind) or all(v is None for v in values)):
            return array, False
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    from wolt_jupyter.responses._json import to_json

    return pa.array([None if v is None else to_json(v) for v in values], type=pa.string()), True


def is_number_list(kind: Any) -> bool:
    """A list of numbers (or booleans): stored typed, read back as Python lists."""
    import pyarrow as pa

    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return False
    inner = kind.value_type
    return pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_boolean(inner)


IPC_MAGIC = b"ARROW1"  # an Arrow IPC file; Parquet starts with b"PAR1"


def encode(table: pa.Table, quick: bool = False) -> bytes:
    """A chunk's stored bytes.

    ``quick`` (the writer, on the serving process's CPU): an Arrow IPC file with zstd at level 1, a third
    of Parquet's CPU and a seventh of its decode time for a few more bytes (measured on 100-row requests of
    20 float64 features, live + shadow: ~34 vs ~70 µs a request, 81 vs 78 bytes/row; lz4 took as long for
    92, and 151 against 108 bytes/row for one-row requests). Otherwise (compaction and retention, in the
    background): Parquet with zstd and dictionaries for everything but floats and vectors. Floats stay
    plain: zstd then finds the live and shadow copies of one request's inputs a few rows apart (99 vs 167
    bytes/row with byte-stream-split, which hides the repeats). A list column of numbers of one width goes
    to Parquet as fixed-size binary, half the CPU of a list (:func:`decode` makes it a list again)."""
    import pyarrow as pa

    if quick:
        import pyarrow.ipc as ipc

        sink = pa.BufferOutputStream()
        with ipc.new_file(
            sink, table.schema, options=ipc.IpcWriteOptions(compression=pa.Codec("zstd", 1))
        ) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()
    import pyarrow.parquet as pq

    table = _vectors_as_binary(table)
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        use_dictionary=[
            f.name
            for f in table.schema
            if not (pa.types.is_floating(f.type) or pa.types.is_fixed_size_binary(f.type))
        ],
        write_statistics=["time", "variant", "revision", "shadow"],
        row_group_size=1 << 20,
    )
    return buf.getvalue()


def _vectors_as_binary(table: pa.Table) -> pa.Table:
    """Each list-of-numbers column whose rows all hold the same number of values, none null, as one
    fixed-size binary value per row (the numbers' bytes), marked with :data:`VECTOR_MARK`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        kind = field.type
        if not is_number_list(kind) or pa.types.is_boolean(kind.value_type) or table.num_rows == 0:
            continue
        column = table.column(i).combine_chunks()
        if column.null_count:
            continue
        lengths = pc.min_max(pc.list_value_length(column)).as_py()
        width = lengths["min"]
        if not width or width != lengths["max"]:
            continue
        values = pc.list_flatten(column)
        if values.null_count:
            continue
        flat = np.ascontiguousarray(values.to_numpy(zero_copy_only=False))
        binary = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width * flat.dtype.itemsize), len(column), [None, pa.py_buffer(flat)]
        )
        mark = f"{flat.dtype.str}:{width}".encode()
        table = table.set_column(i, pa.field(field.name, binary.type, metadata={VECTOR_MARK: mark}), binary)
    return table


def _binary_as_vectors(table: pa.Table) -> pa.Table:
    """What :func:`_vectors_as_binary` stored, as list columns again (zero-copy views of the bytes)."""
    import numpy as np
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        mark = field.metadata.get(VECTOR_MARK) if field.metadata else None
        if mark is None:
            continue
        dtype_str, width_text = mark.decode().rsplit(":", 1)
        dtype, width = np.dtype(dtype_str), int(width_text)
        chunks = []
        for chunk in table.column(i).chunks:
            n = len(chunk)
            flat = np.frombuffer(
                chunk.buffers()[1], dtype=dtype, count=n * width, offset=chunk.offset * width * dtype.itemsize
            )
            offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)[: n + 1])
            chunks.append(pa.ListArray.from_arrays(offsets, pa.array(flat)))
        kind = pa.list_(pa.from_numpy_dtype(dtype))
        table = table.set_column(i, pa.field(field.name, kind), pa.chunked_array(chunks, type=kind))
    return table


def decode(data: bytes, columns: Iterable[str] | None = None) -> pa.Table:
    """A chunk (Parquet or Arrow IPC) back as an Arrow table, reading only ``columns`` (those it has;
    ``"output*"`` names every column starting with ``output``) when given."""
    import pyarrow as pa

    def wanted(names: list[str]) -> list[str] | None:
        if columns is None:
            return None
        asked = list(columns)
        prefixes = tuple(c[:-1] for c in asked if c.endswith("*"))
        return [n for n in names if n in asked or (prefixes and n.startswith(prefixes))]

    if data[:6] == IPC_MAGIC:
        import pyarrow.ipc as ipc

        reader = ipc.open_file(pa.BufferReader(data))
        keep = wanted(reader.schema.names)
        if keep is not None:  # the selection is an option of the reader: a second one, on the same bytes
            options = ipc.IpcReadOptions(included_fields=[reader.schema.names.index(n) for n in keep])
            reader = ipc.open_file(pa.BufferReader(data), options=options)
        return _plain_columns(reader.read_all())
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data))
    return _plain_columns(_binary_as_vectors(reader.read(columns=wanted(reader.schema_arrow.names))))


def _plain_columns(table: pa.Table) -> pa.Table:
    """Dictionary-encoded record fields (how :func:`spread` repeats text over a request's rows) as plain
    columns: readers see one type whatever the chunk."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            column = table.column(i)
            plain = pa.chunked_array(
                [c.dictionary_decode() for c in column.chunks], type=field.type.value_type
            )
            table = table.set_column(
                i, pa.field(field.name, field.type.value_type, metadata=field.metadata), plain
            )
    return table


def concat(parts: list[Any], json_cols: set[str]) -> Any:
    """One table from chunks whose schemas may differ (a column missing, int in one and float in another);
    a column that is JSON text in any chunk becomes JSON text in all."""
    import pyarrow as pa

    from wolt_jupyter.responses._json import to_json

    def as_json(table: Any) -> Any:
        for name in json_cols & set(table.column_names):
            field = table.schema.field(name)
            if field.metadata and JSON_MARK in field.metadata:
                continue
            values = [None if v is None else to_json(v) for v in table[name].to_pylist()]
            i = table.column_names.index(name)
            table = table.set_column(i, pa.field(name, pa.string()), pa.array(values, type=pa.string()))
        return table.replace_schema_metadata(None)

    parts = [as_json(p) for p in parts] if json_cols else parts
    if len(parts) == 1:
        return parts[0]
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. text in one chunk, numbers in another
        names = {n for p in parts for n in p.column_names}
        types = {n: {p.schema.field(n).type for p in parts if n in p.column_names} for n in names}
        json_cols |= {
            n
            for n, ts in types.items()
            if len(ts) > 1 and not all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in ts)
        }
        return pa.concat_tables([as_json(p) for p in parts], promote_options="permissive")


def decode_all(blobs: Sequence[bytes], columns: Iterable[str] | None = None) -> list[pa.Table]:
    """Several chunks decoded by :func:`decode`, in order, on a thread per core (pyarrow releases the GIL
    while it decompresses): with many chunks every core stays busy, where one chunk's columns alone are
    too few to share out."""
    import pyarrow as pa

    wanted = None if columns is None else list(columns)
    workers = min(len(blobs), pa.cpu_count())
    if workers < 2:
        return [decode(b, wanted) for b in blobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="wolt-decode") as pool:
        return list(pool.map(lambda b: decode(b, wanted), blobs))
