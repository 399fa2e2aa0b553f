"""The deployment's bearer tokens (kept in the state dir with mode 0600) and the admin routes that need them.

``admin.token``: the local backend, the CLI and the notebook read it to change traffic, promote or roll back a
running deployment. ``feedback.token``: a separate, narrower credential that only lets its holder send ground
truth (``POST /v2/models/{m}/feedback``), so a labelling job need not hold the admin token. Anybody else on
the machine gets 401.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.private import private_dir
from wolt_jupyter.revisions import deployment_dir
from wolt_jupyter.untrusted import parse_json, shown_value

log = logging.getLogger(__name__)
TOKEN_FILE = "admin.token"
FEEDBACK_TOKEN_FILE = "feedback.token"


def token_path(state_dir: Path, deployment: str, file: str = TOKEN_FILE) -> Path:
    return deployment_dir(state_dir, deployment) / file


def ensure_token(state_dir: Path, deployment: str, file: str = TOKEN_FILE) -> str:
    """Read a token of the deployment, creating it (0600, never world-readable even briefly) if absent."""
    path = token_path(state_dir, deployment, file)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        for _ in range(20):  # another process may have created it a moment ago and still be writing
            token = path.read_text().strip()
            if token:
                return token
            time.sleep(0.05)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_token(state_dir: Path, deployment: str, file: str = TOKEN_FILE) -> str:
    return token_path(state_dir, deployment, file).read_text().strip()


def authorized(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


class AdminApi:
    """``/admin/*`` on the REST port (every route needs the admin token): ``GET routing``, ``log`` (the
    response log's counters and disk state); ``POST traffic``, ``promote``, ``rollback``, ``spec`` (routing
    only), ``stage`` (blue-green redeploy), ``flush``."""

    def __init__(self, plane: Any) -> None:
        self.plane = plane

    def handle(self, request: Any, respond: Callable[[Any], None]) -> None:
        if not authorized(request.headers.get("authorization"), self.plane.token):
            return respond(unauthorized("admin", TOKEN_FILE))
        if request.method == "POST" and self.plane.loop is not None:
            if request.path == "/admin/flush":
                return self._flush(request, respond)
            if request.path == "/admin/stage":
                return self._stage(request, respond)
        return respond(self._routing(request))

    def _routing(self, request: Any) -> Any:
        from wolt_jupyter.errors import WoltError
        from wolt_jupyter.serving.http import error_response, json_response

        plane = self.plane
        action = request.path[len("/admin/") :]
        if request.method == "GET" and action == "routing":
            return json_response(200, plane.routing_doc())
        if request.method == "GET" and action == "log":
            return json_response(200, plane.log_state())
        if request.method != "POST":
            return error_response(405, f"use POST for /admin/{action}")
        try:
            body = _json_object(request.body)
        except InvalidArgument as exc:
            return error_response(400, str(exc))
        try:
            if action == "traffic":
                plane.router.set_traffic(body.get("weights", body))
            elif action == "promote":
                variant = body.get("variant")
                if not isinstance(variant, str):
                    return error_response(400, "promote needs {'variant': NAME}")
                plane.router.promote(variant)
            elif action == "rollback":
                plane.router.rollback()
            elif action == "spec":
                conflict = plane.apply_spec(body.get("spec", body))
                if conflict:
                    return error_response(409, conflict)
            else:
                return error_response(
                    404, f"no admin action {shown_value(action)}; use traffic, promote, rollback or routing"
                )
        except WoltError as exc:
            return error_response(400, str(exc))
        plane.ensure_shadow_workers()
        plane.prime_series()
        return json_response(200, plane.routing_doc())

    def _flush(self, request: Any, respond: Callable[[Any], None]) -> None:
        """``POST /admin/flush``: answer once shadows and the response log have caught up (waits off-loop)."""
        from wolt_jupyter.serving.http import error_response, json_response

        plane = self.plane
        try:
            body = _json_object(request.body)
            timeout = float(body.get("timeout", 30.0))
            shadow_timeout = body.get("shadow_timeout")
            shadow_timeout = None if shadow_timeout is None else float(shadow_timeout)
        except (ValueError, TypeError, OverflowError):  # InvalidArgument is a ValueError
            return respond(
                error_response(400, 'flush body: {"timeout": S, "shadow_timeout": S} (both optional)')
            )
        future = plane.loop.run_in_executor(None, plane.drain, min(max(timeout, 0.0), 300.0), shadow_timeout)

        def done(f: Any) -> None:
            ok = not f.cancelled() and f.exception() is None and f.result()
            stats = plane.writer.stats() if plane.writer is not None else {}
            queued = sum(w.depth() for w in plane.shadow_workers.values())
            respond(
                json_response(
                    200 if ok else 504,
                    {"flushed": bool(ok), "response_log": stats, "shadow_queued": queued},
                )
            )

        future.add_done_callback(done)
        return None

    def _stage(self, request: Any, respond: Callable[[Any], None]) -> None:
        """``POST /admin/stage`` ``{"spec": ...}``: a blue-green redeploy inside this process.

        The new revision's models load in a worker thread beside the serving ones and must answer the last
        request served; then routing and models switch in one step on the event loop. On any failure the
        answer is 422 with the reason and what served keeps serving, untouched."""
        from wolt_jupyter.errors import WoltError
        from wolt_jupyter.serving.http import error_response, json_response

        plane = self.plane
        try:
            body = _json_object(request.body)
        except InvalidArgument as exc:
            return respond(error_response(400, str(exc)))
        if plane.staging:
            return respond(error_response(409, "another revision is being loaded; try again when it is done"))
        if not plane.ready:
            return respond(
                error_response(409, "the runtime is not ready; a revision can be staged once it is")
            )
        plane.staging = True
        t0 = time.perf_counter()
        future = plane.loop.run_in_executor(None, plane.stage, body.get("spec", body))

        def done(f: Any) -> None:
            plane.staging = False
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or exc is not None:
                reason = (
                    "cancelled"
                    if exc is None
                    else (str(exc) if isinstance(exc, WoltError) else f"{type(exc).__name__}: {exc}")
                )
                log.error("revision not switched, the current one keeps serving: %s", reason)
                return respond(error_response(422, reason))
            spec, models = f.result()
            t1 = time.perf_counter()
            plane.switch(spec, models)
            log.info(
                "switched to the new revision (loaded in %.2fs, switch %.1f us)",
                t1 - t0,
                (time.perf_counter() - t1) * 1e6,
            )
            doc = plane.routing_doc()
            doc["load_seconds"] = t1 - t0
            respond(json_response(200, doc))

        future.add_done_callback(done)
        return None


def unauthorized(what: str, token_file: str) -> Any:
    """401 naming the credential a route needs (never the token itself)."""
    from wolt_jupyter.serving.http import Response

    return Response(
        401,
        json.dumps(
            {"error": f"{what} needs 'Authorization: Bearer <token>' (the deployment's {token_file})"}
        ).encode(),
        headers=(("www-authenticate", "Bearer"),),
    )


def _json_object(body: bytes) -> dict:
    """An admin body (empty: ``{}``); InvalidArgument, one line, for anything but a bounded JSON object."""
    doc = parse_json(body or b"{}", "admin body")
    if not isinstance(doc, dict):
        raise InvalidArgument("admin body must be a JSON object")
    return doc
