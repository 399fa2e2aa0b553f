"""A full disk under the log: counted drops and a readable message, never an exception in the server; the WAL
bounded, every byte counted, nothing acknowledged lost, and writes resuming by themselves when space returns.

Real size-limited file systems (tmpfs with ``size=``: writes past it fail with ENOSPC); mounting needs root,
as CI has."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wolt_jupyter.responses import ResponseWriter, read_frame

from helpers import fill_disk, tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB file system: as on a full laptop disk."""
    with tmpfs(tmp_path / "small", "3m") as mount:
        yield mount


@pytest.fixture
def disk_8m(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "8m") as mount:
        yield mount


@pytest.mark.integration
def test_full_disk_counts_drops_and_says_so(small_disk, make_record, caplog):
    rng = np.random.default_rng(7)
    url = f"sqlite:///{small_disk / 'responses' / 'dep.db'}"
    submitted = accepted = 0
    with caplog.at_level(logging.WARNING):
        w = ResponseWriter(
            url, spool_dir=small_disk / "spool", retries=1, retry_backoff=0.01, maintenance_interval=3600
        )
        for batch in range(60):  # ~ 60 x 20 x 2,000 random floats: far more than 3 MiB
            records = [
                make_record(batch * 20 + i, inputs={"x": rng.normal(size=2000).tolist()}) for i in range(20)
            ]
            submitted += len(records)
            accepted += w.submit_many(records)  # the runtime's call: must never raise
            w.flush(30)
        assert w.disk()["free"] < 0.05 * w.disk()["total"]
        warning = (
            w.warning
        )  # while the disk is full (closing deletes settled spool files: space may come back)
        stats = w.close()
    assert stats["dropped"] > 0, stats
    # every record is accounted for: written, dropped (counted) or left in the spool for a replay
    assert stats["written"] + stats["dropped"] + stats["deferred"] == submitted
    assert accepted == stats["written"] + stats["deferred"]
    assert warning is not None and "full" in warning and str(small_disk) in warning
    assert "disk under" in caplog.text and "Traceback" not in caplog.text
    assert caplog.text.count("is full") < 10  # said once per episode, not once per dropped batch
    # what was written reads back
    assert read_frame("dep", url=url, columns=["id"])["id"].nunique() == stats["written"]


@pytest.mark.integration
def test_the_wal_stays_within_its_budget_under_load(tmp_path, make_record):
    """64 KiB pages x the default 1,000-page checkpoint let the WAL grow to 64 MB and stay that size; a
    checkpoint every WAL_BYTES keeps it there, and the file is cut back to it."""
    from wolt_jupyter.responses.store import WAL_BYTES

    url = f"sqlite:///{tmp_path / 'log.db'}"
    wal = tmp_path / "log.db-wal"
    rng = np.random.default_rng(1)
    largest, stop = 0, threading.Event()

    def watch() -> None:
        nonlocal largest
        while not stop.is_set():
            with contextlib.suppress(OSError):
                largest = max(largest, wal.stat().st_size)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ResponseWriter(url, batch_size=200, maintenance_interval=3600) as w:
            for batch in range(60):  # ~ 12,000 records of 100 random floats: ~10 MB of chunks
                for i in range(200):
                    w.submit(make_record(batch * 200 + i, inputs={"x": rng.normal(size=(1, 100))}))
                w.flush(30)
            on_disk = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    finally:
        stop.set()
        watcher.join()
    assert on_disk["log.db"] > 8_000_000  # the records went on into the database: checkpoints ran
    assert on_disk["log.db-wal"] <= WAL_BYTES + (1 << 20)  # the budget, plus the last transaction
    assert largest <= 2 * WAL_BYTES, largest


def test_a_write_the_disk_cuts_short_leaves_no_half_record(small_disk, make_record):
    from wolt_jupyter.responses.spool import Spool, read_segment, spool_record
    from wolt_jupyter.responses.writer import to_row

    spool = Spool(small_disk / "spool")

    def data(i: int, n: int) -> bytes:
        return b"".join(
            spool_record(to_row(make_record(f"{i}-{k}", inputs={"x": np.ones(2000)}))) for k in range(n)
        )

    seg = spool.append(data(0, 1), 1)
    size = seg.path.stat().st_size
    fill_disk(small_disk / "ballast", leave=8192)
    with pytest.raises(OSError):
        spool.append(data(1, 8), 8)  # 128 KB: part of it fits, then ENOSPC
    assert seg.path.stat().st_size == size  # cut back to its last whole record
    (small_disk / "ballast").unlink()
    spool.append(data(2, 1), 1)  # space is back: the next record follows a whole one
    rows, bad = read_segment(seg.path)
    assert [r["id"] for r in rows] == ["0-0", "2-0"] and bad == 0
    spool.close()


def test_records_the_database_refuses_wait_in_the_spool_and_go_in_when_space_returns(
    disk_8m, make_record, count_rows, caplog
):
    """The spool takes a few records more than the database on a nearly full disk: those are durable and
    acknowledged, wait for a replay and are written once space returns, with no restart. Records even the
    spool cannot take are dropped and counted as unlogged. The writer says so once an episode."""
    url = f"sqlite:///{disk_8m / 'responses' / 'dep.db'}"
    w = ResponseWriter(url, spool_dir=disk_8m / "spool", flush_interval=0.05, maintenance_interval=3600)
    accepted: list[str] = []
    refused: list[str] = []

    def send(batch: int) -> None:
        records = [make_record(f"{batch}-{i}") for i in range(20)]
        (accepted if w.submit_many(records) else refused).extend(r.id for r in records)
        w.flush(30)

    with caplog.at_level(logging.WARNING):
        for batch in range(5):
            send(batch)
        fill_disk(disk_8m / "ballast", leave=24 * 1024)  # room for a few spool appends, not a 64 KiB page
        batch = 5
        while not refused and batch < 200:
            send(batch)
            batch += 1
        stats = w.stats()
        assert w.full and "is full" in (w.warning or "")
        assert stats["deferred"] > 0 and stats["unlogged"] == len(refused) > 0, stats
        assert count_rows(url) < len(accepted)  # some acknowledged records are only in the spool now
        (disk_8m / "ballast").unlink()
        send(batch)  # writes resume by themselves: no restart, no call
        assert not w.full and w.warning is None
        in_log = set(read_frame("dep", url=url, columns=["id"])["id"])
    assert in_log == set(accepted)  # every acknowledged record, each once; none of the unlogged
    assert count_rows(url) == len(accepted)
    stats = w.close()
    assert stats["written"] + stats["deferred"] == len(accepted)
    assert stats["replayed"] == stats["deferred"]
    assert (
        caplog.text.count("is full") < 10 and "writes again" in caplog.text
    )  # said per change, not per batch
    assert "Traceback" not in caplog.text


def test_refuse_raises_and_neither_drops_nor_keeps(small_disk, make_record):
    """``submit_many(strict=True)`` (logging.on_full: refuse): records the spool cannot take raise LogFull,
    counted nowhere (their requests get a 503); the next ones go in once there is room."""
    from wolt_jupyter.errors import LogFull

    w = ResponseWriter(f"sqlite:///{small_disk / 'dep.db'}", spool_dir=small_disk / "spool")
    try:
        assert w.submit_many([make_record(0)], strict=True) == 1
        fill_disk(small_disk / "ballast")
        with pytest.raises(LogFull, match="cannot keep"):
            for i in range(1, 200):  # the spool's last page may take a few more
                w.submit_many([make_record(i, inputs={"x": np.ones(3000)})], strict=True)
        assert w.full and w.stats()["dropped"] == w.stats()["unlogged"] == 0
        (small_disk / "ballast").unlink()
        assert w.submit_many([make_record(1000)], strict=True) == 1
        assert w.flush(30) and not w.full
    finally:
        w.close()


def test_the_footprint_counts_the_database_wal_and_spool(tmp_path, make_record):
    from wolt_jupyter.responses.footprint import disk_bytes, footprint
    from wolt_jupyter.responses.store import make_engine
    from wolt_jupyter.responses.summary import summary

    url = f"sqlite:///{tmp_path / 'dep.db'}"
    spool = tmp_path / "spool"
    w = ResponseWriter(url, spool_dir=spool, maintenance_interval=3600)
    try:
        w.submit_many([make_record(i, inputs={"x": np.ones(500)}) for i in range(300)])
        w.flush(30)
        files = sum(disk_bytes(tmp_path / f"dep.db{s}") for s in ("", "-wal", "-shm"))
        spooled = sum(disk_bytes(p) for p in spool.iterdir())
        assert spooled > 0  # the open segment: settled, deleted when it rotates or at close
        engine = make_engine(url)
        with engine.connect() as conn:
            fp = footprint(conn, "dep", spool)
        engine.dispose()
        assert fp.total == files + spooled and fp.wal > 0 and fp.records < fp.total
        card = summary("dep", url=url, spool_dir=spool)
        assert card.on_disk == fp.total and "WAL" in card.on_disk_parts
        assert "on disk" in card.short() and "on disk" in repr(card)
    finally:
        w.close()
