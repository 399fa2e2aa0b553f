"""Any framework from a variable: %wolt_register detects the MLflow flavor of the object (here ONNX, built with
onnx's own helpers), infers the signature from --input-example, and the version deploys and predicts."""

from __future__ import annotations

import numpy as np
import onnx  # a test extra (pyproject [test]: onnx, onnxruntime)
import pytest
from IPython.core.error import UsageError


def linear_onnx(weights: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["prediction"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, weights.shape[0]])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.integration
def test_onnx_model_from_a_variable_registers_deploys_and_predicts(shell) -> None:
    import wolt_jupyter

    weights = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    shell.user_ns.update(net=linear_onnx(weights), X=X, sample=X[:4])
    card = shell.run_line_magic(
        "wolt_register", "net --name lin-onnx --input-example sample --alias champion"
    )
    assert card.version == "1" and card.signature_inputs == "tensor(float32, (-1, 3))"
    assert card.signature_outputs == "prediction: tensor(float32, (-1, 1))"
    from mlflow.models import get_model_info

    assert "onnx" in get_model_info(card.uri).flavors

    shell.run_line_magic("wolt_deploy", "lin-onnx --model models:/lin-onnx@champion")
    try:
        out = shell.run_line_magic("wolt_predict", "lin-onnx X")
        got = np.array(out["prediction"].tolist(), dtype=float).ravel()
        assert np.allclose(got, (X @ weights).ravel(), rtol=1e-5)
        assert set(out["variant"]) == {"main"}
    finally:
        wolt_jupyter.undeploy("lin-onnx")


def test_an_object_no_flavor_takes_names_the_flavors_tried(shell) -> None:
    class Handmade:
        def predict(self, X):
            return X

    shell.user_ns["odd"] = Handmade()
    with pytest.raises(UsageError, match=r"no MLflow flavor takes it\. Tried the flavors for .*torch.*onnx"):
        shell.run_line_magic("wolt_register", "odd --name odd")
