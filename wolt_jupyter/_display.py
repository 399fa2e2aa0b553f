"""Rendering of the rich results (cards) every magic returns: an HTML table and a plain-text fallback.

:class:`Card` is the one base of those results: a subclass names its title, CSS class and rows; the
notebook's HTML, the plain text, and the plain data (``to_dict``, what the server extension's JSON and the
MLflow plugin's dicts are made of) all come from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from html import escape
from typing import Any, ClassVar

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


def p_value_text(p: float | None, name: str = "") -> str:
    """A p-value as people read it: three significant digits, ``< 1e-6`` below that (never ``0``); with
    ``name``, ``p=0.0312`` / ``p < 1e-6``."""
    if p is None or p != p:
        return f"{name}=—" if name else "—"
    if p < 1e-6:
        return f"{name} < 1e-6" if name else "< 1e-6"
    return f"{name}={p:.3g}" if name else f"{p:.3g}"


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


class Card:
    """A result a notebook shows as a two-column card.

    Subclasses name their title and CSS class as class arguments (``class RunCard(Card, title="MLflow run",
    css_class="wolt-run-card")``) and return their ``_rows()``; ``_links()`` makes a row's value a link,
    ``_html_details()``/``_text_details()`` add what does not fit a row (a dry run's manifests). Dataclass
    subclasses are declared with ``@dataclass(repr=False)``: the dataclass ``__repr__`` would replace the
    card's text.
    """

    title: ClassVar[str]
    css_class: ClassVar[str]

    def __init_subclass__(cls, *, title: str, css_class: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.title, cls.css_class = title, css_class

    def _rows(self) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def _title(self) -> str:
        """The card's heading: the class's title, or one naming the instance (a response log's deployment)."""
        return self.title

    def _links(self) -> dict[str, str] | None:
        return None

    def _log(self) -> list[str] | None:
        """What the card captured from MLflow and libraries (a collapsed section), if it keeps any."""
        return getattr(self, "log", None)

    def _html_details(self) -> str:
        return ""

    def _text_details(self) -> str:
        return ""

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (a dataclass's fields by default)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def _repr_html_(self) -> str:
        html = card_html(
            self._title(), self._rows(), css_class=self.css_class, links=self._links(), log=self._log()
        )
        return html + self._html_details()

    def __repr__(self) -> str:
        return card_text(self._title(), self._rows(), self._log()) + self._text_details()
