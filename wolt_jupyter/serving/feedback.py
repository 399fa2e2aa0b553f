"""``POST /v2/models/{m}/feedback``: ground truth for earlier requests, stored beside the response log.

Body: ``{"feedback": [{"id": REQUEST_ID, "ground_truth": VALUE, "time": EPOCH_S?}, ...]}`` (or one such
object). Ground truth is trusted by comparisons and the update service, so the write needs the feedback token
(``Authorization: Bearer``; the deployment's ``feedback.token``, or the admin token). Every item is checked
before anything is written; the write happens off the event loop and the answer says how many were stored.
"""

from __future__ import annotations

from collections.abc import Callable
from math import isfinite
from typing import Any

from wolt_jupyter.config import mask_url
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.serving.admin import FEEDBACK_TOKEN_FILE, authorized, unauthorized
from wolt_jupyter.serving.http import Request, Response, error_response
from wolt_jupyter.untrusted import parse_json, shown

_EXPECTED = '{"feedback": [{"id": ..., "ground_truth": ...}, ...]}'


def feedback_problem(item: Any) -> str | None:
    """What is wrong with one feedback item (checked before anything is written), or None."""
    if not isinstance(item, dict):
        return "must be an object with a string 'id' and a 'ground_truth'"
    rid = item.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > 255:
        return "needs a string 'id' of 1-255 characters (the request id the runtime answered)"
    if "ground_truth" not in item:
        return "needs a 'ground_truth' (any JSON value)"
    at = item.get("time")
    if at is not None and (
        isinstance(at, bool)
        or not isinstance(at, (int, float))
        or (isinstance(at, int) and abs(at) >= 2**53)
        or (isinstance(at, float) and not isfinite(at))
    ):
        return f"'time' must be epoch seconds (a number), got {shown(repr(at))}"
    return None


class FeedbackApi:
    def __init__(self, plane: Any) -> None:
        self.plane = plane

    def handle(self, request: Request, respond: Callable[[Response], None], model: str) -> None:
        from wolt_jupyter.serving.http import json_response

        plane = self.plane
        if model != plane.name:
            return respond(
                error_response(404, f"no model {shown(model)!r}; this runtime serves {plane.name!r}")
            )
        header = request.headers.get("authorization")
        if not (authorized(header, plane.feedback_token) or authorized(header, plane.token)):
            return respond(unauthorized("feedback", FEEDBACK_TOKEN_FILE))
        try:
            body = parse_json(request.body or b"", "feedback body")
        except InvalidArgument as exc:
            return respond(error_response(400, f"{exc}; expected {_EXPECTED}"))
        items = body.get("feedback", [body]) if isinstance(body, dict) else body
        if not isinstance(items, list) or not items:
            return respond(error_response(400, f"expected {_EXPECTED}"))
        for i, item in enumerate(items):
            problem = feedback_problem(item)
            if problem:
                return respond(error_response(400, f"feedback item {i}: {problem}"))
        from wolt_jupyter.responses import add_feedback, default_store_url

        url = plane.store_url or default_store_url(plane.name, plane.state_dir)
        if plane.loop is None:  # not serving (embedded use): store right away
            return respond(json_response(200, {"stored": add_feedback(url, items)}))
        future = plane.loop.run_in_executor(None, add_feedback, url, items)

        def done(f: Any) -> None:
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or exc is not None:
                status = 400 if isinstance(exc, InvalidArgument) else 503
                first = str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__
                respond(error_response(status, f"feedback not stored: {mask_url(first)}"))
            else:
                respond(json_response(200, {"stored": f.result()}))

        future.add_done_callback(done)
        return None
