"""Pushdown reads return exactly what a full read filtered in pandas returns; the first format still reads."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.responses import ResponseWriter, add_feedback, read_frame
from wolt_jupyter.responses.query import export

T0 = 1_800_000_000.0


@pytest.fixture
def logged(store_url, make_record):
    """300 requests over 300 s, two variants and a shadow, revisions 1-3, some two-row requests, feedback."""
    with ResponseWriter(store_url, batch_size=40, flush_interval=0.05, maintenance_interval=3600) as w:
        for i in range(300):
            rows = 2 if i % 7 == 0 else 1
            inputs = {"x1": [float(i)] * rows, "x2": [i % 5] * rows}
            w.submit(
                make_record(
                    i, t=T0 + i, variant="a" if i % 2 else "b", revision=1 + i // 100, inputs=inputs,
                    outputs={"y": [i % 3] * rows},
                )
            )  # fmt: skip
            w.submit(
                make_record(
                    i, t=T0 + i + 0.5, variant="s", shadow=True, revision=1 + i // 100, inputs=inputs,
                    outputs={"y": [(i + 1) % 3] * rows},
                )
            )  # fmt: skip
            if i % 50 == 49:
                assert w.flush(30)
    add_feedback(store_url, [{"id": f"req-{i}", "ground_truth": i % 3} for i in range(0, 300, 3)])
    return store_url


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got, want = got.reset_index(drop=True), want.reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_each_filter_equals_the_full_read_filtered_in_pandas(logged):
    full = read_frame("dep", url=logged)
    assert len(full) == 2 * (300 + 43)  # live + shadow, 43 requests of two rows
    assert set(full["revision"]) == {1, 2, 3}
    # oldest first across chunks that overlap in time (a batch's shadow copies land in the next chunk)
    assert full["time"].is_monotonic_increasing
    assert full.drop_duplicates(["id", "variant"]).shape[0] == 600
    secs = full["time"].map(lambda t: t.timestamp())

    lo, hi = T0 + 120, T0 + 180.5
    _same(read_frame("dep", url=logged, since=lo), full[secs >= lo])
    _same(read_frame("dep", url=logged, until=hi), full[secs < hi])
    _same(read_frame("dep", url=logged, since=lo, until=hi), full[(secs >= lo) & (secs < hi)])
    _same(read_frame("dep", url=logged, variant="a"), full[full["variant"] == "a"])
    _same(read_frame("dep", url=logged, variant=["a", "s"]), full[full["variant"].isin(["a", "s"])])
    _same(read_frame("dep", url=logged, revision=2), full[full["revision"] == 2])
    _same(read_frame("dep", url=logged, revision=[1, 3]), full[full["revision"].isin([1, 3])])
    _same(read_frame("dep", url=logged, revision="all"), full)
    cols = ["time", "input.x1", "output.y", "ground_truth"]
    _same(read_frame("dep", url=logged, columns=cols), full[cols])
    # limit counts logged records (request x variant), newest first, before spreading
    records = full.drop_duplicates(["id", "variant", "time"])
    newest = records.tail(25)[["id", "variant"]].apply(tuple, axis=1)
    want = full[full[["id", "variant"]].apply(tuple, axis=1).isin(set(newest))]
    _same(read_frame("dep", url=logged, limit=25), want)
    both = read_frame(
        "dep", url=logged, since=lo, variant="s", revision=2, columns=["id", "input.x2"], limit=10
    )
    sub = full[(secs >= lo) & (full["variant"] == "s") & (full["revision"] == 2)]
    keep = set(sub.drop_duplicates(["id", "variant", "time"]).tail(10)["id"])
    _same(both, sub[sub["id"].isin(keep)][["id", "input.x2"]])
    # feedback joined by id, spread over the rows of a two-row request
    assert full.loc[full["id"] == "req-21", "ground_truth"].tolist() == [0, 0, 0, 0]
    assert full.loc[full["id"] == "req-1", "ground_truth"].isna().all()


def test_bad_filters_say_what_to_pass(logged):
    with pytest.raises(InvalidArgument, match=r"no column 'input\.nope'"):
        read_frame("dep", url=logged, columns=["input.nope"])
    with pytest.raises(InvalidArgument, match="revision must be"):
        read_frame("dep", url=logged, revision="latest")


def test_export_writes_parquet_that_pandas_reads_back(logged, tmp_path):
    path = tmp_path / "log.parquet"
    info = export("dep", path, url=logged, since=T0 + 200)
    back = pd.read_parquet(path)
    want = read_frame("dep", url=logged, since=T0 + 200)
    assert info["rows"] == len(back) == len(want) and info["bytes"] == path.stat().st_size
    assert back["id"].tolist() == want["id"].tolist()
    assert back["input.x1"].tolist() == want["input.x1"].tolist()
    # time as a timestamp (UTC, microseconds: Spark, DuckDB and pandas read it alike), not a float
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pq.read_schema(path).field("time").type == pa.timestamp("us", tz="UTC")
    assert (back["time"] - want["time"]).abs().max() < pd.Timedelta(microseconds=1)
    with pytest.raises(InvalidArgument, match=r"\.parquet"):
        export("dep", tmp_path / "log.csv", url=logged)


def test_a_store_of_the_first_format_reads_and_is_migrated_once(tmp_path, make_record, count_rows):
    """Rows as the previous version wrote them (JSON text in wolt_responses) read as before, then move into
    chunks on the writer's first maintenance pass; the frame is the same before and after."""
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the first format's table, as its DDL was, filled with plain SQL
        conn.exec_driver_sql(
            "CREATE TABLE wolt_responses (seq INTEGER PRIMARY KEY AUTOINCREMENT, id VARCHAR(255) NOT NULL, "
            "time FLOAT NOT NULL, deployment VARCHAR(255) NOT NULL, variant VARCHAR(255) NOT NULL, "
            "model_name VARCHAR(255) NOT NULL, model_version VARCHAR(255) NOT NULL, shadow BOOLEAN NOT NULL, "
            "inputs TEXT NOT NULL, outputs TEXT NOT NULL, latency_ms FLOAT NOT NULL, status INTEGER NOT NULL, "
            "error TEXT)"
        )
        for i in range(30):
            conn.exec_driver_sql(
                "INSERT INTO wolt_responses (id, time, deployment, variant, model_name, model_version, shadow, "
                "inputs, outputs, latency_ms, status, error) VALUES (?, ?, 'dep', 'a', 'm', '1', 0, ?, ?, 1.5, "
                "200, NULL)",
                (f"old-{i}", T0 + i, json.dumps({"x1": [float(i), 1.0]}), json.dumps({"y": [i, i]})),
            )
    engine.dispose()
    before = read_frame("dep", url=url)
    assert len(before) == 60 and before["revision"].isna().all()
    assert read_frame("dep", url=url, revision=1).empty  # never part of a revision
    with ResponseWriter(url, maintenance_interval=3600) as w:
        w.submit(make_record("new-1", t=T0 + 100, revision=1))
        assert w.flush(30)
        assert w.maintain(now=T0 + 200)["migrated"] == 30
        assert w.maintain(now=T0 + 200)["migrated"] == 0  # once
    after = read_frame("dep", url=url)
    _same(after[after["id"] != "new-1"][list(before.columns)], before)
    assert count_rows(url) == 31
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wolt_responses").scalar_one() == 0
    engine.dispose()


def test_feature_vectors_are_stored_typed_and_read_back_as_lists(store_url, make_record):
    """A 2-D input (one feature vector per row) is a typed list column, not JSON text per row, and reads back
    as the lists that were sent; a column of vectors of mixed kinds still falls back to JSON text."""
    import pyarrow as pa
    from sqlalchemy import create_engine, select

    from wolt_jupyter.responses.columnar import JSON_MARK, decode
    from wolt_jupyter.responses.store import chunks_table

    sent = {i: [[float(i), 0.5, -1.0], [float(i) + 1, 2.0, 3.5]] for i in range(20)}
    with ResponseWriter(store_url, batch_size=100, flush_interval=0.05, maintenance_interval=3600) as w:
        for i, rows in sent.items():
            w.submit(make_record(i, t=T0 + i, inputs={"x": rows}, outputs={"y": [[1], [0]]}))
        assert w.flush(30)  # the mixed one in a chunk of its own
        w.submit(make_record(99, t=T0 + 99, inputs={"x": [["a", 1]]}, outputs={"y": [[1]]}))
        assert w.flush(30)
    frame = read_frame("dep", url=store_url, revision="all")
    for i, rows in sent.items():
        got = frame[frame["id"] == f"req-{i}"]
        assert got["input.x"].tolist() == rows and got["output.y"].tolist() == [[1], [0]]
        assert all(type(v) is list for v in got["input.x"])
    assert frame[frame["id"] == "req-99"]["input.x"].tolist() == [["a", 1]]
    engine = create_engine(store_url)
    with engine.connect() as conn:
        schemas = [decode(data).schema for (data,) in conn.execute(select(chunks_table().c.data))]
    engine.dispose()
    typed = [s.field("input.x") for s in schemas if not (s.field("input.x").metadata or {}).get(JSON_MARK)]
    assert typed and all(pa.types.is_list(f.type) and pa.types.is_float64(f.type.value_type) for f in typed)


def test_variant_reads_skip_chunks_without_that_variant(store_url, make_record):
    """The chunk index pushes ``variant=`` down: a chunk holding only other variants is never fetched (here:
    its blob is overwritten with garbage, which a full read fails on)."""
    import pyarrow as pa
    from sqlalchemy import create_engine, update

    from wolt_jupyter.responses.store import chunks_table

    with ResponseWriter(store_url, flush_interval=0.05, maintenance_interval=3600) as w:
        for i in range(5):
            w.submit(make_record(i, t=T0 + i, variant="a_b"))
        assert w.flush(30)
        for i in range(5, 9):
            w.submit(make_record(i, t=T0 + i, variant="b"))
        assert w.flush(30)
        for i in range(9, 12):
            w.submit(make_record(i, t=T0 + i, variant="a_b"))
            w.submit(make_record(i, t=T0 + i + 0.5, variant="axb"))
    full = read_frame("dep", url=store_url)
    _same(read_frame("dep", url=store_url, variant="a_b"), full[full["variant"] == "a_b"])
    engine = create_engine(store_url)
    with engine.begin() as conn:  # the chunk holding only "b": unreadable from now on
        c = chunks_table()
        n = conn.execute(update(c).where(c.c.variants == '["b"]').values(data=b"not parquet")).rowcount
    engine.dispose()
    assert n == 1
    with pytest.raises(pa.ArrowInvalid, match="Parquet"):
        read_frame("dep", url=store_url)
    got = read_frame("dep", url=store_url, variant="a_b")
    _same(got, full[full["variant"] == "a_b"])  # "a_b" as a LIKE pattern would also match "axb"
    assert len(read_frame("dep", url=store_url, variant=["a_b", "axb"])) == 11
    assert read_frame("dep", url=store_url, variant="zz").empty


def test_chunks_decoded_on_threads_keep_their_order(store_url, make_record):
    """decode_all spreads chunks over a thread pool; the tables come back in the blobs' order, each equal to
    a single-threaded decode, with only the asked columns."""
    from sqlalchemy import create_engine

    from wolt_jupyter.responses.columnar import decode, decode_all

    with ResponseWriter(store_url, batch_size=7, flush_interval=0.05, maintenance_interval=3600) as w:
        for i in range(60):
            w.submit(make_record(i, t=T0 + i, inputs={"x1": [float(i)], "v": [[1.0, float(i)]]}))
    engine = create_engine(store_url)
    with engine.connect() as conn:
        blobs = [bytes(d) for (d,) in conn.exec_driver_sql("SELECT data FROM wolt_response_chunks")]
    engine.dispose()
    assert len(blobs) >= 3
    for columns in (None, ["time", "input.x1"], ["input*", "_row"]):
        got = decode_all(blobs, columns)
        want = [decode(b, columns) for b in blobs]
        same = [t.equals(w, check_metadata=True) for t, w in zip(got, want, strict=True)]
        assert same == [True] * len(blobs)
    assert decode_all(blobs[:1], ["time"])[0].column_names == ["time"]
    assert decode_all([], None) == []


def test_vectors_and_json_values_read_back_row_by_row(store_url, make_record):
    """Vectors of one width (numpy's fast path), of several widths and missing ones (Arrow's) read back as the
    lists sent; a JSON value is decoded once per distinct text, but a dict or list is each row's own object."""
    with ResponseWriter(store_url, batch_size=100, flush_interval=0.05, maintenance_interval=3600) as w:
        for i in range(12):
            inputs = {"v": [[float(i), 1.0]], "o": [{"k": i % 2}], "s": [i % 3 or "text"]}
            if i >= 8:
                inputs["w"] = [[i] * (i - 7)]  # ragged, and absent from the first eight records
            w.submit(make_record(i, t=T0 + i, inputs=inputs))
        assert w.flush(30)
        w.submit(make_record(20, t=T0 + 20, inputs={"v": [[True, False]]}))  # a chunk of its own
    frame = read_frame("dep", url=store_url, revision="all").set_index("id")
    assert frame.loc["req-3", "input.v"] == [3.0, 1.0] and type(frame.loc["req-3", "input.v"]) is list
    assert frame.loc["req-20", "input.v"] == [True, False]
    assert frame["input.w"].iloc[:8].isna().all()
    assert [frame.loc[f"req-{i}", "input.w"] for i in range(8, 12)] == [[i] * (i - 7) for i in range(8, 12)]
    assert frame["input.o"].iloc[:12].tolist() == [{"k": i % 2} for i in range(12)]
    dicts = frame["input.o"].iloc[:12].tolist()
    assert len({id(d) for d in dicts}) == 12  # the same text, yet a dict of its own in each row
    assert frame["input.s"].iloc[:12].tolist() == [i % 3 or "text" for i in range(12)]
