"""Retention by age and by size: only the oldest records go, and what went is counted."""

from __future__ import annotations

import numpy as np
import pytest

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.responses import ResponseWriter, read_frame
from wolt_jupyter.responses.footprint import footprint
from wolt_jupyter.responses.retention import Retention, log_size
from wolt_jupyter.responses.store import make_engine
from wolt_jupyter.units import parse_age, parse_bytes

T0 = 1_800_000_000.0  # a fixed clock: retention is given "now" explicitly


def _fill(url, make_record, n=600, batch=50, width=0):
    """``n`` records one second apart, written in batches (one chunk each: only a full batch or the explicit
    flush writes, never the timer, which a slow machine would let cut a batch), with two-row requests
    (``width``: and a vector of that many random floats a row, megabytes that do not compress)."""
    rng = np.random.default_rng(3)
    with ResponseWriter(url, batch_size=batch, flush_interval=60, maintenance_interval=3600) as w:
        for i in range(n):
            inputs = {"x1": [float(i), -float(i)]}
            if width:
                inputs["v"] = rng.normal(size=(2, width))
            w.submit(make_record(i, t=T0 + i, inputs=inputs, outputs={"y": [i, i]}))
            if i % batch == batch - 1:
                assert w.flush(30)
    return w


def _read(url, what):
    """``what(conn, "dep")`` on a connection of its own."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return what(conn, "dep")
    finally:
        engine.dispose()


def _footprint(url):
    return _read(url, footprint)


def _state(url):
    return _read(url, log_size)


def test_age_removes_exactly_the_records_older_than_the_limit(store_url, make_record, count_rows):
    w = _fill(store_url, make_record)
    assert count_rows(store_url) == 600
    before = read_frame("dep", url=store_url)
    # now = T0 + 1000, max age 500 s: records with time < T0 + 500 go (500 of them); one chunk straddles the cut
    writer = ResponseWriter(store_url, retention=Retention(max_age=500.0), maintenance_interval=3600)
    writer._deployments.add("dep")
    done = writer.maintain(now=T0 + 1000.0)
    writer.close()
    after = read_frame("dep", url=store_url)
    assert done["removed"] == 500 and writer.stats()["removed"] == 500
    assert count_rows(store_url) == 100
    assert after["time"].min().timestamp() == pytest.approx(T0 + 500)
    # the rows kept are exactly the newest ones, unchanged
    kept = before[before["time"].map(lambda t: t.timestamp()) >= T0 + 500].reset_index(drop=True)
    assert after[["id", "input.x1", "output.y"]].equals(kept[["id", "input.x1", "output.y"]])
    state = _state(store_url)
    assert state["records"] == 100 and state["removed_records"] == 500
    assert state["removed_by_age"] == 500 and state["removed_by_size"] == 0
    assert state["records"] + state["removed_records"] == w.stats()["written"]


def test_size_removes_the_oldest_until_the_log_fits(store_url, make_record, count_rows):
    w = _fill(store_url, make_record, n=3000, batch=250, width=150)  # 7 MB: many times a 64 KiB page
    compactor = ResponseWriter(store_url, retention=Retention(), maintenance_interval=3600)
    compactor._deployments.add("dep")
    assert compactor.maintain(now=T0 + 4000.0)["compacted"] == 12  # the 12 small chunks become one
    compactor.close()
    before = _footprint(store_url)
    # the limit counts every byte on disk (SQLite: its pages and WAL): a third of the records must go
    limit = before.live_total - before.records + before.records // 3
    writer = ResponseWriter(store_url, retention=Retention(max_bytes=limit), maintenance_interval=3600)
    writer._deployments.add("dep")
    done = writer.maintain(now=T0 + 4000.0)
    writer.close()
    state = _state(store_url)
    after = read_frame("dep", url=store_url)
    assert 0 < state["bytes"] < before.records
    # within the limit, and the file gave the freed pages back (it shrank: not only "free inside")
    assert _footprint(store_url).live_total <= limit and _footprint(store_url).total <= limit
    assert (
        done["removed"] > 0 and state["removed_by_size"] == done["removed"] and state["removed_by_age"] == 0
    )
    assert state["records"] + state["removed_records"] == w.stats()["written"] == 3000
    assert count_rows(store_url) == state["records"] > 0
    # only the oldest went: what is left is one contiguous run ending at the newest record
    ids = sorted(int(i.split("-")[1]) for i in after["id"].unique())
    assert ids == list(range(3000 - len(ids), 3000))


def test_background_pass_runs_without_being_asked(tmp_path, make_record, count_rows):
    import time

    url = f"sqlite:///{tmp_path / 'bg.db'}"
    now = time.time()
    with ResponseWriter(url, retention=Retention(max_age=60.0), maintenance_interval=0.2) as w:
        for i in range(20):
            w.submit(make_record(i, t=now - 3600 + i))  # an hour old: beyond the limit
        for i in range(20, 30):
            w.submit(make_record(i, t=now))
        deadline = time.monotonic() + 30
        while w.stats()["removed"] < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert w.stats()["removed"] == 20
    assert count_rows(url) == 10


def test_spec_and_settings_parse_sizes_and_ages():
    assert parse_bytes("5GB") == 5 * 10**9 and parse_bytes("2GiB") == 2 * 2**30 and parse_bytes(100) == 100
    assert parse_age("14d") == 14 * 86400 and parse_age("30m") == 1800
    r = Retention.of({"max_age": "1d", "max_bytes": "10MB"})
    assert (r.max_age, r.max_bytes) == (86400.0, 10**7)
    assert r.rollup_max_age >= r.max_age  # the panel's rollup is kept at least as long
    with pytest.raises(InvalidArgument, match="max_bytes"):
        Retention.of({"max_bytes": "lots"})
    with pytest.raises(InvalidArgument, match=r"unknown logging\.retention"):
        Retention.of({"keep": "1d"})


def test_settings_default_applies_when_the_spec_says_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WOLT_JUPYTER_HOME", str(tmp_path))
    monkeypatch.setenv("WOLT_RESPONSE_MAX_AGE", "2h")
    monkeypatch.setenv("WOLT_RESPONSE_MAX_BYTES", "none")
    r = Retention.of(None)
    assert r.max_age == 7200 and r.max_bytes is None
    assert Retention.of({"max_bytes": "1GB"}).max_bytes == 10**9  # the spec wins


def test_logs_of_undeployed_deployments_are_trimmed_too(tmp_path, make_record, count_rows):
    """No writer of its own runs for an undeployed deployment: the runtimes of the state dir trim its log,
    by the retention of its last spec. A deployed one is left to its own runtime."""
    from wolt_jupyter.responses.store import default_store_url
    from wolt_jupyter.responses.undeployed import trim_undeployed
    from wolt_jupyter.revisions import DeploymentRecord, RevisionStore
    from wolt_jupyter.spec import DeploymentSpec

    home = tmp_path / "home"
    store = RevisionStore(home)
    urls = {}
    for name in ("gone", "kept"):
        spec = DeploymentSpec.from_dict(
            {
                "name": name,
                "variants": [{"name": "main", "model": "models:/m/1", "traffic": 100}],
                "logging": {"retention": {"max_age": "1h"}},
            }
        )
        urls[name] = default_store_url(name, home)
        store.save_record(
            DeploymentRecord(name, "local", revision=store.add_revision(spec), response_store=urls[name])
        )
        with ResponseWriter(urls[name], maintenance_interval=3600) as w:
            for i in range(30):  # 20 older than the hour, 10 younger
                w.submit(make_record(i, t=T0 + i - (7200 if i < 20 else 0), deployment=name))
    store.remove("gone")  # undeployed: its record set aside, its revisions and log kept
    # a runtime started by hand (no record ever): not an undeployed deployment, its own writer keeps it
    urls["manual"] = default_store_url("manual", home)
    store.dir("manual").mkdir(parents=True)
    with ResponseWriter(urls["manual"], maintenance_interval=3600) as w:
        for i in range(5):
            w.submit(make_record(i, t=T0 - 40 * 86400, deployment="manual"))  # beyond the default 14 days
    removed = trim_undeployed(home, now=T0 + 60)
    assert removed == {"gone": 20}
    assert count_rows(urls["gone"]) == 10 and count_rows(urls["kept"]) == 30 and count_rows(urls["manual"]) == 5
