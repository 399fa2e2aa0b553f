"""What a metric source hands the panel: one :class:`MonitorData` per refresh, the same shape from every source.

Every time series is a wide DataFrame indexed by UTC time (one column per variant, or per shadow pair), so
the panel draws all sources the same way and a test can compare them column by column. pandas is imported
only when a snapshot is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from wolt_jupyter.errors import SourceError as SourceError  # re-exported: defined in the one error tree

if TYPE_CHECKING:
    import pandas as pd

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
SUMMARY_COLUMNS = ("shadow", "requests", "share", "error_rate", "p50", "p95", "p99", "agreement")
HEALTH_COLUMNS = ("queued", "written", "dropped")


class RevisionMark(NamedTuple):
    """Where a deployment revision began in a window: its first logged row (epoch seconds), its number, and
    the label the charts print (``r3``, ``r3 (same models)`` for a change that kept the models)."""

    time: float
    label: str
    revision: int


@dataclass
class MonitorData:
    """One refresh of the monitoring panel for one deployment over ``[since, until)``.

    Time series (index: UTC timestamps every ``step`` seconds):

    - ``requests``: live requests per second, a column per variant
    - ``error_rate``: fraction of requests answered 5xx, a column per variant
    - ``latency``: ``{"p50"|"p95"|"p99": frame}``, seconds, a column per variant
    - ``agreement``: fraction of shadow answers equal to the live one, a column ``"<shadow> vs <live>"``
    - ``log_health``: response-log records ``queued`` (gauge), ``written`` and ``dropped`` per second

    ``predictions`` is the distribution of the first output over the whole window: index = bin upper edge,
    a column per variant (shadows included, listed in ``shadows``), values = counts. ``summary`` is one row a
    variant over the whole window (see :data:`SUMMARY_COLUMNS`; shadows have their own requests, errors and
    latency). ``message`` says why something is empty, or that two sources disagree.
    """

    deployment: str
    since: float
    until: float
    step: float
    source: str
    requests: pd.DataFrame
    error_rate: pd.DataFrame
    latency: dict[str, pd.DataFrame]
    predictions: pd.DataFrame
    agreement: pd.DataFrame
    log_health: pd.DataFrame
    summary: pd.DataFrame
    shadows: tuple[str, ...] = ()
    #: where each deployment revision began in the window (a revision-aware source), oldest first
    revision_marks: tuple[RevisionMark, ...] = ()
    message: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: the source this one was checked against (the response log, for Prometheus), and whether they disagree
    checked_against: str | None = None
    disagrees: bool = False

    @property
    def empty(self) -> bool:
        return self.summary.empty or float(self.summary["requests"].fillna(0).sum()) == 0

    @property
    def variants(self) -> list[str]:
        return [str(v) for v in self.summary.index]

    @classmethod
    def blank(
        cls, deployment: str, since: float, until: float, step: float, source: str, message: str | None
    ) -> MonitorData:
        """An empty snapshot carrying only a message (nothing logged yet, an unreachable source)."""
        return cls(
            deployment=deployment,
            since=since,
            until=until,
            step=step,
            source=source,
            requests=frame(),
            error_rate=frame(),
            latency={k: frame() for k in QUANTILES},
            predictions=_empty_predictions(),
            agreement=frame(),
            log_health=frame(columns=HEALTH_COLUMNS),
            summary=empty_summary(),
            message=message,
        )


class MetricSource(ABC):
    """Where the panel's numbers come from. One call per refresh, so a source can batch its queries."""

    #: a short description for the panel footer (never a password)
    name: str = "metrics"

    @abstractmethod
    def snapshot(self, deployment: str, *, since: float, until: float, step: float) -> MonitorData:
        """Everything the panel shows for ``deployment`` between epoch seconds ``since`` and ``until``.

        Raises :class:`SourceError` when the source cannot be read; an empty window is not an error (the
        snapshot's ``message`` says so).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or pools, if any."""


# -- small DataFrame helpers shared by the sources ------------------------------------------------------------
def time_index(seconds: Any) -> pd.DatetimeIndex:
    import pandas as pd

    return pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True), name="time")


def frame(columns: Any = ()) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns=list(columns), index=time_index([]), dtype="float64")


def _empty_predictions() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(index=pd.Index([], dtype="float64", name="le"), dtype="float64")


def empty_summary() -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(columns=list(SUMMARY_COLUMNS), index=pd.Index([], name="variant", dtype=object))
    return df.astype({"shadow": bool, **{c: "float64" for c in SUMMARY_COLUMNS if c != "shadow"}})
