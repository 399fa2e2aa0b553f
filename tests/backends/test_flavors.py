"""Every flavor installed here, deployed by the local target: metadata that says what the model really returns,
numbers equal to ``mlflow.pyfunc.load_model(...).predict``, outputs asked for by their advertised names,
shadows of other flavors paired with the main by position, and variants that cannot read the main's inputs
refused before anything changes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
from flavor_models import register_flavors, training_data

from deploy_support import pid_of
from helpers import FEATURES


def _call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _column_request(rows: Any, outputs: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [
            {"name": c, "datatype": "FP64", "shape": [len(rows), 1], "data": rows[c].tolist()}
            for c in FEATURES
        ]
    }
    if outputs:
        doc["outputs"] = [{"name": n} for n in outputs]
    return doc


def _expected(uri: str, data: Any) -> list[np.ndarray]:
    """What MLflow itself returns for ``data``, as arrays in the model's output order."""
    import mlflow.pyfunc
    import pandas as pd

    raw = mlflow.pyfunc.load_model(uri).predict(data)
    if isinstance(raw, pd.DataFrame):
        return [raw[c].to_numpy() for c in raw.columns]
    if isinstance(raw, dict):
        return [np.asarray(v) for v in raw.values()]
    return [np.asarray(raw)]


def _check_served(base: str, variant: str, uri: str, request: dict[str, Any], data: Any) -> dict[str, Any]:
    """Metadata of ``variant`` agrees with what one inference returns, numbers agree with MLflow's; each
    advertised output can be asked for by name. Returns the metadata."""
    status, meta = _call(f"{base}/versions/{variant}")
    assert status == 200, meta
    status, answer = _call(f"{base}/versions/{variant}/infer", request)
    assert status == 200, answer
    outputs = answer["outputs"]
    assert [o["name"] for o in outputs] == [m["name"] for m in meta["outputs"]], (variant, meta, outputs)
    for o, m, want in zip(outputs, meta["outputs"], _expected(uri, data), strict=True):
        assert o["datatype"] == m["datatype"], (variant, o, m)
        assert len(o["shape"]) == len(m["shape"]) and o["shape"][1:] == m["shape"][1:], (variant, o, m)
        got = np.asarray(o["data"]).reshape(o["shape"])
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6, err_msg=variant)
    for m in meta["outputs"]:
        status, one = _call(f"{base}/versions/{variant}/infer", {**request, "outputs": [{"name": m["name"]}]})
        assert status == 200 and [o["name"] for o in one["outputs"]] == [m["name"]], (variant, one)
    return meta


@pytest.mark.usefixtures("undeploy_all")
def test_every_flavor_serves_what_it_advertises_and_shadows_pair_by_position(wolt_home) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter.monitoring.analysis import compare

    uris = register_flavors("sklearn", "xgboost", "lightgbm", "onnx", "pyfunc")
    d = deployments.deploy(
        "zoo",
        uris["sklearn"],
        shadow=[f"{f}:{uris[f]}" for f in ("xgboost", "lightgbm", "onnx", "pyfunc")],
    )
    assert d.status == "ready"
    base = f"{d.url}/v2/models/zoo"
    X, _ = training_data()
    rows = X.iloc[:7]
    request = _column_request(rows)
    metas = {
        "main": _check_served(base, "main", uris["sklearn"], request, rows),
        **{
            f: _check_served(base, f, uris[f], request, rows)
            for f in ("xgboost", "lightgbm", "onnx", "pyfunc")
        },
    }
    # what each advertises: the inputs from the signature, the outputs as the model names them
    assert [(i["name"], i["datatype"]) for i in metas["main"]["inputs"]] == [(c, "FP64") for c in FEATURES]
    assert [o["name"] for o in metas["onnx"]["outputs"]] == ["variable"]
    assert [(o["name"], o["datatype"]) for o in metas["pyfunc"]["outputs"]] == [
        ("score", "FP64"),
        ("sign", "INT64"),
    ]
    assert metas["xgboost"]["outputs"][0]["name"] == "predict"

    # the shadows saw every request; each is paired with main by position, whatever its outputs are called
    deployments.predict("zoo", X.iloc[:40])
    log = deployments.read_responses("zoo")
    shadow_table = compare(log).shadow_table
    assert shadow_table is not None
    main_rows = int((~log["shadow"] & (log["variant"] == "main")).sum())
    assert main_rows >= 40 + 7
    for f in ("xgboost", "lightgbm", "onnx", "pyfunc"):
        assert shadow_table.loc[f, "paired_requests"] == main_rows, (f, shadow_table)
    # the same linear target: ONNX and the named-output pyfunc agree with the main to float precision
    assert shadow_table.loc["onnx", "mean_abs_difference"] < 1e-4
    assert shadow_table.loc["pyfunc", "mean_abs_difference"] < 1e-6


@pytest.mark.usefixtures("undeploy_all")
def test_tensor_signature_served_as_declared_with_an_onnx_shadow(wolt_home) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter.monitoring.analysis import compare

    uris = register_flavors("tensor", "onnx_tensor")
    d = deployments.deploy("tens", uris["tensor"], shadow=[f"onnx:{uris['onnx_tensor']}"])
    base = f"{d.url}/v2/models/tens"
    X, _ = training_data()
    x = X.to_numpy()[:5]
    request = {
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    meta = _check_served(base, "main", uris["tensor"], request, x)
    # declared `out` [-1,1]: served under that name and shape (the model itself returns [N] unnamed)
    assert meta["outputs"] == [{"name": "out", "datatype": "FP64", "shape": [-1, 1]}]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]
    status, answer = _call(f"{base}/infer", {**request, "outputs": [{"name": "out"}]})
    assert status == 200 and answer["outputs"][0]["shape"] == [5, 1]
    onnx_meta = _check_served(base, "onnx", uris["onnx_tensor"], request, x.astype(np.float32))
    assert [o["name"] for o in onnx_meta["outputs"]] == ["variable"]

    deployments.predict("tens", x)
    table = compare(deployments.read_responses("tens")).shadow_table
    assert table.loc["onnx", "paired_requests"] > 0 and table.loc["onnx", "mean_abs_difference"] < 1e-4


@pytest.mark.usefixtures("undeploy_all")
def test_incompatible_variants_are_refused_before_anything_changes(wolt_home, models) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    from wolt_jupyter import deployments
    from wolt_jupyter.errors import IncompatibleVariant

    uris = register_flavors("tensor", "onnx_tensor")
    # a challenger taking one tensor cannot read main's three columns
    with pytest.raises(IncompatibleVariant) as err:
        deployments.deploy("eta", models["v1"], ab=[f"{uris['tensor']}=10"])
    message = str(err.value)
    assert "\n" not in message and "variant 'challenger'" in message and "models:/flavor-tensor/1" in message
    assert "expected exactly one input tensor" in message, message
    assert deployments.deployments().empty and not (wolt_home / "deployments" / "eta").exists()

    # a running deployment keeps its revision, process and routing when a redeploy is refused
    d = deployments.deploy("eta", models["v1"])
    pid = pid_of(wolt_home, "eta")
    with pytest.raises(IncompatibleVariant, match="shadow 'shadow'"):
        deployments.deploy("eta", models["v1"], shadow=[uris["onnx_tensor"]])
    # no signature to compare: one prediction on main's input example decides (this one wants 4 columns)
    from wolt_jupyter._mlflow import configure

    configure()
    X4 = np.random.default_rng(0).normal(size=(20, 4))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LinearRegression().fit(X4, X4.sum(axis=1)),
            name="m",
            registered_model_name="nosig",
            pip_requirements=[],
        )
    with pytest.raises(IncompatibleVariant) as err:
        deployments.deploy("eta", models["v1"], ab=[f"models:/nosig/{info.registered_model_version}=50"])
    assert "has no signature and failed on the main variant's input example" in str(err.value)
    assert "\n" not in str(err.value)
    after = deployments.get("eta")
    assert after.revision == d.revision == 1 and pid_of(wolt_home, "eta") == pid
    assert [v["name"] for v in after.variants] == ["main"]
