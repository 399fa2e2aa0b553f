"""The monitoring panel: widget + PNG fallback, messages instead of tracebacks, auto-refresh on the loop.

Here the panel reads a small response log written by the test (known contents, no server); the panel over
a real deployment and a real Prometheus is checked in ``test_sources.py``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import pandas as pd
import pytest

from wolt_jupyter.errors import InvalidArgument, NotFound
from wolt_jupyter.monitoring.sources import MetricSource, PrometheusSource, ResponseLogSource, parse_duration
from wolt_jupyter.widgets.monitor import MonitorPanel, monitor


def _rows(now: float) -> list[dict]:
    """'eta' over the last 5 minutes: main 60 fast requests, challenger 30 slow ones (3 failed), and a shadow
    copy of each main request that agrees with it."""
    rows = []
    for i in range(90):
        variant = "main" if i < 60 else "challenger"
        t = now - 280 + 3 * i
        base = {
            "id": f"r{i}",
            "time": t,
            "deployment": "eta",
            "model_name": "eta",
            "model_version": "1",
            "inputs": '{"f0":[1.0]}',
            "outputs": f'{{"predictions":[{i % 7}.5]}}',
            "error": None,
        }
        failed = variant == "challenger" and i % 10 == 0
        rows.append(
            {
                **base,
                "variant": variant,
                "shadow": False,
                "latency_ms": 2.0 if variant == "main" else 30.0,
                "status": 500 if failed else 200,
            }
        )
        if variant == "main":
            rows.append(
                {
                    **base,
                    "time": t + 0.01,
                    "variant": "shadow",
                    "shadow": True,
                    "latency_ms": 2.5,
                    "status": 200,
                }
            )
    return rows


def _write(url: str, rows: list[dict]) -> None:
    from wolt_jupyter.responses.store import ensure_schema, insert_rows, make_engine

    engine = make_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        insert_rows(conn, rows)
    engine.dispose()


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'eta.db'}"
    _write(url, _rows(time.time()))
    return url


def _png_size(b64: str) -> tuple[int, int]:
    from matplotlib.image import imread

    image = imread(io.BytesIO(base64.b64decode(b64)), format="png")
    return image.shape[1], image.shape[0]


def test_panel_is_a_widget_with_a_png_fallback(log_url: str) -> None:
    panel = monitor("eta", since="15m", step="30s", refresh=0, source=ResponseLogSource(log_url))
    try:
        assert panel.message is None and not panel.running and panel.refreshes == 1
        bundle = panel._repr_mimebundle_()
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
        width, height = _png_size(bundle["image/png"])
        assert width >= 600 and height >= 400
        assert bundle["image/png"] == base64.b64encode(panel.image.value).decode()  # the same picture
        assert "wolt monitor: eta" in bundle["text/plain"] and "challenger" in bundle["text/plain"]
        s = panel.data.summary
        assert s.loc["main", "requests"] == 60 and s.loc["challenger", "requests"] == 30
        assert s.loc["challenger", "error_rate"] == pytest.approx(0.1)
        assert s.loc["shadow", "agreement"] == 1.0
        assert s.loc["challenger", "p50"] == pytest.approx(0.030, rel=0.15)
        assert s.loc["main", "p50"] == pytest.approx(0.002, rel=0.15)
        html = panel.summary_box.value
        assert "wolt-monitor-table" in html and "challenger" in html and "shadow" in html
        assert "wolt-monitor" in panel.widget._dom_classes
        assert panel.message_box.layout.display == "none"
    finally:
        panel.close()


def test_range_selector_changes_the_window(log_url: str) -> None:
    panel = monitor("eta", since="30m", refresh=0, source=ResponseLogSource(log_url))
    try:
        assert list(panel.range.options) == ["5m", "15m", "30m", "1h", "6h", "24h"]
        first = panel.refreshes
        panel.range.value = "24h"
        assert panel.window == 86400 and panel.refreshes == first + 1
        assert panel.step == pytest.approx(86400 / 720)  # long windows get a coarser step
        assert panel.data.until - panel.data.since == pytest.approx(86400, abs=1)
        assert panel.data.summary.loc["main", "requests"] == 60
    finally:
        panel.close()


def test_unreachable_prometheus_is_a_message_not_a_traceback(closed_port_uri: str) -> None:
    panel = monitor("eta", refresh=0, source=PrometheusSource(closed_port_uri, timeout=1))
    try:
        assert panel.message and "cannot reach Prometheus" in panel.message
        assert "cannot reach Prometheus" in panel.message_box.value
        assert "wolt-monitor-error" in panel.message_box._dom_classes
        assert panel.message_box.layout.display == "block"
        bundle = panel._repr_mimebundle_()
        assert "cannot reach Prometheus" in bundle["text/plain"]
        assert _png_size(bundle["image/png"])[0] > 0  # the static export still shows the message
    finally:
        panel.close()


def _record(home: Path, name: str) -> None:
    """Record ``name`` as deployed here, as ``deployments.deploy`` does before the backend starts it."""
    from wolt_jupyter.revisions import DeploymentRecord, RevisionStore

    RevisionStore(home).save_record(DeploymentRecord(name=name, target="local"))


def test_empty_log_of_a_known_deployment_is_a_message(tmp_path: Path, wolt_home: Path) -> None:
    _record(wolt_home, "ghost")
    panel = monitor("ghost", refresh=0, source=ResponseLogSource(f"sqlite:///{tmp_path / 'none.db'}"))
    assert panel.message and "no response log for 'ghost' yet" in panel.message
    assert "wolt-monitor-error" not in panel.message_box._dom_classes  # not an error, just nothing yet
    panel.close()


def test_an_unknown_deployment_is_an_error_not_an_empty_panel(tmp_path: Path, wolt_home: Path) -> None:
    _record(wolt_home, "eta")

    async def scenario() -> None:
        with pytest.raises(NotFound, match=r"no deployment named 'nosuch'.*deployments: eta"):
            monitor("nosuch", refresh=0.2, source=ResponseLogSource(f"sqlite:///{tmp_path / 'none.db'}"))
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("wolt-monitor")]

    asyncio.run(scenario())


@pytest.mark.integration
def test_stop_button_undeploy_and_cleared_output_stop_the_task(log_url: str, wolt_home: Path) -> None:
    from wolt_jupyter.revisions import RevisionStore

    _record(wolt_home, "eta")

    async def scenario() -> None:
        panel = monitor("eta", since="15m", refresh=0.1, source=ResponseLogSource(log_url))
        assert panel.running and panel.stop_button.description == "stop"
        panel.stop_button.click()  # what the front end sends when the button is pressed
        assert not panel.running and panel.stop_button.description == "resume"
        assert "stopped from the panel" in panel.message_box.value
        await asyncio.sleep(0.3)
        stopped_at = panel.refreshes
        await asyncio.sleep(0.3)
        assert panel.refreshes == stopped_at
        panel.stop_button.click()  # resume
        assert panel.running and panel.stop_button.description == "stop"

        # the output is cleared: the front end reports its one view gone
        panel.widget._view_count = 1
        panel.widget._view_count = 0
        assert not panel.running and "output was cleared" in panel.message

        # undeployed while refreshing: the next tick sees it and says so
        panel.stop_button.click()
        assert panel.running
        RevisionStore(wolt_home).remove("eta")  # what deployments.undeploy does to the record
        deadline = time.monotonic() + 10
        while panel.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not panel.running and "deployment 'eta' was undeployed" in panel.message
        assert "wolt-monitor-stopped" in panel.message_box._dom_classes

        # reopened after the undeploy: the logged history, once, with no task
        again = monitor("eta", since="15m", refresh=0.1, source=ResponseLogSource(log_url))
        assert not again.running and again.task is None and again.data.summary.loc["main", "requests"] == 60
        assert "was undeployed" in again.message and again.stop_button.disabled

        panel.close_button.click()
        assert panel._closed and not panel.running
        again.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


class Counting(MetricSource):
    """Wraps a source, counting snapshots and the threads they ran on."""

    def __init__(self, inner: MetricSource) -> None:
        self.inner, self.name, self.calls, self.threads = inner, "counting", 0, set()

    def snapshot(self, deployment, *, since, until, step):
        import threading

        self.calls += 1
        self.threads.add(threading.get_ident())
        return self.inner.snapshot(deployment, since=since, until=until, step=step)


@pytest.mark.integration
def test_auto_refresh_is_a_task_on_the_loop_that_close_cancels(log_url: str) -> None:
    import threading

    source = Counting(ResponseLogSource(log_url))

    async def scenario() -> None:
        panel = monitor("eta", since="15m", refresh=0.2, source=source)
        assert panel.running and isinstance(panel.task, asyncio.Task)
        ticks = 0
        deadline = time.monotonic() + 30
        while panel.refreshes < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the loop stays free while the panel refreshes
            ticks += 1
        assert panel.refreshes >= 4, panel.refreshes
        assert ticks > 20  # other work ran between refreshes
        # queries and drawing ran off the loop thread
        assert threading.get_ident() in source.threads and len(source.threads) >= 2
        panel.stop()
        await asyncio.sleep(0)
        assert panel.task.cancelled() or panel.task.done()
        # the range selector refreshes off the loop's thread too
        before = panel.refreshes
        panel.range.value = "1h"
        assert panel.refreshes == before  # not yet: a task was scheduled instead of blocking the loop
        await asyncio.wait_for(panel._pending, 30)
        assert panel.refreshes == before + 1 and panel.data.until - panel.data.since == pytest.approx(3600)
        panel.close()
        done = panel.refreshes
        await asyncio.sleep(0.6)
        assert panel.refreshes == done and not panel.running

        # closing the widget itself (as the front end does) also stops the task
        other = monitor("eta", since="15m", refresh=0.2, source=source)
        assert other.running
        other.widget.close()
        await asyncio.sleep(0)
        assert not other.running
        other.close()
        # and close() on a running panel cancels its task
        third = monitor("eta", since="15m", refresh=0.2, source=source)
        assert third.running
        third.close()
        await asyncio.sleep(0)
        assert third.task.cancelled() and not third.running

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_plain_script_renders_once_and_starts_nothing(log_url: str) -> None:
    panel = monitor("eta", refresh=5, source=ResponseLogSource(log_url))
    assert panel.refreshes == 1 and panel.task is None and not panel.start()
    panel.stop()  # harmless without a task
    panel.close()


def test_arguments_are_checked() -> None:
    assert parse_duration("90s", "step") == 90 and parse_duration("1h", "since") == 3600
    assert parse_duration(30, "step") == 30
    for bad in ("soon", "-5m", 0, True):
        with pytest.raises(InvalidArgument, match="is not a duration"):
            parse_duration(bad, "since")
    with pytest.raises(InvalidArgument, match="refresh"):
        MonitorPanel("eta", ResponseLogSource("sqlite:///x.db"), refresh=-1)


def test_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, wolt_jupyter.monitoring.sources, wolt_jupyter.widgets.monitor\n"
        "print(sorted(m for m in ('pandas', 'matplotlib', 'ipywidgets', 'sqlalchemy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_figure_draws_with_no_data_at_all() -> None:
    from wolt_jupyter.monitoring import figures
    from wolt_jupyter.monitoring.data import MonitorData

    data = MonitorData.blank("eta", 0.0, 900.0, 15.0, "nowhere", "nothing here")
    png = figures.png(figures.render(data))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # a variant keeps its color whatever other variants come and go
    assert figures.colors_for(["b", "a"])["a"] == figures.colors_for(["a", "c"])["a"]


def test_a_source_bug_is_a_message_too() -> None:
    class Broken(MetricSource):
        name = "broken"

        def snapshot(self, deployment, *, since, until, step):
            raise KeyError("le")

    panel = monitor("eta", refresh=0, source=Broken())
    assert panel.message == "the source failed: KeyError: 'le'" and panel.png is not None
    panel.close()


@pytest.mark.integration
def test_in_a_real_kernel_it_refreshes_on_the_kernel_loop_and_leaves_a_png(log_url: str) -> None:
    """nbclient runs a real ipykernel: the outputs are what nbconvert/HTML export would keep."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        "from wolt_jupyter.widgets.monitor import monitor\n"
        "from wolt_jupyter.monitoring.sources import ResponseLogSource\n"
        f"panel = monitor('eta', since='15m', refresh=0.3, source=ResponseLogSource({log_url!r}))\n"
        "panel",
        "import asyncio, time\n"
        "t = time.perf_counter()\n"
        "for _ in range(100):\n"
        "    if panel.refreshes >= 3: break\n"
        "    await asyncio.sleep(0.1)\n"
        "print('running', panel.running, 'refreshes', panel.refreshes >= 3)",
        "panel.close()\nawait asyncio.sleep(0.05)\nprint('after close', panel.running)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    shown = nb.cells[0].outputs[0]
    assert shown.output_type == "execute_result"
    assert {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"} <= set(shown.data)
    assert _png_size(shown.data["image/png"])[0] >= 600
    assert "wolt monitor: eta" in shown.data["text/plain"]
    assert nb.cells[1].outputs[0].text.strip() == "running True refreshes True"
    assert nb.cells[2].outputs[0].text.strip() == "after close False"


@pytest.mark.integration
def test_response_log_source_reads_postgresql_the_same_way(tmp_path: Path) -> None:
    """The same SQLAlchemy Core query on the shared PostgreSQL store: the same numbers as on SQLite."""
    from pg_server import postgres_server

    now = time.time()
    rows = _rows(now)
    lite = f"sqlite:///{tmp_path / 'eta.db'}"
    _write(lite, rows)
    window = {"since": now - 600, "until": now, "step": 30.0}
    expected = ResponseLogSource(lite).snapshot("eta", **window)
    with postgres_server(tmp_path / "pg") as pg:
        _write(pg, rows)
        got = ResponseLogSource(pg).snapshot("eta", **window)
    assert got.message is None
    pd.testing.assert_frame_equal(got.summary, expected.summary)
    pd.testing.assert_frame_equal(got.requests, expected.requests)
    pd.testing.assert_frame_equal(got.latency["p99"], expected.latency["p99"])
    pd.testing.assert_frame_equal(got.agreement, expected.agreement)
