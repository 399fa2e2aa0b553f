"""Thin authenticated handlers: parse the request, call the core off the event loop, answer JSON.

No behaviour lives here: every route calls the same function a magic calls (``deployments.deploy``,
``registry.models``, the monitoring sources), so the sidebar, the notebook and the CLI cannot disagree.
``ROUTES`` is the table the extension registers and ``openapi.yaml`` describes (a test keeps them equal).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from tornado import web

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.server import serialize
from wolt_jupyter.server.errors import http_message, http_status
from wolt_jupyter.untrusted import parse_json

NAME = r"(?P<name>[^/]+)"


Method = TypeVar("Method", bound=Callable[..., Awaitable[None]])


def endpoint(method: Method) -> Method:
    """Authenticated, and any error raised inside answered through the one domain-error mapping."""

    @functools.wraps(method)
    async def wrapper(self: WoltHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except web.HTTPError:
            raise
        except Exception as exc:
            status = http_status(exc)
            if status == 500:
                self.log.exception("wolt-jupyter: %s %s failed", self.request.method, self.request.path)
            raise web.HTTPError(status, "%s", http_message(exc)) from exc

    return web.authenticated(wrapper)  # type: ignore[return-value]


class WoltHandler(APIHandler):
    """Base: JSON bodies in, JSON out, and every error as ``{"error": message}`` with its mapped status."""

    async def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking core call in a worker thread, so the server keeps answering meanwhile."""
        return await asyncio.to_thread(func, *args, **kwargs)

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        data = parse_json(self.request.body)  # not JSON, too deep, a lone surrogate: 400
        if not isinstance(data, dict):
            raise InvalidArgument("the request body must be a JSON object")
        return data

    def answer(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message, "status": status_code}))


# -- settings --------------------------------------------------------------------------------------------------
class SettingsHandler(WoltHandler):
    @endpoint
    async def get(self) -> None:
        def read() -> dict[str, Any]:
            from wolt_jupyter._version import __version__
            from wolt_jupyter.config import TARGETS, settings

            s = settings()
            return {
                "version": __version__,
                "targets": list(TARGETS),
                "default_target": s.default_target,
                "namespace": s.namespace,
                "tracking_uri": s.as_dict()["tracking_uri"],
                "metrics_source": "prometheus" if s.prometheus_url else "response log",
            }

        self.answer(await self.call(read))


# -- registry --------------------------------------------------------------------------------------------------
class ModelsHandler(WoltHandler):
    @endpoint
    async def get(self) -> None:
        from wolt_jupyter import registry

        self.answer({"models": registry.grouped_models(await self.call(registry.models))})


class ModelHandler(WoltHandler):
    @endpoint
    async def get(self, name: str) -> None:
        from wolt_jupyter import registry

        self.answer(registry.grouped_models(await self.call(registry.models, name))[0])


# -- deployments -----------------------------------------------------------------------------------------------
def _all_deployments() -> list[dict[str, Any]]:
    """Every recorded deployment with its live status; one broken record is listed with its error."""
    from wolt_jupyter import deployments
    from wolt_jupyter.config import settings
    from wolt_jupyter.revisions import RevisionStore

    out = []
    for name in RevisionStore(settings().home).names():
        try:
            out.append(serialize.deployment(deployments.get(name)))
        except Exception as exc:
            out.append({"name": name, "status": "unknown", "message": http_message(exc), "variants": []})
    return out


class DeploymentsHandler(WoltHandler):
    @endpoint
    async def get(self) -> None:
        self.answer({"deployments": await self.call(_all_deployments)})

    @endpoint
    async def post(self) -> None:
        """Deploy: ``{"name", "spec"}`` or ``{"name", "model", "ab", "canary", "shadow", "sticky_key"}``,
        plus ``target``, ``namespace``, ``dry_run``."""
        from wolt_jupyter import deployments

        body = self.body()
        known = {
            "name",
            "spec",
            "model",
            "ab",
            "canary",
            "shadow",
            "sticky_key",
            "target",
            "namespace",
            "dry_run",
        }
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidArgument(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument('a deployment needs a "name"')
        dry_run = bool(body.get("dry_run", False))
        result = await self.call(
            deployments.deploy,
            name,
            body.get("model"),
            ab=_strings(body, "ab"),
            canary=body.get("canary"),
            shadow=_strings(body, "shadow"),
            sticky_key=body.get("sticky_key"),
            spec=body.get("spec"),
            target=body.get("target"),
            namespace=body.get("namespace"),
            dry_run=dry_run,
        )
        self.answer(serialize.deployment(result), 200 if dry_run else 201)


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f'"{key}" must be a list of strings')
    return value


class DeploymentHandler(WoltHandler):
    @endpoint
    async def get(self, name: str) -> None:
        from wolt_jupyter import deployments

        self.answer(serialize.deployment(await self.call(deployments.get, name)))

    @endpoint
    async def delete(self, name: str) -> None:
        from wolt_jupyter import deployments

        await self.call(deployments.undeploy, name)
        self.set_status(204)
        self.finish()


class TrafficHandler(WoltHandler):
    @endpoint
    async def put(self, name: str) -> None:
        from wolt_jupyter import deployments

        weights = self.body().get("weights")
        if not isinstance(weights, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in weights.values()
        ):
            raise InvalidArgument('"weights" must map variant names to whole numbers, e.g. {"main": 90}')
        self.answer(serialize.deployment(await self.call(deployments.traffic, name, weights)))


class PromoteHandler(WoltHandler):
    @endpoint
    async def post(self, name: str) -> None:
        from wolt_jupyter import deployments

        variant = self.body().get("variant")
        if not isinstance(variant, str) or not variant:
            raise InvalidArgument('say which "variant" takes all the traffic')
        self.answer(serialize.deployment(await self.call(deployments.promote, name, variant)))


class RollbackHandler(WoltHandler):
    @endpoint
    async def post(self, name: str) -> None:
        from wolt_jupyter import deployments

        self.answer(serialize.deployment(await self.call(deployments.rollback, name)))


# -- monitoring ------------------------------------------------------------------------------------------------
def _snapshot(name: str, since: str, step: str, revision_text: str | None) -> dict[str, Any]:
    """One refresh of the lab's deployment view: the notebook panel's series (the same source, revision
    choice and cross-check as ``monitor()``), the revision marks, and which revisions were read."""
    from wolt_jupyter.monitoring.crosscheck import checked_snapshot, reference_for
    from wolt_jupyter.monitoring.sources import (
        deployment_state,
        parse_duration,
        reading_revisions,
        require_known,
        source_for,
    )
    from wolt_jupyter.revisions import parse_revision

    window, resolution = parse_duration(since, "since"), parse_duration(step, "step")
    revision = parse_revision(revision_text, "revision={}")
    state = deployment_state(name)
    source = source_for()
    reference = None
    try:
        reading_revisions(source, name, revision)
        reference = reference_for(name, source)
        until = time.time()
        data = checked_snapshot(
            source,
            name,
            since=until - window,
            until=until,
            step=max(resolution, window / 720),
            reference=reference,
        )
    finally:
        source.close()
        if reference is not None:
            reference.close()
    require_known(name, state, data)
    return {**serialize.monitor_data(data), "revisions": _revisions(name, revision, source)}


def _revisions(name: str, asked: Any, source: Any) -> dict[str, Any]:
    """What the view's revision selector needs: what was asked, the revisions read (None: every one, or a
    revision-blind source), the current one and every stored one."""
    from wolt_jupyter.config import settings
    from wolt_jupyter.deployments import revisions_for
    from wolt_jupyter.monitoring.responselog import ResponseLogSource
    from wolt_jupyter.revisions import RevisionStore

    store = RevisionStore(settings().home)
    follows = isinstance(source, ResponseLogSource)
    return {
        "asked": asked,
        "follows": follows,
        "read": revisions_for(name, asked) if follows else None,
        "current": store.record(name).revision if store.exists(name) else None,
        "known": store.revisions(name),
    }


class MetricsHandler(WoltHandler):
    @endpoint
    async def get(self, name: str) -> None:
        since = self.get_query_argument("since", "30m")
        step = self.get_query_argument("step", "15s")
        revision = self.get_query_argument("revision", None)
        self.answer(await self.call(_snapshot, name, since, step, revision))


# -- the automatic update service ------------------------------------------------------------------------------
def _updates(name: str) -> dict[str, Any]:
    from dataclasses import asdict

    from wolt_jupyter import deployments
    from wolt_jupyter.updater.control import rollout_status
    from wolt_jupyter.updater.history import updates
    from wolt_jupyter.updater.run import status

    deployments.get(name)  # an unknown deployment is a 404 before anything else
    running = status(name)
    failing = None
    if running.get("status") == "failing":
        since = time.strftime("%H:%M:%S", time.localtime(running.get("failing_since") or time.time()))
        failing = f"{running.get('reason') or 'it keeps restarting'} (since {since})"
    return {
        "deployment": name,
        "running": bool(running.get("running")),
        "failing": failing,
        "rollout": rollout_status(name),
        "decisions": [asdict(r) for r in updates(name).records],
    }


def _autoupdate(name: str, enabled: Any, policy: Any = None) -> dict[str, Any]:
    """Start (with ``policy``, or the one it ran with last) or stop the deployment's update service."""
    from wolt_jupyter import deployments
    from wolt_jupyter.updater import run

    if not isinstance(enabled, bool):
        raise InvalidArgument('"enabled" must be true or false')
    deployments.get(name)
    if not enabled:
        run.stop_service(name)
        return {"deployment": name, "enabled": False}
    if policy is None:
        kept = run.policy_path(name)
        if not kept.is_file():
            raise InvalidArgument(f'no policy for {name!r} yet: send {{"enabled": true, "policy": {{...}}}}')
        policy = str(kept)
    run.autoupdate(name, policy)
    return {"deployment": name, "enabled": True}


def _steer(name: str, command: Any, by: str) -> dict[str, Any]:
    from wolt_jupyter.updater.control import COMMANDS, steer

    if not isinstance(command, str):
        raise InvalidArgument(f'"command" must be one of {", ".join(COMMANDS)}')
    return steer(name, command, by=by).to_dict()


class UpdatesHandler(WoltHandler):
    @endpoint
    async def get(self, name: str) -> None:
        self.answer(await self.call(_updates, name))


class AutoUpdateHandler(WoltHandler):
    @endpoint
    async def post(self, name: str) -> None:
        body = self.body()
        self.answer(await self.call(_autoupdate, name, body.get("enabled"), body.get("policy")))


class RolloutHandler(WoltHandler):
    @endpoint
    async def post(self, name: str) -> None:
        """``{"command": "pause" | "resume" | "promote-now" | "abort" | "approve"}``, asked as the lab's user."""
        who = self.current_user
        user = getattr(who, "name", None) or getattr(who, "username", None) or "a lab user"
        self.answer(await self.call(_steer, name, self.body().get("command"), f"{user} via the lab"))


# pattern (under /wolt-jupyter/api/) -> handler; openapi.yaml lists the same paths
ROUTES: list[tuple[str, type[WoltHandler]]] = [
    (r"settings", SettingsHandler),
    (r"models", ModelsHandler),
    (rf"models/{NAME}", ModelHandler),
    (r"deployments", DeploymentsHandler),
    (rf"deployments/{NAME}", DeploymentHandler),
    (rf"deployments/{NAME}/traffic", TrafficHandler),
    (rf"deployments/{NAME}/promote", PromoteHandler),
    (rf"deployments/{NAME}/rollback", RollbackHandler),
    (rf"deployments/{NAME}/metrics", MetricsHandler),
    (rf"deployments/{NAME}/updates", UpdatesHandler),
    (rf"deployments/{NAME}/autoupdate", AutoUpdateHandler),
    (rf"deployments/{NAME}/rollout", RolloutHandler),
]
