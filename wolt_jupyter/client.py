"""A small V2 (Open Inference Protocol) client: DataFrame in, predictions and the answering variant out.

Used by ``%wolt_predict`` and the tests; any standard V2 client (tritonclient, MLServer's types) works
against the runtime just as well.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter.config import mask_url
from wolt_jupyter.errors import EndpointError, InvalidArgument
from wolt_jupyter.serving.router import ROUTE_KEY_HEADER, VARIANT_HEADER

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def tensor(name: str, values: Any) -> dict[str, Any]:
    """One V2 input tensor from an array-like."""
    import numpy as np

    from wolt_jupyter.serving.tensors import datatype_of  # the runtime's own dtype -> V2 datatype mapping

    array = np.asarray(values)
    datatype = datatype_of(array)
    data = array.ravel().tolist()
    if datatype == "BYTES":
        data = [str(v) for v in data]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def encode_frame(frame: pd.DataFrame | np.ndarray | Mapping[str, Any]) -> list[dict[str, Any]]:
    """A DataFrame or dict becomes one tensor per column; a 2-D array one tensor named ``input-0``."""
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame().T
    if isinstance(frame, pd.DataFrame):
        return [tensor(str(col), frame[col].to_numpy()) for col in frame.columns]
    if isinstance(frame, Mapping):
        return [tensor(str(k), v) for k, v in frame.items()]
    import numpy as np

    array = np.asarray(frame)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    return [tensor("input-0", array)]


@dataclass
class Prediction:
    """One V2 answer as the notebook side sees it (the runtime's own ``serving.dataplane.InferResult`` is another
    thing: the job result before encoding)."""

    id: str
    variant: str | None
    outputs: dict[str, np.ndarray]  # reshaped to each output's shape
    model_version: str | None = None




def feedback_token(deployment: str, home: Any = None) -> str:
    """The deployment's feedback token (``<home>/deployments/<name>/feedback.token``, the notebook user's,
    0600): the credential ``POST .../feedback`` needs. ``home`` defaults to the settings' state dir."""
    from pathlib import Path

    from wolt_jupyter.serving.admin import FEEDBACK_TOKEN_FILE, read_token, token_path

    if home is None:
        from wolt_jupyter.config import settings

        home = settings().home
    try:
        return read_token(Path(home), deployment, FEEDBACK_TOKEN_FILE)
    except OSError:
        path = token_path(Path(home), deployment, FEEDBACK_TOKEN_FILE)
        raise EndpointError(
            f"no feedback token for {deployment!r} at {path}: the runtime creates it when it starts"
        ) from None


def send_feedback(
    url: str, deployment: str, items: Any, *, token: str | None = None, timeout: float = 30.0
) -> int:
    """Send ground truth (``[{"id": request_id, "ground_truth": value}, ...]``) to the runtime at ``url``;
    returns how many were stored. ``token`` defaults to the deployment's feedback token."""
    import requests

    token = token or feedback_token(deployment)
    doc, _ = _post_json(
        requests.post,
        url.rstrip("/"),
        f"/v2/models/{deployment}/feedback",
        json.dumps({"feedback": list(items)}, default=_plain),
        {"content-type": "application/json", "authorization": f"Bearer {token}"},
        timeout,
    )
    return int(doc["stored"])


def _post_json(
    post: Callable[..., Any], base: str, path: str, data: str, headers: dict[str, str], timeout: float
) -> tuple[dict[str, Any], Mapping[str, str]]:
    """POST to the runtime; its JSON answer and headers. Anything but a 200 is one EndpointError line (the
    runtime's ``{"error": ...}``, or the start of a body that is not JSON)."""
    import requests

    try:
        resp = post(base + path, data=data, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise EndpointError(f"cannot reach {mask_url(base)}: {type(exc).__name__}") from None
    try:
        doc = resp.json()
    except ValueError:
        doc = {"error": resp.text[:200]}
    if resp.status_code != 200:
        raise EndpointError(f"{mask_url(base)}{path} answered {resp.status_code}: {doc.get('error', doc)}")
    return doc, resp.headers


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class V2Client:
    """Keep-alive HTTP client for one deployment's V2 endpoint."""

    def __init__(self, url: str, model: str, *, timeout: float = 30.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def infer(
        self,
        data: Any,
        *,
        variant: str | None = None,
        route_key: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        path = f"/v2/models/{self.model}" + (f"/versions/{variant}" if variant else "") + "/infer"
        body: dict[str, Any] = {"id": request_id or uuid.uuid4().hex, "inputs": encode_frame(data)}
        if parameters:
            body["parameters"] = dict(parameters)
        headers = {"content-type": "application/json"}
        if route_key is not None:
            headers[ROUTE_KEY_HEADER] = str(route_key)
        doc, answer_headers = _post_json(
            self._session.post, self.url, path, json.dumps(body), headers, self.timeout
        )
        import numpy as np

        params = doc.get("parameters") or {}
        outputs = {}
        for out in doc.get("outputs", []):
            values = np.asarray(out.get("data", []), dtype=object if out.get("datatype") == "BYTES" else None)
            shape = out.get("shape")
            outputs[out["name"]] = (
                values.reshape(shape) if shape and values.size == int(np.prod(shape)) else values
            )
        return Prediction(
            id=doc.get("id", body["id"]),
            variant=answer_headers.get(VARIANT_HEADER) or params.get("variant"),
            outputs=outputs,
            model_version=doc.get("model_version"),
        )


def _arrays(data: Any) -> list[tuple[str, np.ndarray]]:
    """(name, array) per input tensor, as :func:`encode_frame` names and shapes them."""
    import numpy as np

    arrays = []
    for t in encode_frame(data):
        array = np.asarray(t["data"], dtype=object if t["datatype"] == "BYTES" else None)
        arrays.append((t["name"], array.reshape(t["shape"])))
    return arrays


class GrpcClient:
    """The same ``infer`` as :class:`V2Client`, over the runtime's gRPC port (``host:port``, plaintext):
    ``inference.GRPCInferenceService/ModelInfer`` with raw tensor contents, as tritonclient.grpc sends."""

    def __init__(self, target: str, model: str, *, timeout: float = 30.0) -> None:
        import grpc

        from wolt_jupyter.serving.grpc_service import MESSAGES, SERVICE

        self.target, self.model, self.timeout = target, model, timeout
        self._messages = MESSAGES
        self._channel = grpc.insecure_channel(target)
        self._infer = self._channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=MESSAGES["ModelInferRequest"].SerializeToString,
            response_deserializer=MESSAGES["ModelInferResponse"].FromString,
        )

    def close(self) -> None:
        self._channel.close()

    def infer(
        self,
        data: Any,
        *,
        variant: str | None = None,
        route_key: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Prediction:
        import grpc

        from wolt_jupyter.serving.grpc_service import param_value, set_param
        from wolt_jupyter.serving.tensors import DTYPES, datatype_of, from_binary, to_binary

        request = self._messages["ModelInferRequest"](
            model_name=self.model, model_version=variant or "", id=request_id or uuid.uuid4().hex
        )
        for key, value in (parameters or {}).items():
            set_param(request.parameters[key], value)
        for name, array in _arrays(data):
            datatype = datatype_of(array)
            request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(to_binary(array, datatype))
        metadata = ((ROUTE_KEY_HEADER, str(route_key)),) if route_key is not None else None
        try:
            response, call = self._infer.with_call(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            raise EndpointError(
                f"{self.target} ModelInfer answered {getattr(code, 'name', code)}: {exc.details()}"
            ) from None
        outputs = {}
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=False):
            if out.datatype not in DTYPES:
                raise EndpointError(f"{self.target} answered an unknown datatype {out.datatype!r}")
            outputs[out.name] = from_binary(out.name, out.datatype, tuple(out.shape), raw)
        params = {k: param_value(v) for k, v in response.parameters.items()}
        trailing = dict(call.trailing_metadata() or ())
        return Prediction(
            id=response.id or request.id,
            variant=trailing.get(VARIANT_HEADER) or params.get("variant"),
            outputs=outputs,
            model_version=response.model_version or None,
        )


def predict_frame(
    url: str,
    model: str,
    frame: Any,
    *,
    per_row: bool = False,
    route_key_column: str | None = None,
    grpc: str | None = None,
) -> pd.DataFrame:
    """Send ``frame`` through the endpoint; predictions (one column per output) plus ``variant`` and ``id``.

    ``per_row`` sends each row as its own request, so the traffic split applies row by row as it would to
    live traffic; otherwise the whole frame is one request answered by one variant. ``grpc``: the
    deployment's gRPC ``host:port``, to send over gRPC instead of REST.
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        import numpy as np

        array = np.asarray(frame)
        if array.ndim != 2:
            raise InvalidArgument(
                f"predict takes a DataFrame or a 2-D array of rows, got shape {array.shape}"
            )
        frame = pd.DataFrame(array)
        frame.columns = [f"input-{i}" for i in range(array.shape[1])]
        encode = lambda part: part.to_numpy()  # noqa: E731 - one tensor for all columns
    else:
        encode = lambda part: part  # noqa: E731
    if route_key_column and route_key_column not in frame.columns:
        raise InvalidArgument(
            f"no column {route_key_column!r} to route by; columns: {', '.join(map(str, frame.columns))}"
        )
    client: V2Client | GrpcClient = GrpcClient(grpc, model) if grpc else V2Client(url, model)
    rows: list[dict[str, Any]] = []
    try:
        chunks = [frame.iloc[[i]] for i in range(len(frame))] if per_row else [frame]
        for chunk in chunks:
            features = chunk.drop(columns=[route_key_column]) if route_key_column else chunk
            key = str(chunk[route_key_column].iloc[0]) if route_key_column and per_row else None
            result = client.infer(encode(features), route_key=key)
            n = len(chunk)
            for i in range(n):
                row: dict[str, Any] = {}
                for name, values in result.outputs.items():
                    value = values[i] if values.ndim and values.shape[0] == n else values
                    row[name] = value.tolist() if hasattr(value, "tolist") else value
                row["variant"] = result.variant
                row["id"] = result.id
                rows.append(row)
    finally:
        client.close()
    return pd.DataFrame(rows, index=frame.index)
