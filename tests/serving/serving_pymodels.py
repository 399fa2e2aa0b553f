"""Tiny pyfunc models for the serving tests (pickled by value, so the runtime process needs no test code)."""

from __future__ import annotations

import threading
import time

import mlflow.pyfunc
import numpy as np
import pandas as pd


class Raises(mlflow.pyfunc.PythonModel):
    """Always fails, like a model whose feature pipeline broke."""

    def predict(self, context, model_input, params=None):
        raise ValueError(f"boom: cannot score {len(model_input)} rows")


class Sleepy(mlflow.pyfunc.PythonModel):
    """Slow on purpose: a shadow like this must not delay live answers."""

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds

    def predict(self, context, model_input, params=None):
        time.sleep(self.seconds)
        return np.zeros(len(model_input), dtype=np.int64)


class Strings(mlflow.pyfunc.PythonModel):
    """Takes a string column: exercises BYTES tensors and the DataFrame path."""

    def predict(self, context, model_input, params=None):
        assert isinstance(model_input, pd.DataFrame)
        return pd.DataFrame(
            {
                "length": model_input["city"].str.len().astype("int64") + model_input["n"].astype("int64"),
                "upper": model_input["city"].str.upper(),
            }
        )


class Hangs(mlflow.pyfunc.PythonModel):
    """Answers its first predict (the runtime's probe at load), then never returns: a hung model."""

    def __init__(self):
        self.calls = 0

    def predict(self, context, model_input, params=None):
        self.calls += 1
        if self.calls > 1:
            threading.Event().wait()
        return np.zeros(len(model_input), dtype=np.int64)
