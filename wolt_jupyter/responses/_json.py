"""Payloads as the log stores them: JSON text with numpy values, dates and bytes converted, not rejected."""

from __future__ import annotations

import base64
import datetime as _dt
import json
from typing import Any


def json_default(obj: Any) -> Any:
    # numpy arrays and scalars, pandas objects with .tolist()
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    return str(obj)


_encoder = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))


def to_json(value: Any) -> str:
    """JSON text for a payload; numpy values, dates and bytes are converted rather than rejected."""
    return _encoder.encode(value)


_decode = json.JSONDecoder().decode


def from_json(text: str | None) -> Any:
    return None if text is None else _decode(text)
