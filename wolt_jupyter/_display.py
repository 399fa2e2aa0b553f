"""Rendering of the rich results (cards) every magic returns: an HTML table and a plain-text fallback."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

MAX_ITEMS = 12  # a card shows this many params/metrics; the object keeps them all
MAX_VALUE = 60


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        items = [f"{k}={_short(_fmt(v))}" for k, v in list(value.items())[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… (+{len(value) - MAX_ITEMS} more)")
        return ", ".join(items) or "—"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(_fmt(v) for v in value) or "—"
    return "—" if value is None or value == "" else str(value)


def card_html(
    title: str,
    rows: Iterable[tuple[str, Any]],
    *,
    css_class: str,
    links: dict[str, str] | None = None,
    log: list[str] | None = None,
) -> str:
    """A two-column table; ``links`` maps a row label to an href for its value (e.g. the MLflow UI); ``log``
    (the routine output captured while the card was made) follows as a collapsed section."""
    links = links or {}
    body = []
    for label, value in rows:
        text = escape(_fmt(value))
        if label in links:
            text = f"<a href='{escape(links[label], quote=True)}' target='_blank' rel='noopener'>{text}</a>"
        body.append(
            f"<tr><th style='text-align:left;padding-right:1em'>{escape(label)}</th>"
            f"<td style='text-align:left'>{text}</td></tr>"
        )
    return (
        f"<table class='wolt-card {escape(css_class)}'>"
        f"<caption style='text-align:left;font-weight:bold'>{escape(title)}</caption>{''.join(body)}</table>"
        + log_html(log)
    )


def log_html(log: list[str] | None) -> str:
    """The captured log as a ``<details>`` block, closed: there when wanted, out of the way otherwise."""
    if not log:
        return ""
    return (
        f"<details class='wolt-log'><summary>log ({len(log)} line{'s' if len(log) != 1 else ''})</summary>"
        f"<pre style='font-size:85%;white-space:pre-wrap'>{escape(chr(10).join(log))}</pre></details>"
    )


def card_text(title: str, rows: Iterable[tuple[str, Any]], log: list[str] | None = None) -> str:
    rows = list(rows)
    width = max((len(label) for label, _ in rows), default=0)
    lines = [title, *(f"  {label.ljust(width)}  {_fmt(value)}" for label, value in rows)]
    if log:
        lines.append(f"  {'log'.ljust(width)}  {len(log)} lines (.log)")
    return "\n".join(lines)
