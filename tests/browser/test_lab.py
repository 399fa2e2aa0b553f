"""The lab extension and the notebook widgets in a real browser against a real ``jupyter lab``: the sidebar,
the deploy dialog (A/B + shadow, then routed over HTTP), a traffic change from the UI, the deployment view's
charts and their revision marks after a redeploy, and the monitor panel's stop control. The tests run in order and build on each other's deployments."""

from __future__ import annotations

import itertools
import re
import statistics
import time

import nbformat
import pandas as pd
import pytest

from wolt_jupyter import deployments

ROWS = pd.DataFrame([[1.0, 2.0, 3.0]] * 40, columns=["f0", "f1", "f2"])


def open_sidebar(page) -> object:
    """The tab toggles the sidebar, and the workspace may restore it open just after a look found it closed
    (a click then closes it): look again after each click."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    sidebar = page.locator("#wolt-sidebar")
    for _ in range(4):
        if sidebar.is_visible():
            break
        page.locator('.jp-SideBar [data-id="wolt-sidebar"]').click()
        try:
            sidebar.wait_for(state="visible", timeout=5_000)
        except PlaywrightTimeout:
            continue
    sidebar.wait_for(state="visible")
    return sidebar


def ensure_deployed(name: str) -> None:
    if name not in deployments.revision_store().names():
        deployments.deploy(name, "models:/eta@champion")


def weights_of(name: str) -> dict[str, int | None]:
    return {v["name"]: v["traffic"] for v in deployments.get(name).variants}


def test_sidebar_lists_the_registry_and_a_live_deployment(page, lab, screenshots) -> None:
    ensure_deployed("eta")
    sidebar = open_sidebar(page)
    model = sidebar.locator('.wolt-model[data-model="eta"]')
    model.wait_for()
    assert model.locator(".wolt-version").count() == 2
    assert model.locator('.wolt-version[data-version="1"] .wolt-badge').inner_text() == "@champion"
    item = sidebar.locator('.wolt-deployment[data-deployment="eta"]')
    item.locator(".wolt-status-ready").wait_for()
    assert "rev 1" in item.locator(".wolt-meta").inner_text()
    assert item.locator('.wolt-traffic-segment[data-variant="main"]').get_attribute("style") == "width: 100%;"
    sidebar.locator(".wolt-filter").fill("nomatch")
    assert sidebar.locator(".wolt-model").count() == 0
    sidebar.locator(".wolt-filter").fill("")
    page.screenshot(path=screenshots / "sidebar.png")
    # the extension is in the palette and the launcher too
    assert page.locator('.jp-LauncherCard[title*="Deploy registered model versions"]').count() == 1


def test_deploy_dialog_deploys_an_ab_and_shadow_split_that_routes(page, lab, screenshots) -> None:
    sidebar = open_sidebar(page)
    sidebar.locator(".wolt-button-primary").click()
    dialog = page.locator(".jp-Dialog .wolt-deploy-dialog")
    dialog.wait_for()
    dialog.locator(".wolt-deploy-name").fill("abtest")
    dialog.locator(".wolt-add-variant").click()
    dialog.locator('.wolt-variant-row[data-row="1"] .wolt-variant-version').select_option("2")
    dialog.locator('input[aria-label="percent for challenger"]').fill("30")
    assert dialog.locator('input[aria-label="percent for main"]').input_value() == "70"  # the sum stays 100
    dialog.locator(".wolt-add-shadow").click()
    dialog.locator('.wolt-variant-row[data-row="2"] .wolt-variant-version').select_option("2")
    snippet = dialog.locator(".wolt-snippet-preview").inner_text()
    assert snippet == (
        "%wolt_deploy abtest --model models:/eta@champion --ab challenger:models:/eta/2=30 "
        "--shadow shadow:models:/eta/2"
    )
    dialog.locator(".wolt-preview-button").click()  # a dry run: what would run, nothing changes
    dialog.locator(".wolt-preview", has_text="abtest").wait_for(timeout=60_000)
    assert "error" not in dialog.locator(".wolt-preview").inner_text()[:10]
    assert "abtest" not in deployments.revision_store().names()
    dialog.locator(".wolt-preview").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "deploy-dialog.png")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    sidebar.locator('.wolt-deployment[data-deployment="abtest"] .wolt-status-ready').wait_for(timeout=120_000)
    assert weights_of("abtest") == {"main": 70, "challenger": 30, "shadow": None}
    answered = deployments.predict("abtest", ROWS, per_row=True)
    assert set(answered["variant"]) == {"main", "challenger"}  # 40 rows at 70/30: both arms answer
    log = deployments.read_responses("abtest")
    assert "shadow" in set(log["variant"])  # the shadow saw copies
    page.screenshot(path=screenshots / "sidebar-abtest.png")


def test_changing_traffic_in_the_ui_changes_routing(page, lab, screenshots) -> None:
    sidebar = open_sidebar(page)
    item = sidebar.locator('.wolt-deployment[data-deployment="abtest"]')
    item.locator("button", has_text="Traffic…").click()
    page.locator('.jp-Dialog input[aria-label="percent for main"]').fill("0")
    assert page.locator('.jp-Dialog input[aria-label="percent for challenger"]').input_value() == "100"
    page.screenshot(path=screenshots / "traffic-dialog.png")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    item.locator(".wolt-meta", has_text="rev 2").wait_for(timeout=120_000)
    assert weights_of("abtest") == {"main": 0, "challenger": 100, "shadow": None}
    answered = deployments.predict("abtest", ROWS, per_row=True)
    assert set(answered["variant"]) == {"challenger"}


def test_deployment_view_draws_series_after_traffic(page, lab, screenshots) -> None:
    deployments.predict("abtest", ROWS, per_row=True)
    sidebar = open_sidebar(page)
    sidebar.locator('.wolt-deployment[data-deployment="abtest"] .wolt-deployment-name').click()
    view = page.locator(".wolt-deployment-view")
    view.wait_for()
    line = view.locator('figure[data-chart="requests/s"] polyline[data-series="challenger"]')
    deadline = time.monotonic() + 90
    while line.count() == 0 and time.monotonic() < deadline:  # the view polls; the log is written in batches
        view.locator(".wolt-view-header .wolt-button").click()
        page.wait_for_timeout(2000)
    assert line.count() == 1
    assert len(line.get_attribute("points").split()) >= 2
    assert view.locator('.wolt-summary tr[data-variant="challenger"]').count() == 1
    # the timeline reads the update service's history through the server (no service started here)
    view.locator(".wolt-empty", has_text="No decisions yet").wait_for(timeout=30_000)
    page.screenshot(path=screenshots / "deployment-view.png")


# one render of a chart, read in one go: the view re-renders at every poll and its time axis moves with it
CHART_STATE = """figure => {
  const zero = Number(figure.querySelector('line.wolt-axis').getAttribute('y1'));
  const marks = {};
  for (const g of figure.querySelectorAll('.wolt-revision-mark')) {
    marks[g.dataset.revision] = { x: Number(g.querySelector('line').getAttribute('x1')), cls: g.getAttribute('class') };
  }
  const lines = {};
  for (const l of figure.querySelectorAll('polyline')) {
    const points = l.getAttribute('points').trim().split(/\\s+/).map(p => p.split(',').map(Number));
    lines[l.dataset.series] = { points, cls: l.getAttribute('class') };
  }
  return { zero, marks, lines };
}"""


def _chart(chart) -> dict:
    return chart.evaluate(CHART_STATE)


def _answered(state: dict, series: str) -> list[float]:
    """The x of each point of a line above zero (buckets where the series answered requests)."""
    return [x for x, y in state["lines"][series]["points"] if y < state["zero"] - 0.05]


def _bucket_px(state: dict, series: str) -> float:
    """The width of one time bucket on the chart (the median spacing: the window's edges clip theirs): a
    point sits at its bucket's start, up to this before anything that happened inside it."""
    xs = sorted(x for x, _ in state["lines"][series]["points"])
    return statistics.median(b - a for a, b in itertools.pairwise(xs)) + 0.5


def test_deployment_view_marks_a_redeploy_and_starts_new_series(page, lab, screenshots) -> None:
    """abtest so far: r1 the A/B split (main 70 / challenger 30, shadow), r2 its traffic change (same models).
    Redeployed with main alone (other models) it is r3: the view shows r3's series by default, marks every
    revision's start on the time axis (r2 lighter: it only changed traffic), names the current revision, and
    with "all revisions" draws a series per run that ends or begins at the redeploy."""
    deployments.deploy("abtest", "models:/eta/1")
    assert deployments.get("abtest").revision == 3
    deployments.predict("abtest", ROWS, per_row=True)
    sidebar = open_sidebar(page)
    sidebar.locator('.wolt-deployment[data-deployment="abtest"] .wolt-deployment-name').click()
    view = page.locator(".wolt-deployment-view")
    view.wait_for()
    view.locator(".wolt-range").select_option("5m")
    chart = view.locator('figure[data-chart="requests/s"]')
    line = chart.locator('polyline[data-series="main"]')
    deadline = time.monotonic() + 90
    while line.count() == 0 and time.monotonic() < deadline:  # the runtime writes its log in batches
        view.locator(".wolt-view-header .wolt-button").click()
        page.wait_for_timeout(2000)
    # since the last deploy: r3 alone, one series under the variant's own name
    state = _chart(chart)
    assert list(state["lines"]) == ["main"]
    assert view.locator(".wolt-current-revision").get_attribute("data-revision") == "3"
    assert view.locator(".wolt-revision-shown").inner_text() == "showing revision 3 (since the last deploy)"
    marks = state["marks"]
    assert {"2", "3"} <= set(marks) <= {"1", "2", "3"}  # r1 began a few minutes ago: maybe before the window
    assert "wolt-revision-mark-same" in marks["2"]["cls"]  # a traffic change: the same series continue
    assert "wolt-revision-mark-same" not in marks["3"]["cls"]  # a redeploy: new series
    assert marks.get("1", {"x": 0})["x"] < marks["2"]["x"] < marks["3"]["x"]
    # r3's requests begin at its mark
    assert min(_answered(state, "main")) >= marks["3"]["x"] - _bucket_px(state, "main")
    chips = {c.split()[0]: c for c in view.locator(".wolt-revision-chip").all_inner_texts()}
    assert list(chips) == [f"r{r}" for r in sorted(marks)] and "same models" in chips["r2"]
    # the view saw a revision the sidebar's list did not know: both now show what r3 serves
    view.locator('.wolt-traffic-segment[data-variant="main"][style="width: 100%;"]').wait_for(timeout=30_000)
    sidebar.locator('.wolt-deployment[data-deployment="abtest"] .wolt-meta', has_text="rev 3").wait_for()
    page.screenshot(path=screenshots / "deployment-view-redeploy.png")

    view.locator(".wolt-revision-select").select_option("all")
    chart.locator('polyline[data-series="main (r3)"]').wait_for(timeout=30_000)
    state = _chart(chart)
    series, r3 = state["lines"], state["marks"]["3"]["x"]
    assert set(series) == {"main (r1)", "challenger (r1)", "main (r3)"}
    assert "wolt-line-earlier" in series["challenger (r1)"]["cls"]  # ended runs are dashed
    assert "wolt-line-earlier" not in series["main (r3)"]["cls"]
    # a variant keeps its colour in every run, also one the current revision no longer serves
    stroke = {n: re.search(r"wolt-stroke-\d", line["cls"])[0] for n, line in series.items()}
    assert stroke["main (r1)"] == stroke["main (r3)"] != stroke["challenger (r1)"]
    before = _answered(state, "main (r1)")
    assert before and max(before) < r3  # r1's main answered nothing after the redeploy: r3's are apart
    assert min(_answered(state, "main (r3)")) >= r3 - _bucket_px(state, "main (r3)")
    assert view.locator(".wolt-revision-shown").inner_text().startswith("showing every revision")
    assert {row.get_attribute("data-variant") for row in view.locator(".wolt-summary tbody tr").all()} >= {
        "main (r1)",
        "main (r3)",
    }
    page.screenshot(path=screenshots / "deployment-view-all-revisions.png")


def _notebook(lab, name: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab.root / name)


def _run_cell(page, index: int) -> object:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell


def _printed(cell) -> str:
    out = cell.locator(".jp-OutputArea-output")
    out.first.wait_for(timeout=60_000)
    return out.first.inner_text().strip()


def test_monitor_panel_stop_control_and_cleared_output_stop_its_task(page, lab, screenshots) -> None:
    ensure_deployed("eta")
    check = "print('running', panel.running, '|', panel.stopped_because)"
    _notebook(
        lab,
        "monitor.ipynb",
        [
            "import wolt_jupyter\npanel = wolt_jupyter.monitor('eta', since='5m', refresh=1)\npanel",
            check,
            check,
        ],
    )
    page.goto(lab.page_url("lab/tree/monitor.ipynb"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator(".jp-StatusBar-TextItem", has_text="Idle").wait_for(timeout=60_000)  # the kernel is up
    first = _run_cell(page, 0)
    stop = first.locator(".wolt-monitor-stop")
    stop.wait_for(timeout=60_000)
    first.locator(".wolt-monitor-figure").wait_for()
    page.screenshot(path=screenshots / "monitor-panel.png")
    stop.click()
    first.locator(".wolt-monitor-message", has_text="stopped from the panel").wait_for()
    assert _printed(_run_cell(page, 1)) == "running False | stopped from the panel"

    stop.click()  # resume, then clear every output: the front end drops the view, the kernel stops the task
    first.locator(".wolt-monitor-stop", has_text="stop").wait_for()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Clear Outputs of All Cells")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('.jp-Notebook .wolt-monitor').length === 0")
    page.wait_for_timeout(1000)
    assert _printed(_run_cell(page, 2)) == "running False | its output was cleared"
    page.screenshot(path=screenshots / "monitor-cleared.png")


@pytest.fixture(autouse=True)
def _failure_screenshot(request, page, screenshots):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        page.screenshot(path=screenshots / f"FAILED-{request.node.name}.png")


def test_the_deployment_view_pauses_and_aborts_a_rollout(page, lab, screenshots) -> None:
    """A rollout in flight (the update service in a thread of this test process, the lab in its own): the
    deployment view shows its step and the commands that apply; Pause pauses it, asked as the lab's user, and
    Abort, once confirmed, leaves the champion alone."""
    import threading

    from wolt_jupyter._mlflow import mlflow_client
    from wolt_jupyter.updater.policy import Policy
    from wolt_jupyter.updater.run import serve

    deployments.deploy("steer", "models:/eta@champion")
    mlflow_client().set_registered_model_alias("eta", "challenger", "2")
    canary = [{"weight": 20, "bake": "10m"}, {"weight": 100, "bake": "10m"}]
    policy = {"deployment": "steer", "watch": {"model": "eta", "alias": "challenger", "poll_seconds": 0.3},
              "rollout": {"shadow": False, "canary": canary, "analysis_interval": 0.5}}  # fmt: skip
    stop = threading.Event()
    service = threading.Thread(target=serve, args=(Policy.load(policy), stop), kwargs={"mlflow": False})
    service.start()
    try:
        deadline = time.monotonic() + 120
        while weights_of("steer") != {"main": 80, "candidate": 20}:
            assert time.monotonic() < deadline, weights_of("steer")
            time.sleep(0.2)
        sidebar = open_sidebar(page)
        name = sidebar.locator('.wolt-deployment[data-deployment="steer"] .wolt-deployment-name')
        name.wait_for(timeout=60_000)  # the sidebar polls the deployments
        name.click()
        view = page.locator("#wolt-deployment-steer")
        controls = view.locator('.wolt-rollout[data-step="canary 20%"]')
        controls.wait_for(timeout=60_000)
        assert "version 2 at canary 20%: in progress" in controls.inner_text()
        assert [b.inner_text() for b in controls.locator("button").all()] == ["Pause", "Promote now", "Abort"]
        controls.locator(".wolt-rollout-pause").click()
        paused = view.locator('.wolt-rollout[data-paused="true"]')
        paused.wait_for(timeout=60_000)
        assert "paused by hand" in paused.inner_text() and "via the lab" in paused.inner_text()
        assert [b.inner_text() for b in paused.locator("button").all()] == ["Resume", "Promote now", "Abort"]
        page.screenshot(path=screenshots / "rollout-paused.png")
        paused.locator(".wolt-rollout-abort").click()
        page.locator(".jp-Dialog .jp-mod-accept").click()  # "The champion serves steer alone now; …"
        view.locator(".wolt-rollout", has_text="rejected").wait_for(timeout=60_000)
        assert weights_of("steer") == {"main": 100}
    finally:
        stop.set()
        service.join(60)
