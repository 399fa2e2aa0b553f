"""Reading the log back: DataFrame shape, filters, feedback join, time arguments, missing stores."""

from __future__ import annotations

import datetime as dt
import math
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.responses import (
    ResponseWriter,
    add_feedback,
    default_store_url,
    parse_time,
    read_frame,
)

BASE = [
    "id",
    "time",
    "deployment",
    "variant",
    "shadow",
    "model_name",
    "model_version",
    "revision",
    "latency_ms",
    "status",
    "error",
]


def _log(url, records):
    with ResponseWriter(url) as w:
        for r in records:
            assert w.submit(r)


def test_dataframe_columns_types_and_row_expansion(store_url, make_record):
    now = time.time()
    _log(
        store_url,
        [
            make_record(
                1, t=now - 2, inputs={"x1": [1.0, 2.0, 3.0], "x2": ["a", "b", "c"]}, outputs={"y": [0, 1, 0]}
            ),
            make_record(
                1,
                t=now - 2,
                variant="b",
                shadow=True,
                inputs={"x1": [1.0, 2.0, 3.0]},
                outputs={"y": [1, 1, 1]},
            ),
            make_record(2, t=now - 1, status=500, error="boom", outputs={}),
        ],
    )
    df = read_frame("dep", url=store_url)
    assert list(df.columns) == [*BASE, "input.x1", "input.x2", "output.y", "ground_truth"]
    # 3 + 3 rows for the two variants of request 1, one row for request 2
    assert len(df) == 7
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["shadow"].dtype == bool and df["status"].dtype == "int64"
    live = df[(df["id"] == "req-1") & ~df["shadow"]]
    assert live["input.x1"].tolist() == [1.0, 2.0, 3.0]
    assert live["input.x2"].tolist() == ["a", "b", "c"]
    assert live["output.y"].tolist() == [0, 1, 0]
    shadow = df[(df["id"] == "req-1") & df["shadow"]]
    assert shadow["variant"].unique().tolist() == ["b"] and shadow["model_version"].unique().tolist() == ["2"]
    assert shadow["input.x2"].isna().all()
    failed = df[df["id"] == "req-2"].iloc[0]
    assert failed["status"] == 500 and failed["error"] == "boom" and math.isnan(failed["output.y"])
    assert abs(failed["time"].timestamp() - (now - 1)) < 1e-3
    assert df["ground_truth"].isna().all()


def test_feedback_joins_by_request_id_and_later_replaces_earlier(store_url, make_record):
    _log(
        store_url,
        [
            make_record(1),
            make_record(1, variant="b", shadow=True),
            make_record(2, inputs={"x1": [1.0, 2.0]}, outputs={"y": [0, 1]}),
            make_record(3),
        ],
    )
    assert (
        add_feedback(store_url, [{"id": "req-1", "ground_truth": 0}, {"id": "req-2", "ground_truth": [1, 1]}])
        == 2
    )
    # later feedback wins, also when repeated within one call
    assert (
        add_feedback(store_url, [{"id": "req-1", "ground_truth": 5}, {"id": "req-1", "ground_truth": 7}]) == 1
    )
    df = read_frame("dep", url=store_url)
    truth = df.groupby(["id", "shadow"])["ground_truth"].apply(list).to_dict()
    assert truth[("req-1", False)] == [7] and truth[("req-1", True)] == [7]
    assert truth[("req-2", False)] == [1, 1]
    assert math.isnan(truth[("req-3", False)][0])


def test_feedback_before_any_response_and_rich_values(tmp_path, make_record):
    url = f"sqlite:///{tmp_path / 'new' / 'r.db'}"
    assert add_feedback(url, [{"id": "req-9", "ground_truth": {"label": "cat", "score": 0.9}}]) == 1
    assert read_frame("dep", url=url).empty  # the store exists now, but holds no responses
    _log(url, [make_record(9)])
    assert read_frame("dep", url=url)["ground_truth"].tolist() == [{"label": "cat", "score": 0.9}]


@pytest.mark.parametrize(
    "bad", [[{"ground_truth": 1}], [{"id": "x"}], ["x"], [{"id": "x", "ground_truth": 1, "time": "t"}]]
)
def test_bad_feedback_items_are_rejected(tmp_path, bad):
    with pytest.raises(InvalidArgument):
        add_feedback(f"sqlite:///{tmp_path / 'r.db'}", bad)
    assert add_feedback(f"sqlite:///{tmp_path / 'r.db'}", []) == 0


def test_since_until_variant_and_limit_filters(store_url, make_record):
    now = time.time()
    _log(
        store_url,
        [
            make_record(1, t=now - 3 * 3600),
            make_record(2, t=now - 1800),
            make_record(2, t=now - 1800, variant="b", shadow=True),
            make_record(3, t=now - 10),
            make_record(4, t=now - 10, deployment="other"),
        ],
    )
    ids = lambda df: sorted(set(df["id"]))  # noqa: E731
    assert ids(read_frame("dep", url=store_url)) == ["req-1", "req-2", "req-3"]
    assert ids(read_frame("dep", since="1h", url=store_url)) == ["req-2", "req-3"]
    assert ids(read_frame("dep", since="45m", until="20m", url=store_url)) == ["req-2"]
    assert ids(read_frame("dep", since=now - 60, url=store_url)) == ["req-3"]
    since_dt = dt.datetime.fromtimestamp(now - 7200, tz=dt.timezone.utc)
    assert ids(read_frame("dep", since=since_dt, url=store_url)) == ["req-2", "req-3"]
    assert ids(read_frame("dep", until=dt.timedelta(hours=2), url=store_url)) == ["req-1"]
    by_variant = read_frame("dep", variant="b", url=store_url)
    assert len(by_variant) == 1 and by_variant["shadow"].all()
    assert len(read_frame("dep", variant=["a", "b"], url=store_url)) == 4
    assert read_frame("dep", variant="zzz", url=store_url).empty
    newest = read_frame("dep", limit=2, url=store_url)
    assert newest["id"].tolist()[-1] == "req-3" and len(newest) == 2
    assert newest["time"].is_monotonic_increasing
    assert ids(read_frame("other", url=store_url)) == ["req-4"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15),
        ("30m", 1800),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        (" 1.5H ", 5400),
        ("250ms", 0.25),
    ],
)
def test_duration_strings_mean_now_minus(text, seconds):
    assert parse_time(text, now=1_000_000.0) == pytest.approx(1_000_000.0 - seconds)


def test_other_time_forms():
    assert parse_time(None) is None
    assert parse_time(1234.5) == 1234.5
    assert (
        parse_time("2026-11-29T08:00:00Z") == dt.datetime(2026, 11, 29, 8, tzinfo=dt.timezone.utc).timestamp()
    )
    aware = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_time(aware) == aware.timestamp()


@pytest.mark.parametrize("bad", ["1 hour", "h", "-1h", "yesterday", "1y", "", True, float("nan"), [1]])
def test_bad_times_say_what_is_accepted(bad):
    with pytest.raises(InvalidArgument) as info:
        parse_time(bad)
    message = str(info.value)
    assert '"1h"' in message and "epoch" in message and "datetime" in message


@given(st.floats(min_value=0, max_value=10_000, allow_nan=False), st.sampled_from(["s", "m", "h", "d"]))
def test_duration_roundtrip(value, unit):
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    text = f"{value:.6f}{unit}"
    assert parse_time(text, now=1e9) == pytest.approx(1e9 - float(f"{value:.6f}") * scale, abs=1e-3)


def test_bad_filters_raise_before_touching_the_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(InvalidArgument, match="since"):
        read_frame("dep", since="recently", url=url)
    with pytest.raises(InvalidArgument, match="limit"):
        read_frame("dep", limit=-1, url=url)


def test_missing_store_gives_empty_frame_and_creates_nothing(tmp_path):
    path = tmp_path / "nope" / "r.db"
    df = read_frame("dep", url=f"sqlite:///{path}")
    assert df.empty and list(df.columns) == [*BASE, "ground_truth"]
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert not path.exists() and not path.parent.exists()


def test_empty_postgres_database_gives_empty_frame(pg_url):
    assert read_frame("dep", url=pg_url).empty


def test_reading_after_the_writer_is_gone_with_default_url(tmp_path, monkeypatch, make_record):
    monkeypatch.setenv("WOLT_JUPYTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WOLT_RESPONSE_STORE_URL", raising=False)
    url = default_store_url("dep", tmp_path / "home")
    assert url == f"sqlite:///{tmp_path / 'home' / 'responses' / 'dep.db'}"
    w = ResponseWriter(url)
    for i in range(50):
        w.submit(make_record(i))
    w.close()
    del w  # the "server" is gone; only the file remains
    df = read_frame("dep")
    assert len(df) == 50 and set(df["deployment"]) == {"dep"}


def test_configured_store_url_is_the_default(pg_url, monkeypatch, make_record):
    monkeypatch.setenv("WOLT_RESPONSE_STORE_URL", pg_url)
    _log(pg_url, [make_record(1)])
    assert read_frame("dep")["id"].tolist() == ["req-1"]


def test_default_store_url_sanitizes_names(tmp_path):
    assert default_store_url("a/b c", tmp_path).endswith("/responses/a_b_c.db")
    with pytest.raises(InvalidArgument):
        default_store_url("", tmp_path)


def test_unreachable_store_is_one_readable_error():
    import socket

    from wolt_jupyter.responses import ResponseStoreError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        ResponseStoreError, match=r"cannot read response store postgresql://postgres:\*\*\*\*@127"
    ) as info:
        read_frame("dep", url=f"postgresql://postgres:secret@127.0.0.1:{port}/x")
    assert "secret" not in str(info.value)


def test_corrupt_sqlite_file_is_one_readable_error(tmp_path):
    from wolt_jupyter.responses import ResponseStoreError

    path = tmp_path / "r.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ResponseStoreError, match="cannot read response store"):
        read_frame("dep", url=f"sqlite:///{path}")


def test_reading_while_the_writer_writes(store_url, make_record):
    w = ResponseWriter(store_url, batch_size=50, flush_interval=0.01)
    seen = []
    for i in range(2000):
        w.submit(make_record(i))
        if i % 400 == 0:
            seen.append(len(read_frame("dep", url=store_url)))
    w.close()
    assert seen == sorted(seen)  # the reader sees a growing, committed prefix and never fails
    assert len(read_frame("dep", url=store_url)) == 2000


def test_import_is_light():
    import subprocess

    code = (
        "import sys, wolt_jupyter.responses as r; "
        "assert 'pandas' not in sys.modules and 'sqlalchemy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
