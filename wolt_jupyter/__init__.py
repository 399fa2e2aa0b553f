"""wolt-jupyter: from a notebook cell to a monitored production model.

``import wolt_jupyter`` and ``%load_ext wolt_jupyter`` stay fast: the public functions below are looked up
lazily, so MLflow, pandas and scikit-learn are imported only when one of them is first called.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from wolt_jupyter._version import __version__

# public name -> module that defines it
_LAZY = {
    "settings": "wolt_jupyter.config",
    "Settings": "wolt_jupyter.config",
    "experiment": "wolt_jupyter.tracking",
    "log": "wolt_jupyter.tracking",
    "last_run": "wolt_jupyter.tracking",
    "RunCard": "wolt_jupyter.tracking",
    "register": "wolt_jupyter.registry",
    "models": "wolt_jupyter.registry",
    "ModelVersionCard": "wolt_jupyter.registry",
    "DeploymentSpec": "wolt_jupyter.spec",
    "Variant": "wolt_jupyter.spec",
    "deploy": "wolt_jupyter.deployments",
    "get_deployment": "wolt_jupyter.deployments",
    "list_deployments": "wolt_jupyter.deployments",
    "traffic": "wolt_jupyter.deployments",
    "promote": "wolt_jupyter.deployments",
    "rollback": "wolt_jupyter.deployments",
    "undeploy": "wolt_jupyter.deployments",
    "predict": "wolt_jupyter.deployments",
    "read_responses": "wolt_jupyter.deployments",
    "feedback": "wolt_jupyter.ground_truth",
    "FeedbackResult": "wolt_jupyter.ground_truth",
    "compare": "wolt_jupyter.monitoring.reports",
    "drift": "wolt_jupyter.monitoring.reports",
    "monitor": "wolt_jupyter.widgets.monitor",
    "updates": "wolt_jupyter.updater.history",
    "autoupdate": "wolt_jupyter.updater.run",
    "steer_rollout": "wolt_jupyter.updater.control",
}
# public name -> the name it has in its module, where the two differ
_RENAMED = {"get_deployment": "get", "list_deployments": "deployments", "steer_rollout": "steer"}

__all__ = [
    "DeploymentSpec",
    "FeedbackResult",
    "ModelVersionCard",
    "RunCard",
    "Settings",
    "Variant",
    "__version__",
    "autoupdate",
    "compare",
    "deploy",
    "drift",
    "experiment",
    "feedback",
    "get_deployment",
    "last_run",
    "list_deployments",
    "load_ipython_extension",
    "log",
    "models",
    "monitor",
    "predict",
    "promote",
    "read_responses",
    "register",
    "rollback",
    "settings",
    "steer_rollout",
    "traffic",
    "undeploy",
    "unload_ipython_extension",
    "updates",
]

if TYPE_CHECKING:  # pragma: no cover
    from wolt_jupyter.config import Settings, settings
    from wolt_jupyter.deployments import deploy, predict, promote, read_responses, rollback, traffic, undeploy
    from wolt_jupyter.deployments import deployments as list_deployments
    from wolt_jupyter.deployments import get as get_deployment
    from wolt_jupyter.ground_truth import FeedbackResult, feedback
    from wolt_jupyter.monitoring.reports import compare, drift
    from wolt_jupyter.registry import ModelVersionCard, models, register
    from wolt_jupyter.spec import DeploymentSpec, Variant
    from wolt_jupyter.tracking import RunCard, experiment, last_run, log
    from wolt_jupyter.updater.control import steer as steer_rollout
    from wolt_jupyter.updater.history import updates
    from wolt_jupyter.widgets.monitor import monitor


def __getattr__(name: str) -> Any:
    if name == "responses":  # the response-log package (wolt_jupyter.responses.add_feedback), imported lazily
        return import_module("wolt_jupyter.responses")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wolt_jupyter' has no attribute {name!r}")
    value = getattr(import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where jupyter_server finds the REST API of the lab extension (``wolt_jupyter.server``)."""
    return [{"module": "wolt_jupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The built JupyterLab extension shipped inside the package (``labextension/`` builds it there)."""
    return [{"src": "labextension", "dest": "wolt-jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext wolt_jupyter``: register the ``%wolt_*`` magics (imports only IPython)."""
    from wolt_jupyter.magics import WoltMagics

    ipython.register_magics(WoltMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext wolt_jupyter``: remove the magics again."""
    from wolt_jupyter.magics import WoltMagics

    manager = ipython.magics_manager
    for kind, names in WoltMagics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(WoltMagics.__name__, None)
