"""The interface the serving runtime codes against, pinned: names, parameter order and defaults."""

from __future__ import annotations

import inspect

import wolt_jupyter.responses as r


def _params(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_public_names_and_signatures():
    assert {"ResponseRecord", "ResponseWriter", "default_store_url", "add_feedback", "read_frame"} <= set(
        r.__all__
    )
    assert _params(r.ResponseWriter)[:6] == [
        ("url", inspect.Parameter.empty),
        ("queue_size", 10000),
        ("batch_size", 500),
        ("flush_interval", 0.2),
        ("on_full", "wait"),
        ("sample", 1.0),
    ]
    assert _params(r.read_frame) == [
        ("deployment", inspect.Parameter.empty),
        ("since", None),
        ("variant", None),
        ("url", None),
        ("until", None),
        ("limit", None),
        ("revision", None),  # keyword-only, added compatibly after the positional ones
        ("columns", None),
    ]
    assert [p for p, _ in _params(r.default_store_url)] == ["deployment", "home"]
    assert [p for p, _ in _params(r.add_feedback)] == ["url", "items"]
    assert [p for p, _ in _params(r.ResponseRecord)] == [
        "id",
        "time",
        "deployment",
        "variant",
        "model_name",
        "model_version",
        "shadow",
        "inputs",
        "outputs",
        "latency_ms",
        "status",
        "error",
        "revision",  # optional: records built before it existed still work
    ]
    assert [p for p, _ in _params(r.ResponseWriter.close)] == ["self", "timeout"]
    assert _params(r.ResponseWriter.close)[1][1] == 30


def test_writer_used_as_documented(tmp_path):
    url = r.default_store_url("demo", tmp_path)
    w = r.ResponseWriter(
        url, queue_size=10000, batch_size=500, flush_interval=0.2, on_full="wait", sample=1.0
    )
    rec = r.ResponseRecord(
        id="abc",
        time=1_700_000_000.0,
        deployment="demo",
        variant="a",
        model_name="m",
        model_version="1",
        shadow=False,
        inputs={"col": [1, 2]},
        outputs={"out": [0.1, 0.9]},
        latency_ms=3.2,
        status=200,
        error=None,
    )
    assert w.submit(rec) is True
    w.close(timeout=30)
    assert w.stats() == {
        "queued": 0,
        "written": 1,
        "dropped": 0,
        "sampled_out": 0,
        "deferred": 0,
        "replayed": 0,
        "removed": 0,
        "unlogged": 0,  # added compatibly: answers sent without their record (a full disk)
    }
    assert r.add_feedback(url, [{"id": "abc", "ground_truth": [0, 1]}]) == 1
    df = r.read_frame("demo", since=1_600_000_000.0, url=url)
    assert df[["input.col", "output.out", "ground_truth"]].values.tolist() == [[1, 0.1, 0], [2, 0.9, 1]]
