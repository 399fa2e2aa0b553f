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


def payload_columns(payload: Any, prefix: str) -> dict[str, Any]:
    """``{"x": [..]}`` -> ``{"input.x": [..]}``; a bare (unnamed) payload keeps one column named ``prefix``."""
    if isinstance(payload, str):  # a row from an older spool file: JSON text
        payload = json.loads(payload)
    if isinstance(payload, dict):
        # lists (what the runtime sends) as they are; numpy values converted
        return {f"{prefix}.{k}": v if type(v) is list else _plain(v) for k, v in payload.items()}
    if payload is None:
        return {}
    return {prefix: _plain(payload)}


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as Python values (what JSON would have made of them)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (str, bytes)):
        return tolist()
    return value


def spread(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (the writer's dicts: record fields, ``inputs``/``outputs`` payloads) as one spread Arrow table."""
    table = _spread_single(rows)
    return table if table is not None else _spread_any(rows)


def _spread_single(rows: Sequence[dict[str, Any]]) -> pa.Table | None:
    """The common case in C-speed comprehensions: every record carries one row (each payload value a
    one-element list) under the same names. None when that is not so (the general path takes over)."""
    if not rows:
        return None
    ins = [r.get("inputs") for r in rows]
    outs = [r.get("outputs") for r in rows]
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


def _spread_any(rows: Sequence[dict[str, Any]]) -> pa.Table:
    base: dict[str, list[Any]] = {c: [] for c in (*RECORD_COLUMNS, *ROW_COLUMNS)}
    payload: dict[str, list[Any]] = {}
    total = 0
    for r in rows:
        cols = {**payload_columns(r.get("inputs"), "input"), **payload_columns(r.get("outputs"), "output")}
        n = max((len(v) for v in cols.values() if isinstance(v, list)), default=0) or 1
        for c in RECORD_COLUMNS:
            value = r.get(c)
            base[c].extend([value] * n if n > 1 else [value])
        base["_row"].extend(range(n))
        base["_rows"].extend([n] * n)
        for name, value in cols.items():
            col = payload.get(name)
            if col is None:
                col = payload[name] = [None] * total
            if isinstance(value, list) and len(value) == n:
                col.extend(value)
            else:
                col.extend([value] * n)
        total += n
        for col in payload.values():
            if len(col) < total:
                col.extend([None] * (total - len(col)))
    return _table(base, payload)


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


def _table(base: dict[str, list[Any]], payload: dict[str, list[Any]]) -> pa.Table:
    import pyarrow as pa

    types = _base_types()
    ins = [c for c in payload if c.startswith("input")]
    outs = [c for c in payload if not c.startswith("input")]
    fields, arrays = [], []
    for c, values in base.items():
        fields.append(pa.field(c, types[c]))
        arrays.append(pa.array(values, type=types[c]))
    for c in (*ins, *outs):
        array, is_json = _column(payload[c])
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
    from wolt_jupyter.responses.store import to_json

    return pa.array([None if v is None else to_json(v) for v in values], type=pa.string()), True


def is_number_list(kind: Any) -> bool:
    """A list of numbers (or booleans): stored typed, read back as Python lists."""
    import pyarrow as pa

    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return False
    inner = kind.value_type
    return pa.types.is_integer(inner) or pa.types.is_floating(inner) or pa.types.is_boolean(inner)


def encode(table: pa.Table) -> bytes:
    """Parquet bytes: zstd, dictionaries for everything but floats. Floats stay plain: zstd then finds the
    live and shadow copies of one request's inputs a few rows apart (measured: 99 vs 167 bytes/row with
    byte-stream-split, which hides the repeats, for 20 random float64 features)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        use_dictionary=[f.name for f in table.schema if not pa.types.is_floating(f.type)],
        write_statistics=["time", "variant", "revision", "shadow"],
        row_group_size=1 << 20,
    )
    return buf.getvalue()


def decode(data: bytes, columns: Iterable[str] | None = None) -> pa.Table:
    """A chunk back as an Arrow table, reading only ``columns`` (those it has; ``"output*"`` names every column
    starting with ``output``) when given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data))
    if columns is not None:
        names = reader.schema_arrow.names
        wanted = list(columns)
        prefixes = tuple(c[:-1] for c in wanted if c.endswith("*"))
        columns = [n for n in names if n in wanted or (prefixes and n.startswith(prefixes))]
    return reader.read(columns=columns)


def concat(parts: list[Any], json_cols: set[str]) -> Any:
    """One table from chunks whose schemas may differ (a column missing, int in one and float in another);
    a column that is JSON text in any chunk becomes JSON text in all."""
    import pyarrow as pa

    from wolt_jupyter.responses.store import to_json

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
