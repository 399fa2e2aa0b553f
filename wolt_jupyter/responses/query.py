"""Reading the log back as a pandas DataFrame, with feedback joined by request id.

It only reads the store, so it works the same while the server runs, after it stopped, or on a copy of the
file. pandas is imported when the function is called, never at package import.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.responses.columnar import JSON_MARK, RECORD_COLUMNS, concat, is_number_list
from wolt_jupyter.units import duration_seconds

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# a stored record's fields, with the deployment (kept once per chunk) after its id and time
BASE_COLUMNS = (*RECORD_COLUMNS[:2], "deployment", *RECORD_COLUMNS[2:])
ACCEPTED_TIMES = (
    "a datetime (naive means local time), epoch seconds (float), a timedelta or a duration before now "
    'such as "15s", "30m", "1h", "2d", "1w" (units ms, s, m, h, d, w), or an ISO-8601 time "2026-11-29T08:00Z"'
)


def parse_time(value: Any, name: str = "since", now: float | None = None) -> float | None:
    """Epoch seconds for a ``since``/``until`` argument; a duration string means that long before ``now``."""
    if value is None:
        return None
    now = time.time() if now is None else now
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} is not a time; use {ACCEPTED_TIMES}")
    if isinstance(value, _dt.datetime):  # also pandas.Timestamp
        return value.timestamp()
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day).timestamp()
    if isinstance(value, _dt.timedelta):
        return now - value.total_seconds()
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        seconds = duration_seconds(value)
        if seconds is not None:
            return now - seconds
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return _dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    raise InvalidArgument(f"{name}={value!r} is not a time; use {ACCEPTED_TIMES}")


Revision = int | Sequence[int] | Literal["all"] | None


def read_frame(
    deployment: str,
    since: Any = None,
    variant: str | Sequence[str] | None = None,
    url: str | None = None,
    until: Any = None,
    limit: int | None = None,
    *,
    revision: Revision = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The response log of ``deployment`` as a DataFrame, oldest first, feedback joined as ``ground_truth``.

    One DataFrame row per logged request per variant and per input row: a request carrying several rows
    (``inputs={"x": [1, 2, 3]}``) becomes three DataFrame rows sharing ``id``; an input or output list with
    one value per row is spread over them, any other value (a scalar, a list of another length, a dict) is
    repeated as is. The same rule spreads a list ``ground_truth``. Inputs become ``input.<name>`` columns,
    outputs ``output.<name>``; ``revision`` is the deployment revision that served the row (None for rows
    logged before revisions were recorded) and ``model_version`` the registry version of the variant.

    Only what is asked is read: ``since`` (inclusive) and ``until`` (exclusive) take {ACCEPTED}; they,
    ``revision`` (a number, several, or ``None``/``"all"`` for every revision) and ``variant`` (a name or
    several) skip whole stored chunks by their index (the frame has the input/output columns of the chunks
    read). ``columns`` names the DataFrame columns wanted (e.g.
    ``["time", "input.x1", "output.y"]``): only those are decoded and returned. ``limit`` keeps the newest
    ``limit`` logged rows (before spreading). ``url`` defaults to the configured response store, else the
    deployment's SQLite file under the state dir. A store that does not exist yet gives an empty DataFrame.
    """
    import pandas as pd

    table, json_cols = read_table(
        deployment, since, variant, url, until, limit, revision=revision, columns=columns
    )
    return to_frame(table, json_cols, deployment, columns, pd)


def read_table(
    deployment: str,
    since: Any = None,
    variant: str | Sequence[str] | None = None,
    url: str | None = None,
    until: Any = None,
    limit: int | None = None,
    *,
    revision: Revision = None,
    columns: Sequence[str] | None = None,
) -> tuple[Any, set[str]]:
    """The log as one spread Arrow table (with feedback as ``ground_truth`` text) and the names of its JSON
    text columns; :func:`read_frame` and the Parquet export share it. None when nothing is stored."""
    from sqlalchemy import inspect

    from wolt_jupyter.responses.store import (
        CHUNKS_TABLE,
        make_engine,
        normalize_url,
        sqlite_path,
        store_url,
        tables,
        translate_errors,
    )

    now = time.time()
    lo, hi = parse_time(since, "since", now), parse_time(until, "until", now)
    variants = [variant] if isinstance(variant, str) else (list(variant) if variant is not None else None)
    revisions = revision_list(revision)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgument(f"limit must be a non-negative integer, not {limit!r}")
    if columns is not None:
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise InvalidArgument(f"columns must be a list of column names, not {columns!r}")
        columns = list(columns)
    if url is None:
        url = store_url(deployment)

    path = sqlite_path(normalize_url(url))
    if path is not None and not path.is_file():
        return None, set()  # never create a file just by looking
    log_t, fb_t = tables()
    engine = make_engine(url, create_dir=False)
    try:
        with translate_errors(url, "read"), engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            needed = None if columns is None else _needed(columns, variants, revisions)
            parts: list[Any] = []
            json_cols: set[str] = set()
            if log_t.name in present:
                legacy = _legacy(conn, deployment, lo, hi, variants, revisions)
                if legacy is not None:
                    parts.append(legacy)
            if CHUNKS_TABLE in present:
                parts.extend(_chunks(conn, deployment, lo, hi, variants, revisions, needed))
            for table in parts:
                json_cols |= {f.name for f in table.schema if f.metadata and JSON_MARK in f.metadata}
            if not parts:
                return None, set()
            # each chunk filtered on its own: a chunk wholly inside the window is kept as it is (no copy)
            table = concat([_filter(p, lo, hi, variants, revisions) for p in parts], json_cols)
            table = _sorted(table)
            if limit is not None:
                table = _newest(table, limit)
            if (columns is None or "ground_truth" in columns) and fb_t.name in present and table.num_rows:
                table = _with_feedback(conn, table)
    finally:
        engine.dispose()
    return table, json_cols


def export(deployment: str, path: str | Path, **filters: Any) -> dict[str, Any]:
    """Write the (filtered) log to a Parquet file for DuckDB, Spark or pandas elsewhere; what was written.

    The file holds the DataFrame's columns with their stored types; ``time`` is a timestamp (UTC,
    microseconds: what Spark, DuckDB and pandas all read as one), JSON-text columns stay text, marked in the
    field metadata (``wolt.json``). Takes :func:`read_frame`'s filters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(path).expanduser()
    if target.suffix.lower() != ".parquet":
        raise InvalidArgument(
            f"export path {str(path)!r} must end in .parquet (e.g. /tmp/{deployment}.parquet)"
        )
    if not target.parent.is_dir():
        raise InvalidArgument(
            f"cannot export to {str(target)!r}: the folder {str(target.parent)!r} does not exist"
        )
    table, _json = read_table(deployment, **filters)
    if table is None:
        table = pa.table({c: pa.array([], type=pa.string()) for c in BASE_COLUMNS})
    else:
        table = _public(table, deployment, filters.get("columns"))
    if "time" in table.column_names:
        table = table.set_column(table.column_names.index("time"), "time", _timestamps(table["time"]))
    pq.write_table(table, target, compression="zstd")
    return {
        "path": str(target),
        "rows": table.num_rows,
        "bytes": target.stat().st_size,
        "columns": table.num_columns,
    }


def _timestamps(seconds: Any) -> Any:
    """Epoch seconds (float, as stored) as a UTC timestamp column, rounded to the microsecond."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = pa.timestamp("us", tz="UTC")
    if pa.types.is_timestamp(seconds.type):
        return seconds.cast(kind)
    if not pa.types.is_floating(seconds.type) and not pa.types.is_integer(seconds.type):
        return pa.nulls(len(seconds), kind)  # the empty frame's placeholder column
    micros = pc.round(pc.multiply(seconds.cast(pa.float64()), 1e6))
    return micros.cast(pa.int64()).cast(kind)


_doc = read_frame.__doc__ or ""
read_frame.__doc__ = _doc.replace("{ACCEPTED}", ACCEPTED_TIMES)


def revision_list(revision: Revision) -> list[int] | None:
    """``revision`` as a list of numbers, or None for every revision (None or "all"); bad values are an
    :class:`InvalidArgument`. The one check of a revision choice (the analyses resolve their default first)."""
    import operator

    if revision is None or (isinstance(revision, str) and revision == "all"):
        return None
    values = [revision] if isinstance(revision, (int, str)) else revision  # "12" is not [1, 2]
    try:
        out = [operator.index(v) for v in values if not isinstance(v, (bool, str))]
    except TypeError:  # 2.5, None, an object
        out = []
    if isinstance(revision, bool) or not out or len(out) != len(list(values)):
        raise InvalidArgument(f'revision must be a revision number, several, or "all", not {revision!r}')
    return out


def _needed(columns: list[str], variants: Any, revisions: Any) -> list[str]:
    need = {c for c in columns if c not in ("deployment", "ground_truth")}
    need |= {"time", "_row", "_rows"}
    if variants is not None:
        need.add("variant")
    if revisions is not None:
        need.add("revision")
    if "ground_truth" in columns:
        need.add("id")
    return sorted(need)


def _chunks(
    conn: Any, deployment: str, lo: Any, hi: Any, variants: Any, revisions: Any, needed: Any
) -> list[Any]:
    """Decoded chunks overlapping the window and holding a wanted revision and variant, oldest first.

    The blobs are fetched in one query (PostgreSQL: in binary, not as hex text) and decoded on a few threads:
    pyarrow releases the GIL while it decompresses."""
    import json

    from sqlalchemy import or_, select

    from wolt_jupyter.responses.columnar import decode_all
    from wolt_jupyter.responses.store import chunks_table, fetch_blobs

    c = chunks_table()
    query = select(c.c.data).where(c.c.deployment == deployment)
    if lo is not None:
        query = query.where(c.c.t_max >= lo)
    if hi is not None:
        query = query.where(c.c.t_min < hi)
    if revisions is not None:
        query = query.where(or_(*[(c.c.rev_min <= r) & (c.c.rev_max >= r) for r in revisions]))
    if variants is not None:
        # the index keeps json.dumps(sorted names): a chunk holding a wanted variant holds its JSON string
        # (a false match only costs a decode: rows are filtered by value afterwards)
        query = query.where(or_(*[c.c.variants.contains(json.dumps(v), autoescape=True) for v in variants]))
    return decode_all(fetch_blobs(conn, query.order_by(c.c.t_min, c.c.chunk)), needed)


def _legacy(conn: Any, deployment: str, lo: Any, hi: Any, variants: Any, revisions: Any) -> Any:
    """Rows of the first format (one SQL row a record, JSON payloads), spread like a chunk."""
    from sqlalchemy import select

    from wolt_jupyter.responses._json import from_json
    from wolt_jupyter.responses.columnar import spread
    from wolt_jupyter.responses.store import tables

    if revisions is not None:
        return None  # written before revisions were recorded: never part of a revision
    t = tables()[0]
    query = select(t).where(t.c.deployment == deployment)
    if lo is not None:
        query = query.where(t.c.time >= lo)
    if hi is not None:
        query = query.where(t.c.time < hi)
    if variants is not None:
        query = query.where(t.c.variant.in_(variants))
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(t.c.time, t.c.seq))]
    if not rows:
        return None
    for r in rows:
        r["inputs"], r["outputs"] = from_json(r["inputs"]), from_json(r["outputs"])
    return spread(rows)


def _filter(table: Any, lo: Any, hi: Any, variants: Any, revisions: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = None

    def both(m: Any) -> None:
        nonlocal mask
        mask = m if mask is None else pc.and_(mask, m)

    if lo is not None:
        both(pc.greater_equal(table["time"], lo))
    if hi is not None:
        both(pc.less(table["time"], hi))
    if variants is not None:
        both(pc.is_in(table["variant"], value_set=pa.array(variants, type=pa.string())))
    if revisions is not None:
        both(pc.fill_null(pc.is_in(table["revision"], value_set=pa.array(revisions, type=pa.int64())), False))
    if mask is None or pc.all(pc.fill_null(mask, False)).as_py() is not False:
        return table  # every row wanted (or no row there): no copy
    return table.filter(mask)


def _sorted(table: Any) -> Any:
    """Oldest first. Chunks are each in time order and overlap only where one batch's shadow copies land in
    the next batch, so only those short stretches are reordered (a full gather of every column cost more
    than decoding them)."""
    import numpy as np
    import pyarrow as pa

    times = table["time"].to_numpy()
    n = len(times)
    if n < 2 or bool(np.all(times[1:] >= times[:-1])):
        return table
    order = np.argsort(times, kind="stable")
    # segment ends: positions i where order[:i+1] is a permutation of 0..i (nothing crosses i)
    ends = np.flatnonzero(np.maximum.accumulate(order) == np.arange(n))
    starts = np.concatenate(([0], ends[:-1] + 1))
    moved = ends > starts  # rows already in place form one-row segments: left where they are
    pieces, run_start = [], 0
    for a, b in zip(starts[moved].tolist(), ends[moved].tolist(), strict=True):
        if run_start < a:
            pieces.append(table.slice(run_start, a - run_start))
        pieces.append(table.slice(a, b - a + 1).take(order[a : b + 1] - a))
        run_start = b + 1
    if run_start < n:
        pieces.append(table.slice(run_start))
    return pa.concat_tables(pieces)


def _newest(table: Any, limit: int) -> Any:
    """The spread rows of the newest ``limit`` logged records."""
    import numpy as np

    starts = np.flatnonzero(table["_row"].to_numpy() == 0)
    if limit >= len(starts):
        return table
    if limit == 0:
        return table.slice(0, 0)
    return table.slice(int(starts[len(starts) - limit]))


def _with_feedback(conn: Any, table: Any) -> Any:
    """``ground_truth`` (JSON text, or null) for each spread row, by request id."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from sqlalchemy import select

    from wolt_jupyter.responses._json import from_json, to_json
    from wolt_jupyter.responses.store import tables

    fb = tables()[1]
    truth: dict[str, Any] = {}
    if conn.execute(select(fb.c.id).limit(1)).first() is None:  # no feedback at all: nothing to join
        return table.append_column(
            pa.field("ground_truth", pa.string()), pa.nulls(table.num_rows, pa.string())
        )
    ids = pc.unique(table["id"])
    if len(ids) <= 5000:
        values = ids.to_pylist()
        for start in range(0, len(values), 500):
            q = select(fb.c.id, fb.c.ground_truth).where(fb.c.id.in_(values[start : start + 500]))
            truth.update(conn.execute(q).all())
    else:  # the whole table, through the driver's cursor (SQLAlchemy's row objects tripled the cost)
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(f"SELECT id, ground_truth FROM {fb.name}")
            truth.update(cur.fetchall())
        finally:
            cur.close()
    if not truth:
        return table.append_column(
            pa.field("ground_truth", pa.string()), pa.nulls(table.num_rows, pa.string())
        )
    import numpy as np

    keys = pa.array(list(truth), type=pa.string())
    index = pc.index_in(table["id"], value_set=keys).fill_null(len(truth)).to_numpy()
    texts = np.empty(len(truth) + 1, dtype=object)  # the last slot: ids without feedback
    texts[:-1] = list(truth.values())
    lengths = np.full(len(truth) + 1, -1)  # a list's length (spread over a request's rows), else -1
    decoded: dict[int, list[Any]] = {}
    for k, text in enumerate(texts[:-1].tolist()):
        if text.lstrip()[:1] == "[":  # only a JSON array can be spread: no need to decode the others
            decoded[k] = value = from_json(text)
            lengths[k] = len(value)
    out = texts[index]  # the label as stored; a list as long as the request's rows gives each row its own
    spread = np.flatnonzero(lengths[index] == table["_rows"].to_numpy())
    position = table["_row"].to_numpy()
    for i in spread.tolist():
        out[i] = to_json(decoded[index[i]][position[i]])
    return table.append_column(
        pa.field("ground_truth", pa.string(), metadata={JSON_MARK: b"1"}), pa.array(out, type=pa.string())
    )


def _public(table: Any, deployment: str, columns: Sequence[str] | None) -> Any:
    """The DataFrame's columns, in its order: the base columns, inputs, outputs, ground truth."""
    import pyarrow as pa

    names = table.column_names
    if "deployment" not in names and (columns is None or "deployment" in columns):
        table = table.append_column(
            "deployment", pa.repeat(pa.scalar(deployment, pa.string()), table.num_rows)
        )
        names = table.column_names
    if "ground_truth" not in names and (columns is None or "ground_truth" in columns):
        table = table.append_column(
            pa.field("ground_truth", pa.string()), pa.nulls(table.num_rows, pa.string())
        )
        names = table.column_names
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            known = [n for n in [*names, "deployment"] if not n.startswith("_")]
            known = list(dict.fromkeys(known))
            raise InvalidArgument(
                f"no column {', '.join(map(repr, missing))} in the response log of {deployment!r}; "
                f"columns: {', '.join(known)}"
            )
        return table.select(list(columns))
    ins = [n for n in names if n.startswith("input")]
    outs = [n for n in names if n.startswith("output")]
    return table.select([*BASE_COLUMNS, *ins, *outs, "ground_truth"])


def to_frame(
    table: Any, json_cols: set[str], deployment: str, columns: Sequence[str] | None, pd: Any
) -> pd.DataFrame:
    """The DataFrame :func:`read_frame` returns: typed columns, JSON text decoded to Python values."""

    if table is None:
        df = _empty(pd)
        return df if columns is None else df.reindex(columns=list(columns))
    import pyarrow as pa

    table = _public(table, deployment, columns)
    # columns of Python objects are built here, not by to_pandas (it would make a numpy array of each vector
    # and a str column of the JSON first, only to be thrown away)
    objects: dict[str, Any] = {}
    with _gc_paused():
        for field in table.schema:
            if is_number_list(field.type):  # a feature vector per row: Python lists, as a JSON column gives
                objects[field.name] = _number_lists(table[field.name])
            elif field.name in json_cols or field.name == "ground_truth":
                if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
                    continue  # not text: as it is
                column = table[field.name]
                # no value at all: a float column of NaN, as pandas makes of missing data
                empty = column.null_count == len(column)
                objects[field.name] = float("nan") if empty else _json_values(column)
        df = table.drop_columns(list(objects)).to_pandas(split_blocks=True)  # no consolidation copy
        for name, values in objects.items():
            series = values if isinstance(values, float) else pd.Series(values, index=df.index, dtype=object)
            df.insert(table.column_names.index(name), name, series)
    return _typed(df, pd)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic GC off while Python lists and dicts are built by the hundred thousand: each one counts
    towards the next collection, and the older generations' passes walk every list built so far again (100k
    feature vectors of 20: 185 ms with it, 60 ms without plus one 50 ms pass once it is back on). Nothing
    built here forms a cycle."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _number_lists(column: Any) -> list[Any]:
    """A list column as one Python list a row. A chunk of vectors of one width with no null is reshaped by
    numpy and turned into lists in one call; any other chunk goes through Arrow's ``to_pylist``."""
    import numpy as np

    out: list[Any] = []
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy()  # of this (maybe sliced) chunk, into its unsliced values
        widths = np.diff(offsets)
        if (
            len(chunk)
            and chunk.null_count == 0
            and chunk.values.null_count == 0
            and (widths == widths[0]).all()
        ):
            values = chunk.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
            out.extend(values.to_numpy(zero_copy_only=False).reshape(len(chunk), int(widths[0])).tolist())
        else:
            out.extend(chunk.to_pylist())
    return out


def _json_values(column: Any) -> Any:
    """JSON text a row as Python values (NaN where there is none), each distinct text decoded once: scalars and
    strings are shared between the rows that hold them, dicts and lists decoded again for each row (a value
    changed in one row must not change another)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from wolt_jupyter.responses._json import from_json

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array)
    texts = encoded.dictionary.to_pylist()
    slots = np.empty(len(texts) + 1, dtype=object)  # the last one for rows without a value
    containers = np.zeros(len(texts) + 1, dtype=bool)
    for i, text in enumerate(texts):
        slots[i] = value = from_json(text)
        containers[i] = isinstance(value, (dict, list))
    slots[-1] = float("nan")
    index = encoded.indices.fill_null(len(texts)).to_numpy()
    out = slots[index]
    for row in np.flatnonzero(containers[index]).tolist():
        out[row] = from_json(texts[index[row]])
    return out


def _typed(df: pd.DataFrame, pd: Any) -> pd.DataFrame:
    """The documented dtypes for whichever base columns were asked for."""
    if "time" in df.columns:
        df["time"] = pd.to_datetime(df["time"].astype("float64"), unit="s", utc=True)
    if "shadow" in df.columns:
        df["shadow"] = df["shadow"].astype(bool)
    if "latency_ms" in df.columns:
        df["latency_ms"] = df["latency_ms"].astype("float64")
    if "status" in df.columns:
        df["status"] = df["status"].astype("int64")
    if "revision" in df.columns:
        df["revision"] = df["revision"].astype("Int64")  # None for rows logged before revisions were kept
    return df.reset_index(drop=True)


def _empty(pd: Any) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in (*BASE_COLUMNS, "ground_truth")})
    df["time"] = pd.Series(dtype="datetime64[ns, UTC]")
    df["shadow"] = pd.Series(dtype=bool)
    df["latency_ms"] = pd.Series(dtype="float64")
    df["status"] = pd.Series(dtype="int64")
    df["revision"] = pd.Series(dtype="Int64")
    df["ground_truth"] = pd.Series(dtype="float64")
    return df
