"""Sizes and durations as people write them in specs, policies, settings and cell arguments.

One parser each, in the base layer, so the spec, the response log, the monitor and the update policy agree on
what ``"30m"`` or ``"5GB"`` means. Callers word their own errors (a policy names its field path, a cell its
argument); the parsers here only say whether a value is one.
"""

from __future__ import annotations

import math
import re
from typing import Any

from wolt_jupyter.errors import InvalidArgument

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)\s*", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_BYTES = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgtp]?i?b?)?\s*", re.IGNORECASE)
_DECIMAL = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


def duration_seconds(text: str) -> float | None:
    """Seconds in a duration such as ``"15s"``, ``"30m"``, ``"1h"``, ``"2d"`` (units ms, s, m, h, d, w); None if
    ``text`` is not one."""
    m = _DURATION.fullmatch(text)
    return float(m[1]) * _UNIT_SECONDS[m[2].lower()] if m else None


def positive_seconds(value: Any) -> float | None:
    """Seconds from a positive finite number or a duration string; None if ``value`` is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds: float | None = float(value)
    elif isinstance(value, str):
        seconds = duration_seconds(value)
    else:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else None


def parse_age(value: Any, what: str = "max_age") -> float:
    """Seconds in ``14d``, ``12h``, ``30m`` or a plain number of seconds."""
    seconds = positive_seconds(value)
    if seconds is None:
        raise InvalidArgument(f"{what}={value!r} is not an age; use e.g. 14d, 12h, 30m (units s, m, h, d, w)")
    return seconds


def parse_bytes(value: Any, what: str = "max_bytes") -> int:
    """Bytes in ``5GB``, ``500MB``, ``2GiB``, ``10k`` or a plain number (decimal units; ``i`` is binary)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    m = _BYTES.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise InvalidArgument(
            f"{what}={value!r} is not a size; use e.g. 5GB, 500MB, 2GiB or a number of bytes"
        )
    unit = (m[2] or "").lower().rstrip("b")
    factor = 1024 ** " kmgtp".index(unit[0]) if unit.endswith("i") else _DECIMAL[unit]
    return int(float(m[1]) * factor)


def human_bytes(n: float) -> str:
    """``1.5 MB`` (decimal units, as ``parse_bytes`` reads them back)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_age(seconds: float) -> str:
    """``14d``, ``12h``, ``30m`` where exact, else seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
