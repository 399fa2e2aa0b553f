"""The monitoring panel's charts: one matplotlib ``Figure`` of six plots, drawn from a :class:`MonitorData`.

``matplotlib.figure.Figure`` with the Agg canvas, never ``pyplot``: no global state, no backend switching in
the user's kernel, safe to draw from a worker thread, and the PNG is what a static export keeps.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from wolt_jupyter.monitoring.data import MonitorData

LINESTYLES = {"p50": "-", "p95": "--", "p99": ":"}


def colors_for(names: list[str]) -> dict[str, Any]:
    """A stable color per variant name (the same variant keeps its color across refreshes and plots)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(sorted(names))}


def _times(df: Any) -> Any:
    idx = df.index
    return idx.tz_convert(None).to_numpy() if getattr(idx, "tz", None) is not None else idx.to_numpy()


def _naive(epoch: float) -> Any:
    import numpy as np

    return np.datetime64(round(epoch * 1000), "ms")


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _lines(
    ax: Any, df: Any, colors: dict[str, Any], scale: float = 1.0, style: str = "-", label: str = ""
) -> bool:
    drawn = False
    if df is None or df.empty:
        return drawn
    x = _times(df)
    for col in df.columns:
        y = df[col].to_numpy(dtype="float64") * scale
        if not (y == y).any():  # all NaN
            continue
        sparse = int((y == y).sum()) < 10  # a few points: mark them, or a lone point would not show
        ax.plot(
            x,
            y,
            style,
            color=colors.get(col),
            label=f"{col}{label}",
            linewidth=1.4,
            marker="." if sparse else None,
        )
        drawn = True
    return drawn


def _empty(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.5")


def render(data: MonitorData, *, width: float = 11.0, height: float = 9.0) -> Figure:
    """Draw the six plots for ``data``; a message (empty or failed source) is written across the figure."""
    from matplotlib.figure import Figure

    # fixed margins, not layout="constrained": its solver re-measures every text several times per draw,
    # which was most of a refresh (~0.5 s of ~0.6 s for the PNG)
    fig = Figure(figsize=(width, height), dpi=80)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.06, hspace=0.38, wspace=0.18)
    axes = fig.subplots(3, 2)
    names = [str(v) for v in data.summary.index] or list(data.requests.columns)
    colors = colors_for(names + [c for c in data.agreement.columns])
    window = f"{data.deployment}: last {_human(data.until - data.since)}, step {_human(data.step)}"
    fig.suptitle(f"{window}  ({data.source})", fontsize=10)

    ax = axes[0][0]
    ax.set_title("requests / s", fontsize=10)
    if not _lines(ax, data.requests, colors):
        _empty(ax)
    ax = axes[0][1]
    ax.set_title("error rate (%)", fontsize=10)
    if not _lines(ax, data.error_rate, colors, scale=100.0):
        _empty(ax)
    ax = axes[1][0]
    ax.set_title("latency (ms): p50 —, p95 - -, p99 ···", fontsize=10)
    drawn = False
    for k, style in LINESTYLES.items():
        drawn = _lines(ax, data.latency.get(k), colors, scale=1000.0, style=style, label=f" {k}") or drawn
    if not drawn:
        _empty(ax)
    _predictions(axes[1][1], data, colors)
    ax = axes[2][0]
    ax.set_title("shadow agreement with the live answer", fontsize=10)
    if _lines(ax, data.agreement, colors):
        ax.set_ylim(-0.05, 1.05)
    else:
        _empty(ax, "no shadow comparisons")
    ax = axes[2][1]
    ax.set_title("response log: queued, written/s, dropped/s", fontsize=10)
    health = data.log_health
    hcolors = {"queued": "tab:blue", "written": "tab:green", "dropped": "tab:red"}
    if not _lines(ax, health, hcolors):
        _empty(ax)
    for row in axes:
        for ax in row:
            ax.tick_params(labelsize=8)
            if ax is not axes[1][1]:
                _time_axis(ax)
                ax.set_xlim(_naive(data.since), _naive(data.until))
                _revision_marks(ax, data, label=ax is axes[0][0])
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
    if data.message:
        fig.text(0.5, 0.5, data.message, ha="center", va="center", wrap=True, fontsize=11,
                 bbox={"facecolor": "lightyellow", "edgecolor": "0.7"})  # fmt: skip
    return fig


def _revision_marks(ax: Any, data: MonitorData, *, label: bool) -> None:
    """A vertical line where each revision began (a redeploy starts new series there); named on one plot."""
    for mark in data.revision_marks:
        x = _naive(mark.time)
        ax.axvline(x, color="0.35", linestyle="-.", linewidth=1.0, zorder=0)
        if label:
            ax.annotate(
                mark.label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                textcoords="offset points", fontsize=7, va="top", color="0.25",
            )  # fmt: skip


def _predictions(ax: Any, data: MonitorData, colors: dict[str, Any]) -> None:
    """Each variant's share of predictions per bin, overlaid (shadows dashed) so shapes compare at a glance."""
    import numpy as np

    ax.set_title("prediction distribution (share per bin; shadows dashed)", fontsize=10)
    pred = data.predictions
    if pred is None or pred.empty or float(np.nansum(pred.to_numpy())) == 0:
        _empty(ax)
        return
    x = np.arange(len(pred.index))
    for col in pred.columns:
        counts = pred[col].fillna(0).to_numpy(dtype="float64")
        total = counts.sum()
        if total <= 0:
            continue
        style = "--" if col in data.shadows else "-"
        ax.step(x, counts / total, where="mid", linestyle=style, color=colors.get(col), label=str(col))
    every = max(1, math.ceil(len(x) / 8))
    ax.set_xticks(x[::every])
    ax.set_xticklabels([_edge(v) for v in pred.index[::every]], fontsize=7, rotation=30)
    ax.set_xlabel("bin upper edge", fontsize=8)


def _edge(v: float) -> str:
    return "+Inf" if v == math.inf else f"{v:.3g}"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and abs(seconds / size - round(seconds / size)) < 0.02:
            return f"{round(seconds / size)}{unit}"
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
