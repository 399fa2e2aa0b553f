"""logging.probabilities on a real runtime: each scikit-learn classifier's class probabilities go into the
response log beside its answer (live and shadow rows, the array path and MLflow's DataFrame path), while the
client's reply stays what the model answers unless the client names the output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_support import FEATURES, row_doc, spawn_runtime, stop_runtime, wait_ready


@pytest.mark.integration
def test_probabilities_are_logged_not_answered(model_store, tmp_path) -> None:
    from wolt_jupyter import responses

    spec = {
        "name": "proba-test",
        "variants": [
            {"name": "main", "model": "models:/wolt-lr/1", "traffic": 100},
            {"name": "pipe", "model": "models:/wolt-pipe/1", "traffic": 0},  # MLflow's loader, DataFrames
            {"name": "shadow", "model": "models:/wolt-lr/2", "shadow": True},
        ],
        "logging": {"responses": True, "probabilities": True},
    }
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(5, 4))
    rt = wait_ready(spawn_runtime(model_store, spec, tmp_path))
    try:
        status, doc, _ = rt.infer(row_doc(rows, id="plain"))
        assert status == 200 and [o["name"] for o in doc["outputs"]] == ["predict"]
        assert doc["outputs"][0]["data"] == model_store.lr_v1.predict(rows).tolist()
        status, doc, _ = rt.infer(row_doc(rows, id="piped"), variant="pipe")
        assert status == 200 and [o["name"] for o in doc["outputs"]] == ["predict"]
        # named, the log's output is the client's too
        status, doc, _ = rt.infer(row_doc(rows, id="asked", outputs=[{"name": "predict_proba"}]))
        assert status == 200 and [o["name"] for o in doc["outputs"]] == ["predict_proba"]
        assert doc["outputs"][0]["shape"] == [5, 2]
        np.testing.assert_allclose(
            np.reshape(doc["outputs"][0]["data"], (5, 2)), model_store.lr_v1.predict_proba(rows)
        )
        # the metadata a client reads is unchanged: the model's own output only
        meta = rt.get(f"/v2/models/{rt.name}")
        assert '"predict_proba"' not in meta[2].decode()
    finally:
        assert stop_runtime(rt) == 0, rt.log.read_text()[-2000:]
    assert "failed" not in rt.log.read_text()  # the probe of each model's outputs too
    log = responses.read_frame(rt.name, url=responses.default_store_url(rt.name, rt.state_dir))
    frame = pd.DataFrame(rows, columns=FEATURES)
    expected = {
        ("plain", "main"): model_store.lr_v1.predict_proba(rows),
        ("plain", "shadow"): model_store.lr_v2.predict_proba(rows),
        ("piped", "pipe"): model_store.pipe.predict_proba(frame),
    }
    for (rid, variant), proba in expected.items():
        got = log[(log["id"] == rid) & (log["variant"] == variant)]
        assert len(got) == 5, (rid, variant)
        np.testing.assert_allclose(np.array(got["output.predict_proba"].tolist()), proba, rtol=1e-12)
        assert got["output.predict"].tolist() == list(np.argmax(proba, axis=1))
