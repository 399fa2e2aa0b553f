"""Reading the log back as a pandas DataFrame, with feedback joined by request id.

It only reads the store, so it works the same while the server runs, after it stopped, or on a copy of the
file. pandas is imported when the function is called, never at package import.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

BASE_COLUMNS = (
    "id",
    "time",
    "deployment",
    "variant",
    "shadow",
    "model_name",
    "model_version",
    "latency_ms",
    "status",
    "error",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
ACCEPTED_TIMES = (
    "a datetime (naive means local time), epoch seconds (float), a timedelta or a duration before now "
    'such as "15s", "30m", "1h", "2d", "1w" (units ms, s, m, h, d, w), or an ISO-8601 time "2026-11-29T08:00Z"'
)


def duration_seconds(text: str) -> float | None:
    """Seconds in a duration such as ``"15s"``, ``"30m"``, ``"1h"``, ``"2d"`` (units ms, s, m, h, d, w); None if
    ``text`` is not one. The one parser of durations: ``since=``, the monitor's range and step use it."""
    m = _DURATION.match(text)
    return float(m[1]) * _UNIT_SECONDS[m[2].lower()] if m else None


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


def responses(
    deployment: str,
    since: Any = None,
    variant: str | Sequence[str] | None = None,
    url: str | None = None,
    until: Any = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The response log of ``deployment`` as a DataFrame, oldest first, feedback joined as ``ground_truth``.

    One DataFrame row per logged request per variant and per input row: a request carrying several rows
    (``inputs={"x": [1, 2, 3]}``) becomes three DataFrame rows sharing ``id``; an input or output list with
    one value per row is spread over them, any other value (a scalar, a list of another length, a dict) is
    repeated as is. The same rule spreads a list ``ground_truth``. Inputs become ``input.<name>`` columns,
    outputs ``output.<name>``.

    ``since`` (inclusive) and ``until`` (exclusive) take {ACCEPTED}. ``variant`` is a name or several.
    ``limit`` keeps the newest ``limit`` logged rows (before spreading). ``url`` defaults to the configured
    response store, else the deployment's SQLite file under the state dir. A store that does not exist yet
    gives an empty DataFrame with the base columns.
    """
    import pandas as pd
    from sqlalchemy import inspect, select

    from wolt_jupyter.config import settings
    from wolt_jupyter.responses.store import (
        default_store_url,
        from_json,
        make_engine,
        normalize_url,
        sqlite_path,
        tables,
        translate_errors,
    )

    now = time.time()
    lo, hi = parse_time(since, "since", now), parse_time(until, "until", now)
    variants = [variant] if isinstance(variant, str) else (list(variant) if variant is not None else None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgument(f"limit must be a non-negative integer, not {limit!r}")
    if url is None:
        cfg = settings()
        url = cfg.response_store_url or default_store_url(deployment, cfg.home)

    path = sqlite_path(normalize_url(url))
    if path is not None and not path.is_file():
        return _empty(pd)  # never create a file just by looking
    log_t, fb_t = tables()
    engine = make_engine(url, create_dir=False)
    try:
        with translate_errors(url, "read"), engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            if log_t.name not in present:
                return _empty(pd)
            cols = [log_t.c[c] for c in BASE_COLUMNS] + [log_t.c.inputs, log_t.c.outputs]
            if fb_t.name in present:
                query = select(*cols, fb_t.c.ground_truth).select_from(
                    log_t.outerjoin(fb_t, fb_t.c.id == log_t.c.id)
                )
            else:
                query = select(*cols)
            query = query.where(log_t.c.deployment == deployment)
            if lo is not None:
                query = query.where(log_t.c.time >= lo)
            if hi is not None:
                query = query.where(log_t.c.time < hi)
            if variants is not None:
                query = query.where(log_t.c.variant.in_(variants))
            if limit is not None:
                query = query.order_by(log_t.c.time.desc(), log_t.c.seq.desc()).limit(limit)
                rows = conn.execute(query).all()[::-1]
            else:
                rows = conn.execute(query.order_by(log_t.c.time, log_t.c.seq)).all()
    finally:
        engine.dispose()
    if not rows:
        return _empty(pd)

    records: list[dict[str, Any]] = []
    nan = float("nan")
    nbase = len(BASE_COLUMNS)
    for row in rows:  # plain tuples: BASE_COLUMNS, inputs, outputs[, ground_truth]
        inputs = _as_columns(from_json(row[nbase]), "input")
        outputs = _as_columns(from_json(row[nbase + 1]), "output")
        truth_text = row[nbase + 2] if len(row) > nbase + 2 else None
        truth = nan if truth_text is None else from_json(truth_text)
        n = _row_count(inputs) or _row_count(outputs) or 1
        base = dict(zip(BASE_COLUMNS, row[:nbase], strict=True))
        if n == 1:
            base.update({k: _pick(v, 0, 1) for k, v in inputs.items()})
            base.update({k: _pick(v, 0, 1) for k, v in outputs.items()})
            base["ground_truth"] = _pick(truth, 0, 1)
            records.append(base)
            continue
        for i in range(n):
            rec = dict(base)
            rec.update({k: _pick(v, i, n) for k, v in inputs.items()})
            rec.update({k: _pick(v, i, n) for k, v in outputs.items()})
            rec["ground_truth"] = _pick(truth, i, n)
            records.append(rec)
    df = pd.DataFrame.from_records(records)
    extra = [c for c in df.columns if c not in BASE_COLUMNS and c != "ground_truth"]
    ins = [c for c in extra if c.startswith("input")]
    outs = [c for c in extra if not c.startswith("input")]
    df = df[[*BASE_COLUMNS, *ins, *outs, "ground_truth"]]
    return _typed(df, pd)


_doc = responses.__doc__ or ""
responses.__doc__ = _doc.replace("{ACCEPTED}", ACCEPTED_TIMES)


def _as_columns(payload: Any, prefix: str) -> dict[str, Any]:
    if isinstance(payload, dict):
        return {f"{prefix}.{k}": v for k, v in payload.items()}
    if payload is None:
        return {}
    return {prefix: payload}  # an unnamed payload (a bare list) keeps one column


def _row_count(columns: dict[str, Any]) -> int:
    return max((len(v) for v in columns.values() if isinstance(v, list)), default=0)


def _pick(value: Any, i: int, n: int) -> Any:
    if isinstance(value, list) and len(value) == n:
        return value[i]
    return value


def _typed(df: pd.DataFrame, pd: Any) -> pd.DataFrame:
    df["time"] = pd.to_datetime(df["time"].astype("float64"), unit="s", utc=True)
    df["shadow"] = df["shadow"].astype(bool)
    df["latency_ms"] = df["latency_ms"].astype("float64")
    df["status"] = df["status"].astype("int64")
    for c in ("id", "deployment", "variant", "model_name", "model_version", "error"):
        df[c] = df[c].astype(object)
    return df.reset_index(drop=True)


def _empty(pd: Any) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in (*BASE_COLUMNS, "ground_truth")})
    df["time"] = pd.Series(dtype="datetime64[ns, UTC]")
    df["shadow"] = pd.Series(dtype=bool)
    df["latency_ms"] = pd.Series(dtype="float64")
    df["status"] = pd.Series(dtype="int64")
    df["ground_truth"] = pd.Series(dtype="float64")
    return df
