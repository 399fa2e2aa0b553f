"""Ground truth from a notebook: labels keyed by request id, sent to the deployment's feedback endpoint.

``%wolt_predict`` answers with the request ``id`` of every row; the labels that arrive later join on it. The
labels go through the runtime's ``POST /v2/models/{name}/feedback`` with the deployment's feedback token (the
narrow credential a labelling job holds, never the admin token), so the notebook writes exactly what any other
labelling client would, into the store the running deployment uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter._display import card_html, card_text
from wolt_jupyter.config import mask_url
from wolt_jupyter.errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

BATCH = 1000  # items per POST: bodies stay far below the runtime's limit
ID_COLUMN = "id"
LABEL_COLUMNS = ("ground_truth", "label", "y", "target")  # tried in order when a frame has several columns


@dataclass
class FeedbackResult:
    """What ``%wolt_feedback`` sent: how many ids, stored where."""

    deployment: str
    url: str
    sent: int
    stored: int
    skipped_missing: int = 0

    def _rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [
            ("deployment", self.deployment),
            ("endpoint", f"{mask_url(self.url)}/v2/models/{self.deployment}/feedback"),
            ("stored", f"{self.stored} request ids with ground truth"),
        ]
        if self.skipped_missing:
            rows.append(("skipped", f"{self.skipped_missing} rows without a label (NaN/None)"))
        return rows

    def _repr_html_(self) -> str:
        return card_html("Feedback", self._rows(), css_class="wolt-feedback-card")

    def __repr__(self) -> str:
        return card_text("Feedback", self._rows())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A JSON value from a pandas/numpy cell (numpy scalars have ``item``)."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        value = item()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    return value


def label_pairs(
    labels: Any, *, ids: Any = None, id_column: str | None = None, label_column: str | None = None
) -> tuple[list[tuple[str, Any]], int]:
    """``(request id, label)`` pairs from what a notebook holds, and how many rows had no label.

    - a Series whose index is the request ids;
    - a DataFrame with an id column (``id_column``, default ``id``; else its index) and one label column
      (``label_column``, default the only other column or one named ground_truth/label/y/target);
    - with ``ids``: labels aligned with a ``%wolt_predict`` result (its ``id`` column, matched by index) or a
      sequence of request ids (matched by position), e.g. ``feedback("eta", y_live, ids=answers)``.
    """
    import pandas as pd

    if isinstance(labels, pd.DataFrame):
        if ids is None:
            id_column = id_column or (ID_COLUMN if ID_COLUMN in labels.columns else None)
            if id_column is not None and id_column not in labels.columns:
                raise InvalidArgument(
                    f"no column {id_column!r} in the labels; columns: {', '.join(map(str, labels.columns))}"
                )
            keys = labels[id_column] if id_column else pd.Series(labels.index, index=labels.index)
            rest = [c for c in labels.columns if c != id_column]
        else:
            keys, rest = None, list(labels.columns)
        column = _label_column(rest, label_column)
        series = labels[column]
        if keys is not None:
            series = pd.Series(series.to_numpy(), index=keys.to_numpy())
    elif isinstance(labels, pd.Series):
        if id_column or label_column:
            raise InvalidArgument(
                "--id-column/--label-column are for a DataFrame; a Series is keyed by its index"
            )
        series = labels
    else:
        try:
            series = pd.Series(list(labels))
        except TypeError:
            raise InvalidArgument(
                f"labels must be a Series keyed by request id or a DataFrame, got {type(labels).__name__}"
            ) from None
        if ids is None:
            raise InvalidArgument("plain labels (a list or array) need ids=: the request ids they belong to")
    if ids is not None:
        series = _aligned(series, ids)
    missing = int(sum(_missing(_plain(v)) for v in series.tolist()))
    pairs = [(str(_plain(k)), _plain(v)) for k, v in series.items() if not _missing(_plain(v))]
    return pairs, missing


def _label_column(columns: list[Any], wanted: str | None) -> Any:
    if wanted is not None:
        if wanted not in columns:
            raise InvalidArgument(f"no label column {wanted!r}; columns: {', '.join(map(str, columns))}")
        return wanted
    if len(columns) == 1:
        return columns[0]
    for name in LABEL_COLUMNS:
        if name in columns:
            return name
    raise InvalidArgument(
        f"which column is the label? the frame has {', '.join(map(str, columns))}: pass --label-column NAME"
    )


def _aligned(series: pd.Series, ids: Any) -> pd.Series:
    """Labels re-keyed by request id: by index against a predict result, by position against a list."""
    import pandas as pd

    if isinstance(ids, pd.DataFrame):
        if ID_COLUMN not in ids.columns:
            raise InvalidArgument(
                "ids= is a %wolt_predict result (with an 'id' column) or a list of request ids"
            )
        missing = series.index.difference(ids.index)
        if len(missing):
            raise InvalidArgument(
                f"{len(missing)} labels have no prediction with the same index (e.g. {missing[0]!r}): "
                "pass the labels of the rows that were sent"
            )
        return pd.Series(series.to_numpy(), index=ids.loc[series.index, ID_COLUMN].to_numpy())
    keys = list(ids[ID_COLUMN]) if isinstance(ids, pd.Series) and ids.name == ID_COLUMN else list(ids)
    if len(keys) != len(series):
        raise InvalidArgument(f"{len(series)} labels but {len(keys)} request ids: give one id per label")
    return pd.Series(series.to_numpy(), index=keys)


def items_by_id(pairs: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """One feedback item per request id: a scalar for a one-row request, the list of row labels for a request
    that carried several rows (the order the rows were sent in)."""
    grouped: dict[str, list[Any]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return [{"id": k, "ground_truth": v[0] if len(v) == 1 else v} for k, v in grouped.items()]


def _endpoint(target: str, deployment: str | None) -> tuple[str, str]:
    """``(runtime URL, deployment name)`` for a deployment name or a runtime URL."""
    from urllib.parse import urlsplit

    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        path = parts.path.rstrip("/").split("/")
        if deployment is None and len(path) >= 4 and path[1:3] == ["v2", "models"]:
            deployment = path[3]  # .../v2/models/NAME[/...]
        base = f"{parts.scheme}://{parts.netloc}"
        if deployment is None:
            deployment = _deployment_at(base)
        return base, deployment
    from wolt_jupyter import deployments

    d = deployments.get(target)
    if d.status != "ready" or not d.url:
        raise InvalidArgument(f"deployment {target!r} is {d.status}, not ready: see %wolt_deployments")
    return d.url, target


def _deployment_at(url: str) -> str:
    """The recorded deployment a runtime URL belongs to."""
    from wolt_jupyter import deployments

    for name in deployments.revision_store().names():
        try:
            if (deployments.get(name).url or "").rstrip("/") == url.rstrip("/"):
                return name
        except Exception:
            continue
    raise InvalidArgument(
        f"no deployment recorded here serves {mask_url(url)}: pass deployment=NAME (or the URL "
        "…/v2/models/NAME)"
    )


def feedback(
    deployment: str,
    labels: Any,
    *,
    ids: Any = None,
    id_column: str | None = None,
    label_column: str | None = None,
    token: str | None = None,
    name: str | None = None,
) -> FeedbackResult:
    """Send ground truth for earlier requests to ``deployment`` (its name, or its runtime URL).

    ``labels`` is keyed by request id (see :func:`label_pairs`); rows without a label are skipped and counted.
    ``token`` defaults to the deployment's feedback token in the state dir; ``name`` says which deployment a
    URL serves when it cannot be told from the URL or the local records.
    """
    from wolt_jupyter.client import send_feedback

    pairs, missing = label_pairs(labels, ids=ids, id_column=id_column, label_column=label_column)
    if not pairs:
        raise InvalidArgument("no labels to send: every row was empty (NaN/None)")
    url, name = _endpoint(deployment, name)
    items = items_by_id(pairs)
    stored = 0
    for start in range(0, len(items), BATCH):
        stored += send_feedback(url, name, items[start : start + BATCH], token=token)
    return FeedbackResult(deployment=name, url=url, sent=len(items), stored=stored, skipped_missing=missing)
