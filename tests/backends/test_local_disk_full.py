"""A full disk under a real local deployment and real HTTP load: its state dir is a small tmpfs, filled while
clients send requests, then given its space back. Afterwards, and again after a SIGKILL and restart, every
request the clients got a 200 for is in the response log, but for the rows ``logging.on_full: serve`` said it
could not log (counted, exactly); ``refuse`` answered 503 instead and lost none. Needs root (mount), as CI has."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_support import Load, is_ready, runtime_pid, supervisor_state
from helpers import FEATURES, fill_disk, tmpfs

# a full disk is judged by timing (the runtime sees it, counts, recovers): alone, not beside another worker
pytestmark = pytest.mark.serial

HOME_SIZE = "48m"  # the MLflow store, the model and the runtime's files take ~6 MB of it


@pytest.fixture
def small_home(wolt_home: Path) -> Iterator[Path]:
    """The whole state dir on a size-limited tmpfs; what the test deployed is undeployed before unmounting."""
    with tmpfs(wolt_home, HOME_SIZE):
        try:
            yield wolt_home
        finally:
            from wolt_jupyter import deployments

            (wolt_home / "ballast").unlink(missing_ok=True)
            for name in deployments.revision_store().names():
                with contextlib.suppress(Exception):
                    deployments.undeploy(name)


def _log_state(name: str) -> dict:
    from wolt_jupyter.deployments import backend

    return backend("local").log_state(name)


def _wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _refused_headers(url: str, name: str) -> tuple[int, dict[str, str], dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [0.5]} for f in FEATURES]}
    try:
        conn.request(
            "POST", f"/v2/models/{name}/infer", json.dumps(body), {"content-type": "application/json"}
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("policy", ["serve", "refuse"])
def test_a_full_disk_under_load_loses_no_acknowledged_row(small_home, models, policy) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter.responses.store import WAL_BYTES

    name = f"full-{policy}"
    spec = {
        "name": name,
        "variants": [{"name": "main", "model": models["v1"], "traffic": 100}],
        "logging": {"on_full": policy},
    }
    d = deployments.deploy(name, spec=spec)
    wal = small_home / "responses" / f"{name}.db-wal"
    with Load(d.url, name, concurrency=4) as load:
        load.wait_for(400)
        filled = time.monotonic()
        fill_disk(small_home / "ballast")
        _wait(lambda: _log_state(name).get("full"), "the runtime to see the full disk")
        n = len(load.outcomes)
        load.wait_for(n + 400)  # requests while the disk is full
        card = deployments.log_summary(name)
        with urllib.request.urlopen(f"{d.url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        probe = _refused_headers(d.url, name) if policy == "refuse" else None
        freed = time.monotonic()
        (small_home / "ballast").unlink()
        _wait(lambda: not _log_state(name).get("full"), "the log to write again")
        recovered = time.monotonic()
        n = len(load.outcomes)
        load.wait_for(n + 400)
    outcomes = load.outcomes
    counted = _log_state(name)  # the runtime's counters over the whole episode
    acked = {o.id for o in outcomes if o.status == 200}
    # answered before the disk filled, or well after the log wrote again (a client notes its outcome a
    # moment after the runtime spooled it)
    must_log = {o.id for o in outcomes if o.status == 200 and (o.t < filled or o.t > recovered + 0.5)}
    statuses = {s: sum(1 for o in outcomes if o.status == s) for s in {o.status for o in outcomes}}

    # recovered by itself: what was acknowledged before the disk filled and after space returned is read back
    # (rows the database refused waited in the spool and were replayed) without a restart
    logged = set(deployments.read_responses(name, revision="all")["id"])
    assert must_log <= logged, f"{len(must_log - logged)} acknowledged rows missing before any restart"

    victim = runtime_pid(small_home, name)
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: runtime_pid(small_home, name) != victim and is_ready(d.url), "the restart")
    frame = deployments.read_responses(name, revision="all")
    logged = set(frame["id"])
    missing = acked - logged
    print(
        f"\non_full={policy}: {statuses}; unlogged {counted.get('unlogged')}, refused "
        f"{counted.get('refused')}; full {freed - filled:.1f} s; {len(acked)} acknowledged, "
        f"{len(missing)} not logged after SIGKILL and restart; deferred to the spool {counted.get('deferred')}, "
        f"replayed {counted.get('replayed')}; WAL {wal.stat().st_size / 1e6:.2f} MB; "
        f"card: {card.short()}"
    )
    assert len(frame) == len(logged)  # nothing replayed twice
    assert must_log <= logged
    assert wal.stat().st_size <= WAL_BYTES + (1 << 20)  # bounded: a checkpoint every 4 MiB, then cut back
    assert card.warning is not None and "is full" in card.warning
    assert card.on_disk is not None and card.on_disk > card.bytes  # the WAL and spool are counted too
    assert f'wolt_response_log_full{{deployment="{name}"}} 1' in metrics  # said on /metrics too
    counter = "unlogged" if policy == "serve" else "refused"
    assert f'wolt_response_log_{counter}_total{{deployment="{name}"}} 0' not in metrics
    if policy == "serve":
        assert set(statuses) == {200}, statuses  # every request answered
        # exactly the rows it said it could not log are missing: counted, one each
        assert 0 < len(missing) == counted["unlogged"] == counted["dropped"], (len(missing), counted)
        assert counted["refused"] == 0 and "answered without a record" in card.short()
    else:
        assert not missing, f"{len(missing)} answered requests have no record"
        assert statuses.get(503, 0) > 0 and set(statuses) <= {200, 503}, statuses
        assert counted["refused"] == statuses[503] + 1 and counted["unlogged"] == 0  # + 1: the probe
        assert "refused" in card.short()
        status, headers, doc = probe
        assert status == 503 and headers.get("retry-after") and "disk is full" in doc["error"]


def test_a_runtime_killed_while_the_disk_is_full_comes_back_and_loses_nothing(small_home, models) -> None:
    """The supervisor keeps supervising on a full disk (it cannot save its state or note the crash), the
    restarted runtime serves (refusing what it cannot log) and, once space returns, writes what it kept."""
    from wolt_jupyter import deployments

    name = "killed-full"
    spec = {
        "name": name,
        "variants": [{"name": "main", "model": models["v1"], "traffic": 100}],
        "logging": {"on_full": "refuse"},
    }
    d = deployments.deploy(name, spec=spec)
    with Load(d.url, name, concurrency=4) as load:
        load.wait_for(300)
        fill_disk(small_home / "ballast")
        _wait(lambda: _log_state(name).get("full"), "the runtime to see the full disk")
        victim = runtime_pid(small_home, name)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: is_ready(d.url) and _log_state(name).get("logging"), "the restart on a full disk")
        restarted = _log_state(name)
        (small_home / "ballast").unlink()
        _wait(lambda: not _log_state(name).get("full", True), "the log to write again")
        n = len(load.outcomes)
        load.wait_for(n + 300)
    acked = {o.id for o in load.outcomes if o.status == 200}
    logged = set(deployments.read_responses(name, revision="all")["id"])
    assert acked and not acked - logged, f"{len(acked - logged)} acknowledged rows lost"
    _wait(lambda: supervisor_state(small_home, name).get("restarts") == 1, "the supervisor's state saved")
    assert restarted["written"] + restarted["deferred"] + restarted["refused"] > 0
