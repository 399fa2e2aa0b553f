"""Train and register the serving tests' models: ``python make_models.py OUT_DIR`` (MLFLOW_TRACKING_URI set).

Run as a subprocess so MLflow's process-wide tracking URI never leaks into other tests. Writes the fitted
scikit-learn models to OUT_DIR/lr_v1.pkl and lr_v2.pkl so tests can compute the answers they expect.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import serving_pymodels as pymodels
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["f0", "f1", "f2", "f3"]


def _register(name: str, signature: Any, *, sklearn_model: Any = None, python_model: Any = None) -> None:
    """One run logging the model as a new version of ``name``; no requirement inference (it reloads the
    model in a subprocess)."""
    with mlflow.start_run():
        if python_model is not None:
            mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                registered_model_name=name,
                signature=signature,
                pip_requirements=[],
            )
        else:
            mlflow.sklearn.log_model(
                sklearn_model,
                name="model",
                registered_model_name=name,
                signature=signature,
                pip_requirements=[],
            )


def main(out: Path) -> None:
    cloudpickle.register_pickle_by_value(pymodels)  # the runtime process needs no test code
    mlflow.set_experiment("serving-tests")
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(400, 4)), columns=FEATURES)
    y1 = (x["f0"] + 0.5 * x["f1"] - x["f2"] > 0).astype("int64")
    y2 = (x["f0"] - x["f3"] > 0.3).astype("int64")  # a different model: shadow disagreements are real
    for i, y in enumerate((y1, y2), start=1):
        model = LogisticRegression().fit(x, y)
        _register("wolt-lr", infer_signature(x, model.predict(x)), sklearn_model=model)
        (out / f"lr_v{i}.pkl").write_bytes(pickle.dumps(model))
    # the v1 model again, with a tensor signature ([-1, 4] float64) and with no signature at all
    lr_v1 = pickle.loads((out / "lr_v1.pkl").read_bytes())
    arr = x.to_numpy()
    for name, sig in (("wolt-tensor", infer_signature(arr, lr_v1.predict(x))), ("wolt-nosig", None)):
        _register(name, sig, sklearn_model=lr_v1)
    # selects columns by name: fails on a bare array, so the runtime must keep the DataFrame path for it
    pipe = make_pipeline(
        ColumnTransformer([("scaled", StandardScaler(), ["f0", "f2"])], remainder="drop"),
        LogisticRegression(),
    ).fit(x, y1)
    _register("wolt-pipe", infer_signature(x, pipe.predict(x)), sklearn_model=pipe)
    (out / "pipe.pkl").write_bytes(pickle.dumps(pipe))
    sig = infer_signature(x, np.zeros(len(x), dtype=np.int64))
    for name, py in (
        ("wolt-raises", pymodels.Raises()),
        ("wolt-sleepy", pymodels.Sleepy(1.0)),  # version 1: 1 s per predict
        ("wolt-sleepy", pymodels.Sleepy(0.3)),  # version 2: 0.3 s, the slow challenger
        ("wolt-hangs", pymodels.Hangs()),
    ):
        _register(name, sig, python_model=py)
    sx = pd.DataFrame({"city": ["oslo", "rome"], "n": [1, 2]})
    _register(
        "wolt-strings",
        infer_signature(sx, pymodels.Strings().predict(None, sx)),
        python_model=pymodels.Strings(),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
