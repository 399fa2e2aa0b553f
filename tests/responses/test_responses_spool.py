"""The spool: records submitted with ``submit_many`` survive the process being killed, are replayed exactly
once, and one unstorable record costs no other record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wolt_jupyter.responses import ResponseWriter
from wolt_jupyter.responses.spool import read_segment

# a writer that is killed (os._exit: no flush, no atexit) right after its records are acknowledged
_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import make_record
    from wolt_jupyter.responses import ResponseWriter

    w = ResponseWriter({url!r}, spool_dir={spool!r}, flush_interval=60, batch_size=10_000)
    n, written_first = {n}, {written_first}
    if written_first:
        w.submit_many([make_record(i, t=1000.0 + i) for i in range(written_first)])
        assert w.flush(30)
    w.submit_many([make_record(i, t=1000.0 + i) for i in range(written_first, n)])
    print("acknowledged", flush=True)
    os._exit(0)
    """
)


def _killed_writer(url: str, spool: Path, n: int, written_first: int = 0) -> None:
    code = _KILLED_WRITER.format(
        tests=str(Path(__file__).parent), url=url, spool=str(spool), n=n, written_first=written_first
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "acknowledged", out.stderr[-2000:]


@pytest.mark.parametrize("written_first", [0, 120])
def test_records_of_a_killed_writer_are_replayed_exactly_once(
    store_url, tmp_path, count_rows, written_first
) -> None:
    spool = tmp_path / "spool"
    _killed_writer(store_url, spool, n=300, written_first=written_first)
    assert count_rows(store_url) == written_first  # the rest were only in the spool when it died
    assert list(spool.glob("*.spool"))

    with ResponseWriter(store_url, spool_dir=spool) as w:
        assert w.flush(30)
    stats = w.stats()
    assert count_rows(store_url) == 300 and stats["replayed"] == 300 - written_first
    assert count_rows(store_url, shadow=True) == 0
    assert list(spool.glob("*.spool")) == []  # replayed files are removed
    # idempotent: the rollup the panel reads counts each row once too
    from sqlalchemy import create_engine

    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT SUM(n) FROM wolt_response_rollup").scalar_one() == 300
    engine.dispose()


def test_replaying_the_same_file_twice_inserts_nothing_twice(tmp_path, count_rows) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    _killed_writer(url, spool, n=50)
    leftover = next(spool.glob("*.spool"))
    copy = leftover.with_name("0000000000000-1-000001.spool")
    copy.write_bytes(leftover.read_bytes())  # as if a replay had been cut short before deleting its file
    with ResponseWriter(url, spool_dir=spool):
        pass
    assert count_rows(url) == 50


def test_a_torn_last_line_is_skipped_and_said(tmp_path, count_rows, caplog) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    _killed_writer(url, spool, n=20)
    seg = next(spool.glob("*.spool"))
    with seg.open("ab") as fh:
        fh.write(b'{"id": "half')  # a power cut in the middle of a write
    with ResponseWriter(url, spool_dir=spool):
        pass
    assert count_rows(url) == 20
    assert "1 unreadable line" in caplog.text


def test_spooled_records_are_in_the_file_when_submit_returns(tmp_path, make_record) -> None:
    spool = tmp_path / "spool"
    w = ResponseWriter(f"sqlite:///{tmp_path / 'log.db'}", spool_dir=spool, flush_interval=60)
    try:
        assert w.submit_many([make_record(i) for i in range(5)]) == 5
        rows = [row for f in spool.glob("*.spool") for row in read_segment(f)[0]]
        assert [r["id"] for r in rows] == [f"req-{i}" for i in range(5)]
        assert os.stat(spool).st_mode & 0o777 == 0o700
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in spool.glob("*.spool"))
    finally:
        w.close()
    assert list(spool.glob("*.spool")) == []  # everything reached the database: nothing left to replay


def test_one_unstorable_record_costs_no_other(pg_url, tmp_path, make_record, count_rows, caplog) -> None:
    """A status no stored column can hold (beyond 32 bits) fails its chunk: the batch is split until only
    that record is dropped, counted and named."""
    records = [make_record(i) for i in range(40)]
    bad_id = "bad-status"
    records.insert(17, make_record(bad_id, status=2**40))
    with ResponseWriter(pg_url, spool_dir=tmp_path / "spool", retries=1, retry_backoff=0.01) as w:
        w.submit_many(records)
        assert w.flush(30)
    stats = w.stats()
    assert count_rows(pg_url) == 40 and stats["written"] == 40 and stats["dropped"] == 1
    assert f"record '{bad_id}' cannot be stored" in caplog.text
    assert list((tmp_path / "spool").glob("*.spool")) == []


def test_numeric_arrays_go_to_the_spool_as_raw_bytes_and_come_back_equal(tmp_path) -> None:
    import numpy as np

    from wolt_jupyter.responses.spool import ARRAY_KEY, spool_record

    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    row = {
        "id": "a",
        "time": 1.0,
        "inputs": {"x": x, "names": ["p", "q", "r"]},
        "outputs": {"y": np.array([1, 0, 1])},
    }
    record = spool_record(row)
    header, _, rest = record.partition(b"\n")
    assert ARRAY_KEY.encode() in header and rest == x.tobytes() + np.array([1, 0, 1]).tobytes()
    assert isinstance(row["inputs"]["x"], np.ndarray)  # the caller's row is not changed
    plain = spool_record({"id": "b", "time": 2.0, "inputs": {"x": [1.5]}, "outputs": {}})
    path = tmp_path / "seg.spool"
    path.write_bytes(record + plain + record + record[:-5])  # the last one torn by a power cut
    rows, bad = read_segment(path)
    assert bad == 1  # the torn record is counted, never raised
    assert [r["id"] for r in rows] == ["a", "b", "a"]
    back = rows[0]
    assert back["inputs"]["x"].dtype == np.float32 and np.array_equal(back["inputs"]["x"], x)
    assert back["inputs"]["names"] == ["p", "q", "r"]
    assert back["outputs"]["y"].tolist() == [1, 0, 1]
    assert rows[1]["inputs"] == {"x": [1.5]}


def test_segments_of_the_json_lines_form_are_still_replayed(tmp_path, count_rows) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    lines = [
        json.dumps({"id": f"old-{i}", "time": 100.0 + i, "deployment": "dep", "variant": "main", "model_name": "m",
                    "model_version": "1", "shadow": False, "inputs": {"x": [float(i)]}, "outputs": {"y": [1]},
                    "latency_ms": 1.0, "status": 200, "error": None, "revision": 1})
        for i in range(7)
    ]  # fmt: skip
    (spool / "0000000000000-1-000001.jsonl").write_text("\n".join(lines) + "\n")
    with ResponseWriter(url, spool_dir=spool):
        pass
    assert count_rows(url) == 7
    assert not list(spool.iterdir())
