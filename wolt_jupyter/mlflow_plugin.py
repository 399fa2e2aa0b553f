"""MLflow deployments plugin: ``mlflow deployments create -t wolt-local -m models:/eta@champion --name eta``.

Targets ``wolt-local``, ``wolt-kubernetes``, ``wolt-seldon`` and ``wolt-kserve`` are the project's backends,
driven through :mod:`wolt_jupyter.deployments` exactly as the magics drive them. ``config`` keys (``-C k=v``):
``ab`` (``[NAME:]URI=WEIGHT``, comma-separated), ``canary``, ``shadow`` (comma-separated URIs), ``sticky_key``,
``namespace``, ``wait`` (``false`` to return at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow.deployments import BaseDeploymentClient
from mlflow.exceptions import MlflowException

from wolt_jupyter.config import TARGETS, unknown_target
from wolt_jupyter.errors import WoltError

if TYPE_CHECKING:
    from wolt_jupyter.backends.base import Deployment

PREFIX = "wolt-"


def _target(target_uri: str) -> str:
    scheme = target_uri.split(":", 1)[0]
    target = scheme[len(PREFIX) :] if scheme.startswith(PREFIX) else scheme
    if target not in TARGETS:
        raise MlflowException(unknown_target(target_uri, prefix=PREFIX))
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
        except WoltError as exc:  # MLflow's CLI prints MlflowException messages cleanly
            raise MlflowException(str(exc)) from None

    return wrapper


# what MLflow's deployments CLI prints of a deployment: the card's data, without the dry-run extras
_PLUGIN_FIELDS = ("name", "target", "status", "url", "revision", "variants")


def _as_dict(deployment: Deployment) -> dict[str, Any]:
    data = deployment.to_dict()
    return {key: data[key] for key in _PLUGIN_FIELDS}


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
            raise MlflowException(f"deployment {name!r} exists; use update_deployment")
        return self._deploy(name, model_uri, config)

    @_translated
    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):
        from wolt_jupyter import deployments

        if model_uri is None:
            current = deployments.get(name)
            model_uri = next(v["model"] for v in current.variants if not v["shadow"])
        return self._deploy(name, model_uri, config)

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

        return deployments.predict(deployment_name, inputs)


def run_local(target, name, model_uri, flavor=None, config=None):
    """Deploy to the local runtime (whatever the target), for trying a model out."""
    return WoltDeploymentClient("wolt-local").create_deployment(name, model_uri, flavor, config)


def target_help() -> str:
    return __doc__ or ""
