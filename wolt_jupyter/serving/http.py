"""A lean HTTP/1.1 server: an ``asyncio.Protocol`` with ``httptools`` (llhttp) parsing.

Why not uvicorn + Starlette: measured here, their round trip with no work at all caps near 6,600 rps on one
core, which is the whole budget of a 1-row prediction. This layer does only what the V2 runtime needs:
keep-alive, pipelined requests answered in order, a callback-style handler so a response can be completed
later (after a micro-batched predict) without a coroutine per request, and :class:`Limits` on everything a
client can make the server hold: header count and size (431), URL length (414, never echoed back), body size
(413), time to send the headers and the body (408: slowloris) and open connections (the oldest idle one is
closed for a newcomer; 503 only when none is idle).

Back-pressure: a connection is read only while it is within its limits — answers written but not yet taken
by the client (``max_unsent_bytes``, the transport's high-water mark), requests read but not yet answered
(``max_pipelined``) and their bodies (``max_body`` in all). Past one of them the socket is no longer read
(``pause_reading``) and what was already received waits unparsed, so a client that pipelines requests and
never reads the answers costs a bounded amount of memory however long it goes on; ``send_timeout`` drops a
connection whose peer takes nothing for that long. Input is parsed in slices of ``SLICE`` bytes so one large
read cannot turn into thousands of answers at once. A request that cannot be read (malformed, over a limit)
is answered in its place, after the answers already owed, and the connection closes after it.
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

from wolt_jupyter.serving.connections import Connections, fit_descriptors

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
# bytes handed to the parser at a time: between slices the limits are checked, and requests that complete
# within a slice past a limit wait as parsed requests (a slice holds at most SLICE / 18 of them)
SLICE = 8 * 1024
# requests one connection may start in one turn of the event loop: clients pipelining requests that are cheap
# to send and dear to answer (/metrics: 0.5 ms each) take turns with everybody else, not hold the loop
TURN = 4
_SWEEPERS: set[asyncio.Future] = set()
_OPEN: dict[int, Connections] = {}  # id(server) -> its open connections
LINGER_S = 2.0  # how long a refused upload is drained before its connection closes


@dataclass(frozen=True)
class Limits:
    """What one client may make the server hold. Defaults suit a local runtime; the spec's ``limits`` and
    the runtime's flags change them."""

    max_body: int = 32 * 1024 * 1024  # bytes of one request body (413), and of all unanswered ones together
    max_header_count: int = 100  # header lines of one request (431)
    max_header_bytes: int = 64 * 1024  # names plus values of one request's headers (431)
    max_url_bytes: int = 8 * 1024  # request target (414)
    header_timeout: float = 10.0  # seconds from a request's first byte to the end of its headers (408)
    body_timeout: float = 60.0  # seconds from the end of the headers to the end of the body (408)
    idle_timeout: float = 75.0  # seconds a keep-alive connection may stay silent between requests
    # open connections; at the cap the oldest idle keep-alive is closed for a new client, and only when
    # every open connection is busy is the new one answered 503 and closed
    max_connections: int = 1024
    max_unsent_bytes: int = 256 * 1024  # answers a client has not taken yet before its connection is not read
    max_pipelined: int = 64  # requests of one connection read and not yet answered before it is not read
    send_timeout: float = 60.0  # seconds a connection may leave answers untaken before it is dropped
    grpc_max_concurrent_rpcs: int = 64  # gRPC calls in progress, all clients; beyond: RESOURCE_EXHAUSTED
    grpc_max_streams_per_connection: int = 100  # HTTP/2 streams one gRPC connection may open at once
    grpc_max_infer_streams: int = 4  # ModelStreamInfer streams open at once; beyond: RESOURCE_EXHAUSTED


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
    """One answer owed, in the order the requests came; ``size``: the request's body bytes, held till then."""

    __slots__ = ("keep_alive", "response", "size")

    def __init__(self, keep_alive: bool, size: int) -> None:
        self.keep_alive, self.size = keep_alive, size
        self.response: Response | None = None


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that breaks a limit. ``linger``: keep reading
    (and dropping) a while before closing, so a client still sending its body reads the answer."""

    def __init__(self, status: int, message: str, linger: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.linger = status, message, linger


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        max_body: int | None = None,
        connections: Connections | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits = limits or Limits()
        self.max_body = limits.max_body if max_body is None else max_body
        self.max_pipelined = limits.max_pipelined
        self.connections = connections if connections is not None else Connections(limits.max_connections)
        self.last_active = time.monotonic()
        # when the request being read started, and when its headers ended (None: not in that phase)
        self.header_started: float | None = None
        self.body_started: float | None = None
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[_Slot] = deque()  # requests handed to the handler: answers owed, in order
        # requests read while the connection was at a limit, not handed over yet (or refusals, in their place)
        self.deferred: deque[tuple[Request | Response, bool]] = deque()
        self.unparsed: bytes | memoryview = b""  # received while at a limit
        self.held = 0  # body bytes of the requests read and not yet answered
        self.write_paused = False  # the transport holds more than max_unsent_bytes the client has not taken
        self.reading = True
        self.closing = False  # no more input is read: the connection closes after the answers owed
        self.draining = False
        self.idle = True  # nothing being read, nothing owed: may be closed for a new client
        self.written = 0  # bytes handed to the transport
        self.sent_mark = (0, self.last_active)  # (bytes the client had taken, since when): the send timeout
        self._linger = False
        self._pumping = False
        self._turn = 0  # requests started in this turn of the event loop
        self._next_turn = False  # a continuation is scheduled: what is left waits for it
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
        high = self.limits.max_unsent_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        if not self.connections.admit(self):
            self.closing = True
            limit = self.connections.limit
            self._write(error_response(503, f"too many open connections (limit {limit}); retry later"), False)
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self.pending.clear()
        self.deferred.clear()
        self.unparsed = b""
        self.connections.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True  # nothing more is parsed (_held_up) until resume_writing

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # a refused request's rest, read only to let its client see the answer
        self.last_active = now = time.monotonic()
        if self.idle:
            self.idle = False
            self.connections.busy(self)
        if self.unparsed or self.deferred or self._next_turn or len(data) > SLICE or self._held_up():
            self.unparsed = bytes(self.unparsed) + data if self.unparsed else data
            self._pump()
            return
        # the common case, one slice and nothing waiting: what _pump does, without its loop
        if self.header_started is None and self.body_started is None:
            self.header_started = now
        self._pumping = True
        self._turn = 0
        try:
            self._parse(data)
        finally:
            self._pumping = False
        if self.deferred or not self.pending or self._at_limit():
            self._run()  # a limit was reached, or nothing is owed (idle again?): the slow path settles it

    def close_idle(self) -> None:
        """Close this idle connection (for a new client, or after its keep-alive timeout)."""
        self.closing = True
        self._drop()

    def _drop(self) -> None:
        """Close now, without waiting for the client to take what it was sent."""
        t = self.transport
        if t is not None:
            t.abort() if t.get_write_buffer_size() else t.close()

    # -- reading within the limits -------------------------------------------------------------------------
    def _at_limit(self) -> bool:
        return (
            self.write_paused
            or len(self.pending) >= self.max_pipelined
            or (self.held > 0 and self.held + self._size > self.max_body)
        )

    def _pump(self) -> None:
        """Hand deferred requests over and parse what was received, while the connection is within its
        limits; then read from the socket only if it still is."""
        if self._pumping or self._next_turn:
            return  # called back from within (an answer completed at once), or waiting for its next turn
        self._turn = 0
        self._run()

    def _run(self) -> None:
        """_pump's loop, within the requests this turn has left."""
        self._pumping = True
        try:
            deferred = self.deferred
            while True:
                while deferred and not self._held_up():
                    self._dispatch(*deferred.popleft())
                if deferred or not self.unparsed or self.closing or self._held_up():
                    break
                data = self.unparsed
                if len(data) > SLICE:
                    view = memoryview(data)
                    data, self.unparsed = view[:SLICE], view[SLICE:]
                else:
                    self.unparsed = b""
                if self.header_started is None and self.body_started is None:
                    # a request's first byte: its headers must follow in time
                    self.header_started = time.monotonic()
                self._parse(data)
        finally:
            self._pumping = False
        if self._turn >= TURN and (self.deferred or self.unparsed) and self.transport is not None:
            self._next_turn = True  # the rest after every other connection's turn
            asyncio.get_running_loop().call_soon(self._take_turn)
        self._settle()

    def _held_up(self) -> bool:
        return (
            self._turn >= TURN
            or self.write_paused
            or len(self.pending) >= self.max_pipelined
            or (self.held > 0 and self.held + self._size > self.max_body)
        )

    def _take_turn(self) -> None:
        self._next_turn = False
        self._pump()

    def _settle(self) -> None:
        t = self.transport
        if t is None:
            return
        if self.closing:
            held_up = not self._linger
        else:
            held_up = bool(self.unparsed or self.deferred or self._next_turn) or self._at_limit()
        if held_up and self.reading:
            self.reading = False
            t.pause_reading()
        elif not held_up and not self.reading:
            self.reading = True
            t.resume_reading()
            # the client waited for us: the time it has to finish its request starts again
            now = time.monotonic()
            if self.header_started is not None:
                self.header_started = now
            if self.body_started is not None:
                self.body_started = now
        if (
            not held_up
            and not self.idle
            and not self.closing
            and not self.pending
            and self.header_started is None
            and self.body_started is None
        ):
            self._rest()

    def _rest(self) -> None:
        """Idle from now: the newest candidate to close for a new client; the idle timeout starts."""
        self.idle = True
        self.last_active = time.monotonic()
        self.connections.rest(self)

    def _parse(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except _Refused as exc:
            self._refuse(exc.status, exc.message, exc.linger)
        except httptools.HttpParserCallbackError as exc:  # a callback raised: never echo what was sent
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.message, cause.linger)
            else:
                self._refuse(400, "malformed HTTP request")
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrade is not supported")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def _refuse(self, status: int, message: str, linger: bool = False) -> None:
        """Answer a request that cannot be read in its place (after the answers owed), read nothing more,
        and close the connection after that answer."""
        self.closing = True
        self._linger = linger
        self.unparsed = b""
        self.header_started = self.body_started = None
        self.deferred.append((error_response(status, message), False))

    # -- httptools callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.header_started is None:
            self.header_started = time.monotonic()
        if self.idle:
            self.idle = False
            self.connections.busy(self)
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
            # answer without reading a body we already know we will refuse
            raise _Refused(413, self._too_large_message(), linger=True)
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self.transport
            and not self.pending
            and not self.deferred
        ):
            continue_ = b"HTTP/1.1 100 Continue\r\n\r\n"  # curl waits 1 s for this on big bodies
            self.written += len(continue_)
            self.transport.write(continue_)

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.max_body:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def _too_large_message(self) -> str:
        return f"request body is larger than the limit of {self.max_body} bytes"

    def on_message_complete(self) -> None:
        self.header_started = self.body_started = None
        if self.closing:
            return  # after an answer that closes the connection (``Connection: close``): nothing more
        if self._too_large:  # the rest of an oversized stream is not worth reading
            raise _Refused(413, self._too_large_message())
        # draining (shutting down behind a load balancer): answer, then close; the client reconnects elsewhere
        keep_alive = bool(self.parser.should_keep_alive()) and not self.draining
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        request = Request(self.parser.get_method().decode(), path, query, self._headers, b"".join(self._body))
        self._body, self._size = [], 0
        self.held += len(request.body)
        if self.deferred or self._held_up():
            self.deferred.append((request, keep_alive))  # handed over once answers have gone out
        else:
            self._dispatch(request, keep_alive)

    def _dispatch(self, item: Request | Response, keep_alive: bool) -> None:
        if isinstance(item, Response):  # a refusal, answered in its place
            slot = _Slot(False, 0)
            self.pending.append(slot)
            self._complete(slot, item)
            return
        slot = _Slot(keep_alive, len(item.body))
        self.pending.append(slot)
        self._turn += 1
        try:
            self.handler(item, lambda response: self._complete(slot, response))
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
            self.held -= head.size
            self._write(head.response, head.keep_alive)  # type: ignore[arg-type]
            if not head.keep_alive:
                self.closing = True
                self.deferred.clear()
                self.unparsed = b""
                if self._linger:
                    # the client may still be sending the body we refused: keep reading (and dropping) it
                    # for a moment, so closing does not reset the connection before it reads the 413
                    self._settle()
                    asyncio.get_running_loop().call_later(LINGER_S, self._close_now)
                elif self.transport is not None:
                    self.transport.close()
                return
        if self._pumping:
            return  # answered at once, from within _pump: it goes on
        if self.deferred or self.unparsed or not self.reading:
            self._pump()
        elif not pending and self.header_started is None and self.body_started is None and not self.idle:
            self._rest()  # nothing waits, nothing is owed

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
        data = b"".join(head)
        self.written += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def tick(self, now: float) -> None:
        """The sweep's check: drop a connection whose client takes nothing it is sent for ``send_timeout``;
        answer 408 to a client too slow to send its request (slowloris); close a connection quiet too long."""
        t, lim = self.transport, self.limits
        if t is None:
            return
        unsent = t.get_write_buffer_size()
        sent = self.written - unsent
        if unsent == 0 or sent != self.sent_mark[0]:
            self.sent_mark = (sent, now)
        elif now - self.sent_mark[1] > lim.send_timeout:
            self.closing = True
            t.abort()  # what it was sent is dropped with it
            return
        if self.closing or not self.reading:
            return  # finishing, or waiting for us: the client's time is not running
        why = None
        if self.header_started is not None and now - self.header_started > lim.header_timeout:
            why = f"request headers not received within {lim.header_timeout:g} s"
        elif self.body_started is not None and now - self.body_started > lim.body_timeout:
            why = f"request body not received within {lim.body_timeout:g} s"
        elif not self.pending and self.header_started is None and now - self.last_active > lim.idle_timeout:
            self.close_idle()  # quiet too long: an idle keep-alive, or a body that stopped coming
        if why is not None:
            self._refuse(408, why)
            self._pump()


async def _sweep(connections: Connections, limits: Limits) -> None:
    """Every few seconds: each connection's timeouts (:meth:`HttpProtocol.tick`)."""
    timeouts = (limits.idle_timeout, limits.header_timeout, limits.body_timeout, limits.send_timeout)
    period = max(0.05, min(timeouts) / 4)
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for conn in connections:
            conn.tick(now)  # type: ignore[attr-defined]


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
    connections = Connections(fit_descriptors(limits.max_connections))
    server = await loop.create_server(
        lambda: HttpProtocol(handler, None, connections, limits), host, port, backlog=2048
    )
    task = asyncio.ensure_future(_sweep(connections, limits))
    _SWEEPERS.add(task)  # a reference, so the task is not garbage-collected while the loop runs
    task.add_done_callback(_SWEEPERS.discard)
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
    connections = _OPEN.pop(id(server), Connections(0))
    for conn in connections:
        conn.draining = True  # type: ignore[attr-defined]
    deadline = time.monotonic() + seconds
    grace = min(1.0, seconds / 2)
    while time.monotonic() < deadline:
        now = time.monotonic()
        for conn in connections:
            idle = conn.idle and not conn.closing  # type: ignore[attr-defined]
            if idle and now - conn.last_active > grace:  # type: ignore[attr-defined]
                conn.close_idle()
        if not len(connections):
            return 0
        await asyncio.sleep(0.05)
    return len(connections)
