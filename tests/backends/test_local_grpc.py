"""gRPC on a local deployment made by ``%wolt_deploy`` (not a hand-started runtime), with tritonclient.grpc
unchanged; and a challenger that fails is retried on the champion, so no client sees its errors."""

from __future__ import annotations

import json
import queue
import urllib.request

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from helpers import FEATURES


def _input(rows: pd.DataFrame) -> list:
    """One 2-D FP64 tensor with the columns in signature order (the runtime's documented form)."""
    inp = grpcclient.InferInput("input-0", [len(rows), len(FEATURES)], "FP64")
    inp.set_data_from_numpy(rows[FEATURES].to_numpy(dtype=np.float64))
    return [inp]


def _status(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value.status())


@pytest.mark.usefixtures("undeploy_all")
def test_deploy_serves_grpc_with_versions_statistics_and_status_codes(shell, models, rows, wolt_home) -> None:
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['champion']} --ab {models['v2']}=50")
    assert d.status == "ready" and d.grpc_url and d.grpc_url.startswith("127.0.0.1:")
    assert d.grpc_url.rsplit(":", 1)[1] != d.url.rsplit(":", 1)[1]  # its own port
    assert "gRPC" in repr(d) and d.grpc_url in d._repr_html_()
    listed = shell.run_line_magic("wolt_deployments", "")
    assert listed.loc[listed["name"] == "eta", "grpc"].item() == d.grpc_url
    record = json.loads((wolt_home / "deployments" / "eta" / "deployment.json").read_text())
    assert record["extra"]["grpc_port"] == int(d.grpc_url.rsplit(":", 1)[1])

    client = grpcclient.InferenceServerClient(d.grpc_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert "statistics" in client.get_server_metadata(as_json=True)["extensions"]
        # versions/{v}: the variant name or the registry version it serves, over gRPC and HTTP alike
        for version in ("main", "challenger", "1", "2"):
            assert client.is_model_ready("eta", version), version
            with urllib.request.urlopen(f"{d.url}/v2/models/eta/versions/{version}/ready") as r:
                assert r.status == 200
        with pytest.raises(InferenceServerException) as exc:
            client.is_model_ready("eta", "7")
        assert "NOT_FOUND" in _status(exc) and "registry versions: 1, 2" in str(exc.value)
        meta = client.get_model_metadata("eta", "2", as_json=True)
        assert meta["name"] == "eta" and meta["versions"] == ["main", "challenger"]

        # infer by registry version: each answers with its own model (v2 predicts 100x v1)
        x = rows.head(7)
        expected = x[FEATURES].sum(axis=1).to_numpy()
        for version, scale in (("1", 1.0), ("2", 100.0), ("challenger", 100.0)):
            result = client.infer("eta", _input(x), model_version=version, request_id=f"r-{version}")
            (name,) = [o["name"] for o in result.get_response(as_json=True)["outputs"]]
            assert np.allclose(result.as_numpy(name).ravel(), scale * expected, rtol=1e-6, atol=1e-6)
            response = result.get_response(as_json=True)
            assert response["id"] == f"r-{version}"
            assert response["parameters"]["registered_version"]["string_param"] == (
                "1" if scale == 1 else "2"
            )
        routed = {client.infer("eta", _input(rows.iloc[[i]])).get_response().model_version for i in range(40)}
        assert routed == {"main", "challenger"}

        # the same answers through wolt_jupyter's own client, over gRPC and REST
        import wolt_jupyter

        over_grpc = wolt_jupyter.predict("eta", rows.head(20), protocol="grpc")
        over_rest = wolt_jupyter.predict("eta", rows.head(20))
        assert over_grpc["variant"].isin(["main", "challenger"]).all()
        value = over_grpc.columns[0]
        scale = np.where(over_grpc["variant"] == "main", 1.0, 100.0)
        assert np.allclose(np.ravel(over_grpc[value].tolist()), scale * rows.head(20)[FEATURES].sum(axis=1))
        assert list(over_rest.columns) == list(over_grpc.columns)

        # statistics (Triton's extension) over gRPC and REST agree, per variant
        stats = client.get_inference_statistics("eta", as_json=True)["model_stats"]
        by_version = {s["version"]: s for s in stats}
        assert set(by_version) == {"main", "challenger"}
        assert (
            int(by_version["main"]["inference_count"]) >= 7
            and int(by_version["challenger"]["inference_count"]) >= 14
        )
        assert int(by_version["main"]["inference_stats"]["success"]["count"]) >= 2
        with urllib.request.urlopen(f"{d.url}/v2/models/eta/versions/2/stats") as r:
            (rest_stats,) = json.loads(r.read())["model_stats"]
        assert rest_stats["version"] == "challenger"
        assert rest_stats["inference_count"] >= int(by_version["challenger"]["inference_count"])

        # what the client got wrong is INVALID_ARGUMENT or NOT_FOUND, never UNKNOWN/INTERNAL
        wrong_shape = grpcclient.InferInput("input-0", [2, 5], "FP64")
        wrong_shape.set_data_from_numpy(np.zeros((2, 5)))
        wrong_type = grpcclient.InferInput("input-0", [1, 3], "BYTES")
        wrong_type.set_data_from_numpy(np.array([[b"a", b"b", b"c"]], dtype=object))
        nan = grpcclient.InferInput("input-0", [1, 3], "FP64")
        nan.set_data_from_numpy(np.array([[np.nan, 1.0, 2.0]]))
        cases = [
            (dict(model_name="eta", inputs=[wrong_shape], model_version="main"), "INVALID_ARGUMENT"),
            (dict(model_name="eta", inputs=[wrong_type], model_version="main"), "INVALID_ARGUMENT"),
            (dict(model_name="eta", inputs=[nan], model_version="main"), "INVALID_ARGUMENT"),
            (
                dict(
                    model_name="eta",
                    inputs=_input(x),
                    model_version="1",
                    outputs=[grpcclient.InferRequestedOutput("nope")],
                ),
                "INVALID_ARGUMENT",
            ),
            (dict(model_name="nope", inputs=_input(x)), "NOT_FOUND"),
            (dict(model_name="eta", inputs=_input(x), model_version="9"), "NOT_FOUND"),
        ]
        for kwargs, code in cases:
            with pytest.raises(InferenceServerException) as exc:
                client.infer(**kwargs)
            assert code in _status(exc), (kwargs.get("model_version"), str(exc.value))

        # streaming infer: one response per request, in order; an error is a message, the stream goes on
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            client.async_stream_infer("eta", _input(x), model_version="1", request_id="s-1")
            client.async_stream_infer("eta", [wrong_shape], model_version="1", request_id="s-2")
            client.async_stream_infer("eta", _input(x), model_version="2", request_id="s-3")
            got = [answers.get(timeout=30) for _ in range(3)]
        finally:
            client.stop_stream()
        (ok1, err1), (bad, err2), (ok3, err3) = got
        assert err1 is None and err3 is None and ok1.get_response().id == "s-1"
        assert np.allclose(
            ok3.as_numpy(ok3.get_response(as_json=True)["outputs"][0]["name"]).ravel(), 100 * expected
        )
        assert bad is None and "INVALID_ARGUMENT" in str(err2)
    finally:
        client.close()


@pytest.fixture
def flaky_challenger(models) -> str:
    """A registered pyfunc model that raises on every row whose first feature is positive (about half the
    requests), like a canary whose feature pipeline breaks on some inputs."""
    import mlflow
    from mlflow.models import infer_signature

    from wolt_jupyter import _mlflow

    _mlflow.configure()

    # defined here, not at module level: cloudpickle then pickles the class by value, so the runtime
    # process needs no test code to load it
    class Flaky(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            frame = pd.DataFrame(model_input)
            if (frame.iloc[:, 0] > 0).any():
                raise RuntimeError("feature store timeout")
            return frame.sum(axis=1).to_numpy() * 3.0

    example = pd.DataFrame(np.full((2, 3), -1.0), columns=FEATURES)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=Flaky(), registered_model_name="eta-flaky",
            signature=infer_signature(example, np.zeros(2)), pip_requirements=[],
        )  # fmt: skip
    return "models:/eta-flaky/1"


@pytest.mark.usefixtures("undeploy_all")
def test_failing_challenger_is_retried_on_the_champion_no_client_sees_it(
    shell, models, rows, flaky_challenger
) -> None:
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['v1']} --ab {flaky_challenger}=50")
    assert d.status == "ready"
    shell.user_ns["rows"] = rows
    out = shell.run_line_magic("wolt_predict", "eta rows --per-row")  # 200 requests; raises on any failure
    assert len(out) == len(rows)
    value = out.columns[0]
    got = np.ravel(out[value].tolist())
    sums = rows[FEATURES].sum(axis=1).to_numpy()
    positive = rows[FEATURES[0]].to_numpy() > 0
    # every request the challenger could not answer was answered by the champion, with the champion's model
    challenger = (out["variant"] == "challenger").to_numpy()
    assert not (challenger & positive).any()
    assert np.allclose(got[challenger], 3 * sums[challenger]) and challenger.sum() > 10
    assert np.allclose(got[~challenger], sums[~challenger], atol=1e-6)

    with urllib.request.urlopen(f"{d.url}/metrics") as r:
        metrics = r.read().decode()
    retries = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("wolt_champion_retries_total{") and 'variant="challenger"' in line
    )
    assert retries > 10
    with urllib.request.urlopen(f"{d.url}/v2/models/eta/versions/challenger/stats") as r:
        (stats,) = json.loads(r.read())["model_stats"]
    assert stats["inference_stats"]["fail"]["count"] == retries  # the challenger's failures stay its own

    log = shell.run_line_magic("wolt_responses", "eta")
    failed = log[(log["variant"] == "challenger") & (log["status"] == 500)]
    assert len(failed) == retries
    assert failed["error"].str.startswith("retried on the champion 'main'").all()
    answered = log[(log["variant"] == "main") & log["id"].isin(failed["id"])]
    assert len(answered) == len(failed) and (answered["status"] == 200).all()
    # the client-facing answers: 200 requests, 0 failed
    assert (log.loc[log["status"] == 200, "id"].nunique()) == len(rows)
