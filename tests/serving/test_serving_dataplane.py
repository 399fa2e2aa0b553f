"""The data plane through both codecs: versions by registry version, statistics, retry counting rules,
and the vectorised prediction histogram."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from serving_support import row_doc
from tritonclient.utils import InferenceServerException


def test_registry_version_or_variant_name_over_http_and_grpc_alike(ab) -> None:
    """main serves wolt-lr/1; challenger and the shadow serve wolt-lr/2: "2" is the live challenger."""
    for version, variant in (("1", "main"), ("2", "challenger"), ("main", "main"), ("shadow", "shadow")):
        status, _, body = ab.get(f"/v2/models/{ab.name}/versions/{version}/ready")
        assert status == 200 and json.loads(body)["version"] == variant
        status, doc, _ = ab.infer(row_doc([[0.1, 0.2, 0.3, 0.4]]), variant=version)
        assert status == 200 and doc["model_version"] == variant, doc
    status, _, body = ab.get(f"/v2/models/{ab.name}/versions/99/ready")
    error = json.loads(body)["error"]
    assert status == 404 and "registry versions:" in error and "variants:" in error
    client = grpcclient.InferenceServerClient(ab.grpc)
    try:
        assert client.is_model_ready(ab.name, "1") and client.is_model_ready(ab.name, "2")
        with pytest.raises(InferenceServerException, match="registry versions"):
            client.is_model_ready(ab.name, "99")
        inp = grpcclient.InferInput("x", [1, 4], "FP64")
        inp.set_data_from_numpy(np.array([[0.1, 0.2, 0.3, 0.4]]))
        assert client.infer(ab.name, [inp], model_version="2").get_response().model_version == "challenger"
    finally:
        client.close()


def test_statistics_count_rows_executions_and_failures_per_variant(ab) -> None:
    def stats(version: str) -> dict:
        status, _, body = ab.get(f"/v2/models/{ab.name}/versions/{version}/stats")
        assert status == 200
        (entry,) = json.loads(body)["model_stats"]
        assert entry["name"] == ab.name and entry["version"] == version
        return entry

    before, broken_before = stats("pipe"), stats("broken")
    for n in (3, 5):
        status, _, _ = ab.infer(row_doc(np.zeros((n, 4))), variant="pipe")
        assert status == 200
    status, _, _ = ab.infer(row_doc(np.zeros((2, 4))), variant="broken")
    assert status == 500
    after, broken_after = stats("pipe"), stats("broken")
    assert after["inference_count"] - before["inference_count"] == 8
    assert after["execution_count"] - before["execution_count"] == 2
    ok = after["inference_stats"]["success"]
    assert ok["count"] - before["inference_stats"]["success"]["count"] == 2 and ok["ns"] > 0
    assert after["last_inference"] >= before["last_inference"] and after["batch_stats"][0]["batch_size"] >= 1
    failed = (
        broken_after["inference_stats"]["fail"]["count"] - broken_before["inference_stats"]["fail"]["count"]
    )
    assert failed == 1  # a variant the client named is not retried elsewhere: it answered 500 itself
    status, _, body = ab.get("/v2/models/stats")
    versions = {s["version"] for s in json.loads(body)["model_stats"]}
    assert {"main", "challenger", "broken", "pipe", "shadow"} <= versions
    client = grpcclient.InferenceServerClient(ab.grpc)
    try:
        (grpc_entry,) = client.get_inference_statistics(ab.name, "pipe", as_json=True)["model_stats"]
        assert int(grpc_entry["inference_count"]) >= after["inference_count"]
    finally:
        client.close()


def test_observe_many_counts_like_observe() -> None:
    from wolt_jupyter.serving.metrics import VALUE_BUCKETS, Histogram

    one, many = Histogram("a", "a", ("x",), VALUE_BUCKETS), Histogram("b", "b", ("x",), VALUE_BUCKETS)
    values = np.concatenate(
        [np.random.default_rng(0).normal(size=500) * 50, np.array(VALUE_BUCKETS), [5e3, -5e3]]
    )
    for v in values:
        one.observe(("l",), float(v))
    many.observe_many(("l",), values[:100])
    many.observe_many(("l",), values[100:])
    assert one.series[("l",)][0] == many.series[("l",)][0]
    assert one.series[("l",)][1] == pytest.approx(many.series[("l",)][1], rel=1e-6)
