"""MLflow deployments plugin: ``mlflow deployments create -t wolt-local -m models:/eta@champion --name eta``.

Targets ``wolt-local``, ``wolt-kubernetes``, ``wolt-seldon`` and ``wolt-kserve`` are the project's backends,
driven through :mod:`wolt_jupyter.deployments` exactly as the magics drive them. ``config`` keys (``-C k=v``):
``ab`` (``[NAME:]URI=WEIGHT``, comma-separated), ``canary``, ``shadow`` (comma-separated URIs), ``sticky_key``,
``namespace``, ``wait`` (``false`` to return at once).

``create``/``update`` return the deployment as a dict with ``flavor`` (MLflow's CLI prints it); every error
is a :class:`DeploymentError`, which MLflow's CLI (click) prints as one line and exits 1 on. ``predict``
takes a DataFrame, a dict of columns, MLflow's scoring-server forms (``dataframe_split``,
``dataframe_records``, ``inputs``/``instances`` tensors) or a 2-D array.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from mlflow.deployments import BaseDeploymentClient
from mlflow.exceptions import MlflowException

from wolt_jupyter.config import TARGETS, unknown_target
from wolt_jupyter.errors import InvalidArgument, WoltError

if TYPE_CHECKING:
    from wolt_jupyter.backends.base import Deployment

PREFIX = "wolt-"
FLAVOR = "python_function"  # the runtime serves every model through MLflow's pyfunc


class DeploymentError(MlflowException, click.ClickException):  # type: ignore[misc]  # click's stub: message is Final
    """An MlflowException for Python callers that MLflow's CLI prints as ``Error: <one line>`` (exit 1)
    instead of a traceback: click shows a ClickException's message and exits with its code."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)
        MlflowException.__init__(self, message)


def _target(target_uri: str) -> str:
    scheme = target_uri.split(":", 1)[0]
    target = scheme[len(PREFIX) :] if scheme.startswith(PREFIX) else scheme
    if target not in TARGETS:
        raise DeploymentError(unknown_target(target_uri, prefix=PREFIX))
    return target


def _list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _translated(func):
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DeploymentError:
            raise
        except (WoltError, MlflowException) as exc:
            raise DeploymentError(str(getattr(exc, "message", exc)).strip().splitlines()[0]) from None

    return wrapper


# what MLflow's deployments CLI prints of a deployment: the card's data (without the dry-run extras) and
# the flavor MLflow's CLI reads
_PLUGIN_FIELDS = ("name", "target", "status", "url", "grpc_url", "revision", "variants")
_SPLIT_KEYS = ("ab", "canary", "shadow")  # config keys that describe a whole split, not an attribute


def _as_dict(deployment: Deployment) -> dict[str, Any]:
    data = deployment.to_dict()
    return {"flavor": FLAVOR, **{key: data.get(key) for key in _PLUGIN_FIELDS}}


class WoltDeploymentClient(BaseDeploymentClient):
    """One client for the four targets; the target comes from the URI (``wolt-local``, …)."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.target = _target(target_uri)

    def _deploy(self, name: str, model_uri: str | None, config: dict | None) -> dict[str, Any]:
        from wolt_jupyter import deployments

        config = dict(config or {})
        deployment = deployments.deploy(
            name,
            model_uri,
            ab=_list(config.get("ab")),
            canary=config.get("canary"),
            shadow=_list(config.get("shadow")),
            sticky_key=config.get("sticky_key"),
            target=self.target,
            namespace=config.get("namespace"),
            wait=str(config.get("wait", "true")).lower() != "false",
        )
        return _as_dict(deployment)

    @_translated
    def create_deployment(self, name, model_uri, flavor=None, config=None, endpoint=None):
        from wolt_jupyter.config import settings
        from wolt_jupyter.revisions import RevisionStore

        if RevisionStore(settings().home).exists(name):
            raise DeploymentError(
                f"deployment {name!r} exists; use update_deployment (`mlflow deployments update`)"
            )
        return self._deploy(name, model_uri, config)

    @_translated
    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):
        """MLflow's contract (``BaseDeploymentClient.update_deployment``): a new ``model_uri`` replaces the model
        the deployment serves, a config updates its attributes. Here that is the main variant's model: the other
        variants, their weights, the shadows, routing and logging stay. A config with ``ab``/``canary``/``shadow``
        deploys that split instead (with ``model_uri``, else the current main model, as main)."""
        from dataclasses import replace

        from wolt_jupyter import deployments
        from wolt_jupyter.serving.compatibility import main_variant

        config = dict(config or {})
        current = deployments.revision_store().spec(name)
        main = next((v for v in current.live if v.name == current.routing.champion), None) or main_variant(
            current
        )
        if any(config.get(key) for key in _SPLIT_KEYS):
            return self._deploy(name, model_uri or main.model, config)
        spec = current
        if model_uri is not None:
            variants = tuple(replace(v, model=model_uri) if v.name == main.name else v for v in spec.variants)
            spec = replace(spec, variants=variants)
        if "sticky_key" in config:
            spec = replace(spec, routing=replace(spec.routing, sticky_key=config["sticky_key"] or None))
        deployment = deployments.deploy(
            name,
            spec=spec,
            target=self.target,
            namespace=config.get("namespace"),
            wait=str(config.get("wait", "true")).lower() != "false",
        )
        return _as_dict(deployment)

    @_translated
    def delete_deployment(self, name, config=None, endpoint=None):
        from wolt_jupyter import deployments

        deployments.undeploy(name)

    @_translated
    def list_deployments(self, endpoint=None):
        from wolt_jupyter import deployments

        table = deployments.deployments()
        return [row for row in table.to_dict("records") if row.get("target") == self.target]

    @_translated
    def get_deployment(self, name, endpoint=None):
        from wolt_jupyter import deployments

        return _as_dict(deployments.get(name))

    @_translated
    def predict(self, deployment_name=None, inputs=None, endpoint=None):
        from wolt_jupyter import deployments

        return deployments.predict(deployment_name, as_frame(inputs))


def as_frame(inputs: Any) -> Any:
    """What ``predict`` was given, as a DataFrame (or a 2-D array for tensor models): MLflow's request forms
    (as its scoring server takes them: ``dataframe_split``, ``dataframe_records``, ``inputs``/``instances``),
    a dict of columns, records, or a JSON string of any of those."""
    import json

    import numpy as np
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        return inputs
    if isinstance(inputs, (str, bytes)):
        try:
            inputs = json.loads(inputs)
        except ValueError as exc:
            raise InvalidArgument(f"predict input is not JSON: {exc}") from None
    if isinstance(inputs, dict):
        if "dataframe_split" in inputs:
            split = inputs["dataframe_split"]
            if not isinstance(split, dict) or "data" not in split:
                raise InvalidArgument("dataframe_split needs {'columns': [...], 'data': [[...], ...]}")
            return pd.DataFrame(split["data"], columns=split.get("columns"), index=split.get("index"))
        if "dataframe_records" in inputs:
            return pd.DataFrame.from_records(inputs["dataframe_records"])
        for key in ("inputs", "instances"):
            if key in inputs:
                return as_frame(inputs[key]) if isinstance(inputs[key], dict) else _rows(inputs[key])
        if inputs and all(np.ndim(v) == 0 for v in inputs.values()):
            return pd.DataFrame([inputs])  # one row given as {column: value}
        return pd.DataFrame({k: list(v) if np.ndim(v) else [v] for k, v in inputs.items()})
    if isinstance(inputs, list) and inputs and all(isinstance(r, dict) for r in inputs):
        return pd.DataFrame.from_records(inputs)
    return _rows(inputs)


def _rows(values: Any) -> Any:
    import numpy as np

    array = np.asarray(values)
    if array.ndim == 1:
        array = array.reshape(1, -1)  # one row of a tensor model
    if array.ndim != 2:
        raise InvalidArgument(f"tensor input must be one row or a 2-D array of rows, got shape {array.shape}")
    return array


def run_local(target, name, model_uri, flavor=None, config=None):
    """Deploy to the local runtime (whatever the target), for trying a model out."""
    return WoltDeploymentClient("wolt-local").create_deployment(name, model_uri, flavor, config)


def target_help() -> str:
    return __doc__ or ""
