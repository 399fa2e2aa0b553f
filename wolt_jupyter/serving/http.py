"""A lean HTTP/1.1 server: an ``asyncio.Protocol`` with ``httptools`` (llhttp) parsing.

Why not uvicorn + Starlette: measured here, their round trip with no work at all caps near 6,600 rps on one
core, which is the whole budget of a 1-row prediction. This layer does only what the V2 runtime needs:
keep-alive, pipelined requests answered in order, a callback-style handler so a response can be completed
later (after a micro-batched predict) without a coroutine per request, and :class:`Limits` on everything a
client can make the server hold: header count and size (431), URL length (414, never echoed back), body size
(413), time to send the headers and the body (408: slowloris) and open connections (503).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
MAX_PENDING = 64  # pipelined requests per connection before reading pauses
_SWEEPERS: set[asyncio.Future] = set()
_OPEN: dict[int, set[HttpProtocol]] = {}  # id(server) -> its open connections
LINGER_S = 2.0  # how long a refused upload is drained before its connection closes


@dataclass(frozen=True)
class Limits:
    """What one client may make the server hold. Defaults suit a local runtime; the spec's ``limits`` and
    the runtime's flags change them."""

    max_body: int = 32 * 1024 * 1024  # bytes of one request body (413)
    max_header_count: int = 100  # header lines of one request (431)
    max_header_bytes: int = 64 * 1024  # names plus values of one request's headers (431)
    max_url_bytes: int = 8 * 1024  # request target (414)
    header_timeout: float = 10.0  # seconds from a request's first byte to the end of its headers (408)
    body_timeout: float = 60.0  # seconds from the end of the headers to the end of the body (408)
    idle_timeout: float = 75.0  # seconds a keep-alive connection may stay silent between requests
    max_connections: int = 1024  # open connections; one more is answered 503 and closed


class Request:
    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers


def error_response(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode())


def json_response(status: int, doc: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode(), headers=headers)


Handler = Callable[[Request, Callable[[Response], None]], None]


class _Slot:
    __slots__ = ("keep_alive", "response")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response: Response | None = None


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that breaks a limit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        max_body: int | None = None,
        connections: set[HttpProtocol] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits = limits or Limits()
        self.max_body = limits.max_body if max_body is None else max_body
        self.connections = connections if connections is not None else set()
        self.last_active = time.monotonic()
        # when the request being read started, and when its headers ended (None: not in that phase)
        self.header_started: float | None = None
        self.body_started: float | None = None
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[_Slot] = deque()
        self.paused = False
        self.closing = False
        self.draining = False
        self._linger = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._header_count = 0
        self._header_bytes = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # -- asyncio callbacks ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.connections) >= self.limits.max_connections:
            self._fatal(503, f"too many open connections (limit {self.limits.max_connections}); retry later")
            return
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self.pending.clear()
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = now = time.monotonic()
        if self.header_started is None and self.body_started is None:
            self.header_started = now  # the first byte of a request: its headers must follow in time
        try:
            self.parser.feed_data(data)
        except _Refused as exc:
            self._fatal(exc.status, exc.message)
        except httptools.HttpParserCallbackError as exc:  # a callback raised: never echo what was sent
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._fatal(cause.status, cause.message)
            else:
                self._fatal(400, "malformed HTTP request")
        except httptools.HttpParserUpgrade:
            self._fatal(400, "protocol upgrade is not supported")
        except httptools.HttpParserError as exc:
            self._fatal(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.header_started is None:
            self.header_started = time.monotonic()
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_bytes:
            raise _Refused(414, f"request URL is longer than the limit of {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self.limits.max_header_count:
            raise _Refused(431, f"more than {self.limits.max_header_count} request headers")
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(431, f"request headers are larger than {self.limits.max_header_bytes} bytes")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.header_started, self.body_started = None, time.monotonic()
        length = self._headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > self.max_body:
            # answer at once and close: never read a body we already know we will refuse
            slot = _Slot(False)
            self.pending.append(slot)
            self._linger = True
            self._complete(slot, self._too_large_response())
        elif (
            self._headers.get("expect", "").lower() == "100-continue" and self.transport and not self.pending
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits 1 s for this on big bodies

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.max_body:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def _too_large_response(self) -> Response:
        return error_response(413, f"request body is larger than the limit of {self.max_body} bytes")

    def on_message_complete(self) -> None:
        self.header_started = self.body_started = None
        if self.closing:
            return
        # draining (shutting down behind a load balancer): answer, then close, so the client reconnects elsewhere
        slot = _Slot(bool(self.parser.should_keep_alive()) and not self.draining)
        self.pending.append(slot)
        if self._too_large:
            slot.keep_alive = False  # the rest of an oversized stream is not worth reading
            self._complete(slot, self._too_large_response())
            return
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        request = Request(self.parser.get_method().decode(), path, query, self._headers, b"".join(self._body))
        if len(self.pending) > MAX_PENDING and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        try:
            self.handler(request, lambda response: self._complete(slot, response))
        except Exception as exc:  # a bug in a handler must still answer, never hang the client
            self._complete(slot, error_response(500, f"internal error: {type(exc).__name__}: {exc}"))

    # -- writing -------------------------------------------------------------------------------------------
    def _complete(self, slot: _Slot, response: Response) -> None:
        if slot.response is not None:
            return
        slot.response = response
        pending = self.pending
        while pending and pending[0].response is not None and self.transport is not None:
            head = pending.popleft()
            self._write(head.response, head.keep_alive)  # type: ignore[arg-type]
            if not head.keep_alive:
                self.closing = True
                if self._linger:
                    # the client may still be sending the body we refused: keep reading (and dropping) it
                    # for a moment, so closing does not reset the connection before it reads the 413
                    asyncio.get_running_loop().call_later(LINGER_S, self._close_now)
                elif self.transport is not None:
                    self.transport.close()
                return
        if self.paused and len(pending) <= MAX_PENDING // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _write(self, r: Response, keep_alive: bool) -> None:
        head = [
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
            % (r.status, _REASONS.get(r.status, b"Unknown"), r.content_type.encode(), len(r.body))
        ]
        for k, v in r.headers:
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(r.body)
        self.transport.write(b"".join(head))  # type: ignore[union-attr]

    def _fatal(self, status: int, message: str) -> None:
        if self.transport is None:
            return
        self.closing = True
        self._write(error_response(status, message), keep_alive=False)
        self.transport.close()

    def overdue(self, now: float) -> str | None:
        """Why this connection should be closed now (a slow or stalled sender, or idle), or None."""
        lim = self.limits
        if self.header_started is not None and now - self.header_started > lim.header_timeout:
            return f"request headers not received within {lim.header_timeout:g} s"
        if self.body_started is not None and now - self.body_started > lim.body_timeout:
            return f"request body not received within {lim.body_timeout:g} s"
        if not self.pending and self.header_started is None and now - self.last_active > lim.idle_timeout:
            return ""  # an idle keep-alive: close without a word
        return None


async def _sweep(connections: set[HttpProtocol], limits: Limits) -> None:
    """Close idle keep-alives and connections whose headers or body take too long (slowloris)."""
    period = max(0.05, min(limits.idle_timeout, limits.header_timeout, limits.body_timeout) / 4)
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for conn in list(connections):
            if conn.transport is None or conn.closing:
                continue
            why = conn.overdue(now)
            if why == "":
                conn.closing = True
                conn.transport.close()
            elif why is not None and not conn.pending:
                conn._fatal(408, why)
            elif why is not None:  # answers are still owed on this connection: stop reading, drop it
                conn.closing = True
                conn.transport.close()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    max_body: int | None = None,
    idle_timeout: float | None = None,
    limits: Limits | None = None,
) -> Any:
    """Listen on ``host:port`` with ``limits`` (``max_body``/``idle_timeout``, when given, override them)."""
    limits = limits or Limits()
    overrides = {"max_body": max_body, "idle_timeout": idle_timeout}
    limits = Limits(**{**limits.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    loop = asyncio.get_running_loop()
    connections: set[HttpProtocol] = set()
    server = await loop.create_server(
        lambda: HttpProtocol(handler, None, connections, limits), host, port, backlog=2048
    )
    task = asyncio.ensure_future(_sweep(connections, limits))
    _SWEEPERS.add(task)  # a reference, so the task is not garbage-collected while the loop runs
    _OPEN[id(server)] = connections  # for drain(): uvloop's Server takes no attributes
    return server


async def drain(server: Any, seconds: float) -> int:
    """Stop accepting, then let open connections finish: each one's next answer says ``connection: close``
    and closes it; idle ones are closed once their keep-alive has been quiet past a short grace. Returns
    the connections still open after ``seconds`` (the caller closes them with everything else).

    Behind a Service, the pod is taken out of the endpoints before SIGTERM (the manifest's preStop pause), so
    a client whose connection closes here reconnects to another replica instead of getting a 503.
    """
    server.close()
    connections: set[HttpProtocol] = _OPEN.pop(id(server), set())
    for conn in connections:
        conn.draining = True
    deadline = time.monotonic() + seconds
    grace = min(1.0, seconds / 2)
    while time.monotonic() < deadline:
        now = time.monotonic()
        for conn in list(connections):
            idle = not conn.pending and conn.header_started is None and conn.body_started is None
            if idle and conn.transport is not None and now - conn.last_active > grace:
                conn.closing = True
                conn.transport.close()
        if not [c for c in connections if c.transport is not None]:
            return 0
        await asyncio.sleep(0.05)
    return len([c for c in connections if c.transport is not None])
