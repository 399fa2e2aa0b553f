"""The response log's summary is a card like every other result: the same HTML and text, and plain data."""

from __future__ import annotations

from wolt_jupyter._display import Card
from wolt_jupyter.responses.summary import LogSummary


def test_summary_is_a_card_titled_by_its_deployment() -> None:
    info = LogSummary("eta", "postgresql://u:secret@db/x", records=4, bytes=400, removed_records=2)
    assert isinstance(info, Card)
    html, text = info._repr_html_(), repr(info)
    assert "Response log of eta" in html and text.startswith("Response log of eta")
    assert "wolt-response-log-card" in html and "100 B/row" in html and "100 B/row" in text
    assert "secret" not in html + text  # the store URL is masked on both
    assert info.to_dict()["records"] == 4 and info.to_dict()["deployment"] == "eta"
