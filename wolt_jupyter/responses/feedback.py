"""Ground truth that arrives after the prediction, joined to the log by request id."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wolt_jupyter.errors import InvalidArgument


def add_feedback(url: str, items: Iterable[Mapping[str, Any]]) -> int:
    """Store ``{"id": request_id, "ground_truth": value}`` items; returns the number of rows stored.

    The ground truth may be any JSON value: a scalar for a one-row request, a list with one value per input row,
    or a dict. Feedback for an id that already has some replaces it (the latest label wins), also when one call
    repeats an id, so the count is the number of distinct ids. An item may carry ``"time"`` (epoch seconds) for
    when the truth was observed; it defaults to now. The store and its tables are created if missing.
    """
    if url.startswith(("http://", "https://")):  # a deployment's URL, not a database: say where it goes
        raise InvalidArgument(
            "add_feedback writes to a response store's database URL; to send labels to a deployment use "
            "wolt_jupyter.feedback(NAME_OR_URL, labels) or %wolt_feedback NAME LABELS"
        )
    from sqlalchemy import delete, insert

    from wolt_jupyter.responses._json import to_json
    from wolt_jupyter.responses.store import ensure_schema, make_engine, tables, translate_errors

    rows: dict[str, dict[str, Any]] = {}
    now = time.time()
    for n, item in enumerate(items):
        if not isinstance(item, Mapping) or "id" not in item or "ground_truth" not in item:
            raise InvalidArgument(
                f"feedback item {n} must be a dict with 'id' and 'ground_truth', got {item!r}"
            )
        try:
            text = to_json(item["ground_truth"])
            at = float(item.get("time", now))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"feedback item {n} (id {item['id']!r}) cannot be stored: {exc}") from None
        rows[str(item["id"])] = {"id": str(item["id"]), "time": at, "ground_truth": text}
    if not rows:
        return 0
    _, feedback = tables()
    engine = make_engine(url)
    try:
        with translate_errors(url, "write feedback to"):
            ensure_schema(engine)
            values = list(rows.values())
            with engine.begin() as conn:
                dialect = conn.dialect.name
                if dialect in ("sqlite", "postgresql"):
                    # one upsert statement; both dialects spell it the same way
                    upsert: Callable[..., Any]
                    if dialect == "sqlite":
                        from sqlalchemy.dialects.sqlite import insert as upsert
                    else:
                        from sqlalchemy.dialects.postgresql import insert as upsert
                    stmt = upsert(feedback)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=[feedback.c.id],
                        set_={"time": stmt.excluded.time, "ground_truth": stmt.excluded.ground_truth},
                    )
                    conn.execute(stmt, values)
                else:  # any other database: replace inside the transaction
                    ids = list(rows)
                    for start in range(0, len(ids), 500):
                        conn.execute(delete(feedback).where(feedback.c.id.in_(ids[start : start + 500])))
                    conn.execute(insert(feedback), values)
    finally:
        engine.dispose()
    return len(rows)
