"""One small regression model per MLflow flavor installed here, registered in the test's MLflow store.

Every model learns the same target from the same three float columns (so a shadow of one flavor can be
compared with another), and each is logged the way its flavor's users log it: with an input example, and
the signature MLflow infers or one written by hand where the point is what the model names its outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers import FEATURES


def training_data() -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame(np.random.default_rng(7).normal(size=(200, len(FEATURES))), columns=FEATURES)
    return X, X["f0"] * 2.0 - X["f1"] + 0.5 * X["f2"]


def _log(flavor_log: Any, name: str, **kwargs: Any) -> str:
    import mlflow

    with mlflow.start_run():
        info = flavor_log(name="model", registered_model_name=name, pip_requirements=[], **kwargs)
    return f"models:/{name}/{info.registered_model_version}"


def register_flavors(*names: str) -> dict[str, str]:
    """Register the named flavors (all when none are named); returns {flavor: pinned models:/ URI}.

    sklearn: a Pipeline; xgboost, lightgbm: their regressors; onnx: the same LinearRegression converted with
    skl2onnx and a column signature (ONNX names its output ``variable``); pyfunc: DataFrame with ``score``
    and ``sign``; tensor: a pyfunc with a TensorSpec signature ([-1,3] in, ``out`` [-1,1] declared, [N] served);
    onnx_tensor: the ONNX model with a tensor signature ([-1,3] float32)."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from wolt_jupyter._mlflow import configure

    configure()
    X, y = training_data()
    example = X.head(3)
    wanted = set(names) or {"sklearn", "xgboost", "lightgbm", "onnx", "pyfunc", "tensor", "onnx_tensor"}
    uris: dict[str, str] = {}
    if "sklearn" in wanted:
        import mlflow.sklearn

        pipe = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
        uris["sklearn"] = _log(
            mlflow.sklearn.log_model, "flavor-sklearn", sk_model=pipe, input_example=example,
            signature=infer_signature(X, pipe.predict(X)),
        )  # fmt: skip
    if "xgboost" in wanted:
        import mlflow.xgboost
        import xgboost

        xgb = xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(X, y)
        uris["xgboost"] = _log(
            mlflow.xgboost.log_model, "flavor-xgboost", xgb_model=xgb, input_example=example
        )
    if "lightgbm" in wanted:
        import lightgbm
        import mlflow.lightgbm

        lgb = lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(X, y)
        uris["lightgbm"] = _log(
            mlflow.lightgbm.log_model, "flavor-lightgbm", lgb_model=lgb, input_example=example
        )
    if wanted & {"onnx", "onnx_tensor"}:
        import mlflow.onnx
        from skl2onnx import to_onnx

        lin = LinearRegression().fit(X, y)
        onx = to_onnx(lin, X.to_numpy(np.float32)[:1])
        if "onnx" in wanted:
            uris["onnx"] = _log(
                mlflow.onnx.log_model, "flavor-onnx", onnx_model=onx, input_example=example,
                signature=infer_signature(X, lin.predict(X)),
            )  # fmt: skip
        if "onnx_tensor" in wanted:
            xf = X.to_numpy(np.float32)
            uris["onnx_tensor"] = _log(
                mlflow.onnx.log_model, "flavor-onnx-tensor", onnx_model=onx, input_example=xf[:3],
                signature=infer_signature(xf, lin.predict(X).astype(np.float32).reshape(-1, 1)),
            )  # fmt: skip
    if "pyfunc" in wanted:
        uris["pyfunc"] = _log(
            mlflow.pyfunc.log_model, "flavor-pyfunc", python_model=_named_outputs(), input_example=example,
        )  # fmt: skip
    if "tensor" in wanted:
        sig = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, len(FEATURES)))]),
            outputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 1), "out")]),
        )
        uris["tensor"] = _log(
            mlflow.pyfunc.log_model, "flavor-tensor", python_model=_tensor_model(), signature=sig,
            input_example=X.to_numpy()[:3],
        )  # fmt: skip
    return uris


def _named_outputs() -> Any:
    import mlflow.pyfunc

    class NamedOutputs(mlflow.pyfunc.PythonModel):
        """The target as ``score`` and its sign as ``sign``: a model that names its own outputs."""

        def predict(self, context, model_input, params=None):
            score = model_input["f0"] * 2.0 - model_input["f1"] + 0.5 * model_input["f2"]
            return pd.DataFrame({"score": score.astype("float64"), "sign": (score > 0).astype("int64")})

    return NamedOutputs()


def _tensor_model() -> Any:
    import mlflow.pyfunc

    class Weighted(mlflow.pyfunc.PythonModel):
        """The target from a [N,3] tensor, returned as [N] although the signature declares [-1,1]."""

        def predict(self, context, model_input, params=None):
            x = np.asarray(model_input, dtype=np.float64)
            return x @ np.array([2.0, -1.0, 0.5])

    return Weighted()
