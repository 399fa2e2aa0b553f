"""The live monitoring panel: ``monitor("eta")`` under the cell that deployed it.

An ipywidgets ``VBox``: a header naming the source (and, for Prometheus, the response log it is checked
against), a time-range selector, messages from the source (a disagreement between the two included), a
per-variant summary table and one PNG of six plots (requests/s, error rate, latency quantiles, prediction
distribution, shadow agreement, response-log health). Why a PNG inside the widget rather than an interactive canvas: the same
bytes are the static fallback ``_repr_mimebundle_`` leaves for nbconvert/HTML export, and there is no
matplotlib backend state to touch in the user's kernel.

Auto-refresh is an asyncio task on the kernel's running loop. The slow parts (the source's queries and
drawing the PNG) run in a worker thread, so the kernel keeps executing cells; only the widget updates run
on the loop. The task stops — and the panel says why — when its stop button is pressed, ``stop()``/``close()``
are called, the widget is closed, its output is cleared (the front end reports its views through
``_view_count``), or its deployment is undeployed. Without a running loop (a plain script) the panel renders
once and starts nothing. A deployment never made here that the source knows nothing about is an error.

``monitor(..., revision=)`` chooses the revisions whose rows the response log shows: by default those since
the last deploy, re-read at every refresh, so an open panel starts new series when the deployment is
redeployed; a number, several, or ``"all"`` (a series per run of the same models). Each revision's start is
marked on the time axis.
"""

from __future__ import annotations

import base64
import html
import time
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument, WoltError
from wolt_jupyter.monitoring.sources import deployment_state, parse_duration, require_known
from wolt_jupyter.revisions import SINCE_DEPLOY

if TYPE_CHECKING:
    import asyncio

    from wolt_jupyter.monitoring.data import MetricSource, MonitorData

RANGES = ("5m", "15m", "30m", "1h", "6h", "24h")
MAX_POINTS = 720  # a longer window gets a coarser step
CSS = """<style>
.wolt-monitor-header { font-weight: 600; }
.wolt-monitor-message { padding: 4px 8px; border-left: 3px solid #d9a400; background: #fff8e1; }
.wolt-monitor-error { border-left-color: #c62828; background: #ffebee; }
.wolt-monitor-stopped { border-left-color: #607d8b; background: #eceff1; }
.wolt-monitor-summary table { border-collapse: collapse; font-size: 12px; }
.wolt-monitor-summary td, .wolt-monitor-summary th { padding: 2px 8px; text-align: right; }
</style>"""


class MonitorPanel:
    """Live charts of one deployment. Display it (it is a widget), or read ``data`` / ``png`` directly."""

    def __init__(
        self,
        name: str,
        source: MetricSource,
        *,
        since: Any = "30m",
        step: Any = "15s",
        refresh: float | None = 10.0,
    ) -> None:
        self.name = name
        self.source = source
        # the response log Prometheus is checked against (see monitoring.crosscheck); None: no check
        self.reference: MetricSource | None = None
        self.window = parse_duration(since, "since")
        self.base_step = parse_duration(step, "step")
        self.refresh_s = float(refresh) if refresh else 0.0
        if self.refresh_s < 0:
            raise InvalidArgument(
                f"refresh={refresh!r} must be a number of seconds >= 0 (0: no auto-refresh)"
            )
        self.data: MonitorData | None = None
        self.png: bytes | None = None
        self.message: str | None = None
        self.refreshes = 0
        self.stopped_because: str | None = None
        self.state = "unknown"  # of the deployment when the panel opened: live, removed or unknown
        self.task: asyncio.Task | None = None
        self.task_cancelled = False
        self._pending: asyncio.Task | None = None
        self._closed = False
        self._build_widgets(since)

    # -- widgets ----------------------------------------------------------------------------------------------
    def _build_widgets(self, since: Any) -> None:
        import ipywidgets as w

        label = since if isinstance(since, str) else f"{self.window:g}s"
        options = list(RANGES) if label in RANGES else [*RANGES, label]
        self.range = w.Dropdown(options=options, value=label, description="range", layout={"width": "160px"})
        self.range.add_class("wolt-monitor-range")
        self.range.observe(self._on_range, names="value")
        self.button = w.Button(description="refresh", icon="refresh", layout={"width": "100px"})
        self.button.add_class("wolt-monitor-refresh")
        self.button.on_click(lambda _b: self.refresh_soon())
        self.stop_button = w.Button(
            description="stop", icon="stop", tooltip="stop refreshing", layout={"width": "90px"}
        )
        self.stop_button.add_class("wolt-monitor-stop")
        self.stop_button.on_click(lambda _b: self._toggle())
        self.close_button = w.Button(description="close", icon="times", tooltip="stop and close the panel")
        self.close_button.layout.width = "90px"
        self.close_button.add_class("wolt-monitor-close")
        self.close_button.on_click(lambda _b: self.close())
        self.header = w.HTML()
        self.header.add_class("wolt-monitor-header")
        self.message_box = w.HTML()
        self.message_box.add_class("wolt-monitor-message")
        self.summary_box = w.HTML()
        self.summary_box.add_class("wolt-monitor-summary")
        self.image = w.Image(format="png")
        self.image.add_class("wolt-monitor-figure")
        controls = w.HBox([self.range, self.button, self.stop_button, self.close_button, self.header])
        controls.add_class("wolt-monitor-controls")
        self.widget = w.VBox([w.HTML(CSS), controls, self.message_box, self.summary_box, self.image])
        self.widget.add_class("wolt-monitor")
        self.widget.observe(self._on_widget_closed, names="comm")
        self.widget._view_count = (
            0  # ask the front end to count its views: 0 again means the output was cleared
        )
        self.widget.observe(self._on_views, names="_view_count")

    def _on_range(self, change: dict[str, Any]) -> None:
        self.window = parse_duration(change["new"], "since")
        self.refresh_soon()

    def _on_widget_closed(self, change: dict[str, Any]) -> None:
        if change["new"] is None:  # Widget.close() drops the comm: stop refreshing a panel nobody sees
            self.stop()

    def _on_views(self, change: dict[str, Any]) -> None:
        if (change["old"] or 0) > 0 and change["new"] == 0 and self.running:
            self.stop("its output was cleared")

    def _toggle(self) -> None:
        if self.running:
            self.stop("stopped from the panel")
        else:
            self.stopped_because = None
            self.start()
            self._show_state()

    def _show_state(self) -> None:
        """The stop button and the message say whether the panel refreshes, and why not."""
        self.stop_button.description = "stop" if self.running else "resume"
        self.stop_button.icon = "stop" if self.running else "play"
        self.stop_button.disabled = self._closed or self.refresh_s <= 0 or self.state == "removed"
        if self.stopped_because:
            self.message = f"refresh stopped: {self.stopped_because}"
            self.message_box.value = html.escape(self.message)
            self.message_box.remove_class("wolt-monitor-error")
            self.message_box.add_class("wolt-monitor-stopped")
            self.message_box.layout.display = "block"
        else:
            self.message_box.remove_class("wolt-monitor-stopped")

    # -- one refresh ------------------------------------------------------------------------------------------
    @property
    def step(self) -> float:
        return max(self.base_step, self.window / MAX_POINTS)

    def fetch(self) -> tuple[MonitorData | None, bytes | None, str | None]:
        """Query the source and draw the PNG (no widget is touched: safe in a worker thread).

        A source that cannot answer becomes a message, never an exception: the panel must keep running.
        """
        from wolt_jupyter.monitoring import figures
        from wolt_jupyter.monitoring.crosscheck import checked_snapshot
        from wolt_jupyter.monitoring.data import MonitorData

        until = time.time()
        since = until - self.window
        try:
            data = checked_snapshot(
                self.source, self.name, since=since, until=until, step=self.step, reference=self.reference
            )
            error = None
        except Exception as exc:  # WoltError says it all; anything else is named, never a traceback
            error = (
                str(exc) if isinstance(exc, WoltError) else f"the source failed: {type(exc).__name__}: {exc}"
            )
            data = MonitorData.blank(self.name, since, until, self.step, self.source.name, error)
        try:
            image = figures.png(figures.render(data))
        except Exception as exc:  # a drawing bug must not take the panel down either
            image, error = None, f"cannot draw the charts: {type(exc).__name__}: {exc}"
        return data, image, error

    def show(self, data: MonitorData | None, image: bytes | None, error: str | None) -> None:
        """Put a fetched refresh into the widgets (call on the kernel's thread)."""
        self.data, self.refreshes = data, self.refreshes + 1
        if image is not None:
            self.png = image
            self.image.value = image
        self.message = error or (data.message if data is not None else None)
        self.message_box.value = html.escape(self.message) if self.message else ""
        if error or (data is not None and data.disagrees):
            self.message_box.add_class("wolt-monitor-error")
        else:
            self.message_box.remove_class("wolt-monitor-error")
        self.message_box.layout.display = "block" if self.message else "none"
        stamp = time.strftime("%H:%M:%S")
        auto = f", every {self.refresh_s:g}s" if self.running else ""
        self.header.value = html.escape(f"{self.name} · {self.source_line()} · updated {stamp}{auto}")
        self.summary_box.value = _summary_html(data)
        self._show_state()

    def source_line(self) -> str:
        """Which source the numbers come from, and what it is checked against."""
        line = f"source: {self.source.name}"
        if self.reference is not None:
            line += f" (checked against the {self.reference.name})"
        return line

    def refresh(self) -> MonitorData | None:
        """Refresh now, on the calling thread; the new data (None if the source failed)."""
        data, image, error = self.fetch()
        self.show(data, image, error)
        return None if error else data

    def refresh_soon(self) -> None:
        """Refresh off the kernel's thread when a loop runs (a click must not freeze the kernel), else now."""
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return

        async def once() -> None:
            result = await loop.run_in_executor(None, self.fetch)
            if not self._closed:
                self.show(*result)

        self._pending = loop.create_task(once())  # keep a reference: the loop holds tasks only weakly

    # -- auto-refresh -----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        # a cancelled task is done only after the loop's next turn; the panel is stopped at once
        return self.task is not None and not self.task.done() and not self.task_cancelled

    def start(self) -> bool:
        """Start auto-refresh on the running event loop (the kernel's); False where there is none."""
        import asyncio

        if self._closed or self.refresh_s <= 0 or self.running:
            return self.running
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # a plain script: one render, no background work
        self.task = loop.create_task(self._auto(), name=f"wolt-monitor-{self.name}")
        self.task_cancelled = False
        return True

    async def _auto(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(self.refresh_s)
            if self.state == "live" and deployment_state(self.name) != "live":
                self.stop(f"deployment {self.name!r} was undeployed")
                return
            data, image, error = await loop.run_in_executor(None, self.fetch)
            if self._closed:
                return
            self.show(data, image, error)

    def stop(self, reason: str | None = None) -> None:
        """Cancel auto-refresh (the panel stays as it is); ``reason`` is shown in the panel."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self.task_cancelled = True
        if reason:
            self.stopped_because = reason
        if not self._closed:
            self._show_state()

    def close(self) -> None:
        """Stop refreshing and close the widgets (and the source's connections)."""
        self._closed = True
        self.stop()
        for child in self._children():
            child.close()
        self.widget.close()
        self.source.close()
        if self.reference is not None:
            self.reference.close()

    def _children(self) -> list[Any]:
        out, todo = [], list(getattr(self.widget, "children", ()))
        while todo:
            child = todo.pop()
            out.append(child)
            todo.extend(getattr(child, "children", ()))
        return out

    # -- display ----------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        """The widget view, plus a PNG and text that nbconvert/HTML export keep where widgets cannot render."""
        bundle: dict[str, Any] = {}
        if not self._closed:
            bundle.update(self.widget._repr_mimebundle_(**kwargs) or {})
        if self.png is not None:
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        bundle["text/plain"] = self._text()
        return bundle

    def _text(self) -> str:
        lines = [f"wolt monitor: {self.name} ({self.source_line()})"]
        if self.message:
            lines.append(self.message)
        summary = _display_summary(self.data)
        if summary is not None:
            lines.append(summary.to_string(na_rep=""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self._text()


def _summary_html(data: MonitorData | None) -> str:
    s = _display_summary(data)
    return "" if s is None else s.to_html(na_rep="", classes="wolt-monitor-table", border=0)


def _display_summary(data: MonitorData | None) -> Any:
    """The summary in the units people read: milliseconds and percentages (the HTML and text views agree)."""
    if data is None or data.summary.empty:
        return None
    s = data.summary.copy()
    for q in ("p50", "p95", "p99"):
        s[q] = (s[q] * 1000).round(1)
    s = s.rename(columns={"p50": "p50 ms", "p95": "p95 ms", "p99": "p99 ms"})
    for c in ("share", "error_rate", "agreement"):
        s[c] = (s[c] * 100).round(1)
    s = s.rename(columns={"share": "share %", "error_rate": "errors %", "agreement": "agreement %"})
    s["requests"] = s["requests"].round(0).astype("Int64")  # a count reads "73", never "73.0"
    return s


def monitor(
    name: str,
    since: Any = "30m",
    step: Any = "15s",
    refresh: float | None = 10.0,
    source: MetricSource | None = None,
    revision: Any = SINCE_DEPLOY,
) -> MonitorPanel:
    """Live monitoring panel for deployment ``name``: renders once now, then every ``refresh`` seconds on
    the running kernel loop (0 or None: never). ``source`` defaults to Prometheus when
    ``WOLT_PROMETHEUS_URL`` is configured, else the response log. A name never deployed here that the
    source has no data for raises :class:`NotFound`."""
    from wolt_jupyter.monitoring.crosscheck import reference_for
    from wolt_jupyter.monitoring.responselog import ResponseLogSource
    from wolt_jupyter.monitoring.sources import reading_revisions, source_for

    source = reading_revisions(source or source_for(), name, revision)
    if isinstance(source, ResponseLogSource):
        from wolt_jupyter.deployments import flush_log

        flush_log(name)  # the read rule of read_responses(): what was answered is in the first drawing
    panel = MonitorPanel(name, source or source_for(), since=since, step=step, refresh=refresh)
    panel.state = deployment_state(name)
    panel.reference = reference_for(name, panel.source)
    data = panel.refresh()
    try:
        require_known(name, panel.state, data)
    except WoltError:
        panel.close()
        raise
    if panel.state == "removed":
        panel.stopped_because = f"deployment {name!r} was undeployed: its logged history, not refreshed"
        panel._show_state()
        return panel
    panel.start()
    panel._show_state()
    if panel.running:  # say so in the header at once
        panel.header.value = panel.header.value + html.escape(f", every {panel.refresh_s:g}s")
    return panel
