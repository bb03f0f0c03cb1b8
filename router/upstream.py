"""Keep-alive HTTP/1.1 connections from the router to one replica.

This is the hot path: every scoring request goes through `UpstreamPool.request`, or
through `UpstreamPool.start` when it is sent from a callback (the router's queue sends a
waiting request as the previous answer's last byte frees its slot). Each connection is an
`asyncio.Protocol` whose `httptools` parser callbacks fill a little per-response state,
the way uvicorn's server protocol does; a request costs one future, one response object
and one `transport.write` (the timeout's timer is the connection's).

Delivery matters more than usual: a request that never reached the replica may be sent
to another one, a request that did must not be. So the errors say which happened
(`NotDelivered` vs `ConnectionLost`), and an idle connection the replica closed is noticed
(and dropped) when it closes, not when the next request fails on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast

import httptools

from scoring_runtime.alarm import Alarm
from scoring_runtime.http_protocol import lower_name

__all__ = [
    "ConnectionLost",
    "NotDelivered",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
]

# Buffered, unread response body above which the replica is asked to wait (TCP backpressure).
HIGH_WATER: Final = 1024 * 1024
# A length-delimited body up to this size is awaited whole before request() returns, so
# it comes back `complete` even when the replica wrote headers and body separately.
WHOLE_BODY_LIMIT: Final = HIGH_WATER
# Requests up to this size go out in one write of one joined buffer; bigger bodies are
# written after the head rather than copied into it.
JOIN_LIMIT: Final = 64 * 1024

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded by a proxy.
HOP_BY_HOP: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
     b"upgrade", b"trailer")
)  # fmt: skip
# The pool writes Host and Content-Length itself, and the whole body is already in hand,
# so a client's Expect: 100-continue has nothing left to ask.
_REQUEST_DROP: Final = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
# The ASGI server re-frames the body, so the replica's framing must not leak through.
_RESPONSE_DROP: Final = HOP_BY_HOP | {b"content-length"}
_CONNECTION_OPTIONS: Final = frozenset((b"keep-alive", b"close"))
_PLAIN_CONNECTION: Final = frozenset((b"keep-alive", b"close", b"Keep-Alive", b"Close"))
_NO_BODY_METHODS: Final = frozenset((b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"))
_NOTHING_REPLACED: Final[frozenset[bytes]] = frozenset()


class UpstreamError(Exception):
    """The replica did not give a complete answer."""


class NotDelivered(UpstreamError):
    """Connect failed, or the connection closed before any byte of the request was
    written (e.g. an idle keep-alive connection the replica had closed). Safe to retry."""


class ConnectionLost(UpstreamError):
    """The request was delivered, then the connection was lost (or spoke nonsense)."""


class UpstreamTimeout(UpstreamError):
    """No complete answer within the timeout; the connection has been closed."""


class _TrailingData(Exception):
    """The replica sent bytes after its answer, which no request of ours asked for."""


class UpstreamResponse:
    """A replica's answer: status and header fields now, the body whole or still arriving.

    `lines` holds the fields that pass through to the client as `name: value\r\n` lines
    (lower-case names; no hop-by-hop, framing or caller-replaced fields), ready to write:
    llhttp accepted them, and it refuses what an HTTP server must not send (names that
    are not tokens, control characters in values). `length` is the content-length to
    declare: the body's size once `complete`, the replica's own for a HEAD or 304 answer,
    else None (the body streams).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_reader",
        "body",
        "complete",
        "length",
        "lines",
        "status",
    )

    def __init__(self, conn: UpstreamConnection, status: int, lines: bytes, length: bytes | None):
        self.status = status
        self.lines = lines
        self.length = length
        self.body = b""
        self.complete = False
        self._conn: UpstreamConnection | None = conn  # None once the body is in or given up
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._reader: asyncio.Future[None] | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The fields as (name, value) pairs, content-length included when known."""
        pairs = [_split_field(line) for line in self.lines.split(b"\r\n") if line]
        if self.length is not None:
            pairs.append((b"content-length", self.length))
        return pairs

    async def read(self) -> bytes:
        """The body that arrived since the last call; b"" once it has all been read."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self._buffered = 0
                if self._conn is not None:
                    self._conn.resume()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            conn = self._conn
            assert conn is not None  # neither done nor failed: the connection is still ours
            conn.resume()
            reader = self._reader = conn.loop.create_future()
            try:
                await reader
            except asyncio.CancelledError:
                self.abandon()
                raise
            finally:
                self._reader = None

    def abandon(self) -> None:
        """Give up on the rest of the body: the connection is closed, never reused."""
        if self._done or self._error is not None:
            return
        self._error = ConnectionLost("the response was abandoned")
        self._chunks = []
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.drop(self)

    # Called by the connection.
    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def end(self) -> None:
        self._done = True
        self._conn = None
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        self._conn = None
        self._wake()

    def _wake(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    __slots__ = (
        "_chunked",
        "_deadline",
        "_eof",
        "_head",
        "_informational",
        "_keep_alive",
        "_length",
        "_lines",
        "_listed",
        "_message_done",
        "_on_done",
        "_parser",
        "_paused",
        "_pool",
        "_replaced",
        "_response",
        "_stale_parser",
        "_timer",
        "_transport",
        "_waiter",
        "_whole",
        "idle_since",
        "loop",
    )

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle_since = 0.0
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._stale_parser = False
        self._paused = False
        self._eof = False
        # Per request.
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        # The request's deadline (0: none in flight) and the connection's one timer that
        # enforces it, which outlives requests (scoring_runtime/alarm.py).
        self._deadline = 0.0
        self._timer = Alarm(loop, self._on_timer)
        self._on_done: Callable[[], None] | None = None
        self._head = False
        self._replaced = _NOTHING_REPLACED
        # Per response message.
        self._response: UpstreamResponse | None = None
        self._lines: list[bytes] = []  # names, separators, values and line ends
        self._length: bytes | None = None
        self._chunked = False
        self._listed: frozenset[bytes] | None = None
        self._informational = False
        self._message_done = False
        self._keep_alive = False
        self._whole = False

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    async def exchange(
        self,
        data: bytes,
        body: bytes | None,
        head: bool,
        deadline: float,
        on_done: Callable[[], None] | None,
        replaced: frozenset[bytes],
    ) -> UpstreamResponse:
        """Send one request; return when the status line and headers are in."""
        waiter: asyncio.Future[UpstreamResponse] = self.loop.create_future()
        self.send(data, body, head, deadline, on_done, replaced, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            self.give_up(waiter)
            raise

    def send(
        self,
        data: bytes,
        body: bytes | None,
        head: bool,
        deadline: float,
        on_done: Callable[[], None] | None,
        replaced: frozenset[bytes],
        waiter: asyncio.Future[Any],
    ) -> None:
        """Write one request; `waiter` gets its UpstreamResponse once the status line and
        headers are in, or the UpstreamError that ended it. Raises NotDelivered when not a
        byte could be written.

        `on_done` is called once the replica has sent the whole response, from the
        protocol callback that received its last byte, after the connection went back to
        the pool; never when the request fails.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise NotDelivered("the connection to the replica was already closed")
        if self._stale_parser:
            # After a HEAD answer the parser may still expect the body its headers announced.
            self._parser = httptools.HttpResponseParser(self)
            self._stale_parser = False
        self._head = head
        self._on_done = on_done
        self._replaced = replaced
        self._message_done = False
        self._waiter = waiter
        self._deadline = deadline
        self._timer.set(deadline)
        try:
            transport.write(data)
        except RuntimeError as exc:  # uvloop: the handle closed under us
            self._forget_request()
            raise NotDelivered("the connection to the replica was already closed") from exc
        if transport.is_closing():
            # The first send failed at once (asyncio loop), so not a byte went out.
            self._forget_request()
            raise NotDelivered("the connection to the replica was already closed")
        if body is not None:
            transport.write(body)

    def give_up(self, waiter: asyncio.Future[Any]) -> None:
        """The caller stopped waiting on `waiter` (its task was cancelled): whatever the
        replica sends for that request belongs to no one, so the connection is closed."""
        if self._waiter is waiter:
            self._waiter = None
            self._abort()
        elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            waiter.result().abandon()
        # Otherwise the headers came in after the cancel: _hand_over() abandoned them.

    def close(self) -> None:
        """Close gracefully (an idle connection)."""
        if self._transport is not None:
            self._transport.close()

    def drop(self, response: UpstreamResponse) -> None:
        """The consumer abandoned `response`: close the connection it is still using."""
        if self._response is response:
            self._response = None
            self._abort()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._pool._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pool._forget(self)
        self._stop_timer()
        response = self._response
        if (
            response is not None
            and exc is None
            and self._eof
            and not self._head
            and self._length is None
            and not self._chunked
        ):
            # A body without length or chunks ends where the connection does.
            self._keep_alive = False
            self._finish(response)
        elif self._waiter is not None or response is not None:
            self._fail(ConnectionLost("the replica closed the connection before answering"))

    def eof_received(self) -> bool | None:
        self._eof = True
        return False  # close our side too; connection_lost decides what the EOF meant

    def data_received(self, data: bytes) -> None:
        if self._waiter is None and self._response is None:
            # Nothing was asked: an idle connection that talks cannot be trusted.
            self._abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionLost("the replica switched protocols"))
            return
        except httptools.HttpParserError:
            if not self._message_done:
                self._fail(ConnectionLost("the replica sent an invalid HTTP response"))
                return
            self._keep_alive = False  # a full answer followed by junk: use it, not the conn
        response = self._response
        if response is None:
            return
        if self._message_done:
            self._finish(response)
        else:
            self._hand_over(response)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._message_done:
            raise _TrailingData
        self._lines = []
        self._length = None
        self._chunked = False
        self._listed = None
        self._informational = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            return  # a trailer field after a chunked body: dropped, like Trailer itself
        lowered = lower_name(name)
        if lowered in _RESPONSE_DROP:
            if lowered == b"content-length":
                self._length = value
            elif lowered == b"transfer-encoding":
                self._chunked = value.lower().find(b"chunked") >= 0
            elif lowered == b"connection":
                self._listed = _listed_names(value, self._listed)
        elif lowered not in self._replaced:
            lines = self._lines  # as in UpstreamPool._encode
            lines.append(lowered)
            lines.append(b": ")
            lines.append(value)
            lines.append(b"\r\n")

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _TrailingData  # we never ask to upgrade
            self._informational = True  # 1xx: skipped, the real answer follows
            return
        lines = self._lines
        if self._listed:
            listed = self._listed
            lines = [
                piece
                for at in range(0, len(lines), 4)
                if lines[at] not in listed
                for piece in lines[at : at + 4]
            ]
        length = self._length
        # A HEAD or 304 answer has no body; its length describes the representation.
        declared = length if self._head or status == 304 else None
        self._response = UpstreamResponse(self, status, b"".join(lines), declared)
        self._whole = length is not None and int(length) <= WHOLE_BODY_LIMIT
        if self._head:
            # httptools cannot be told a HEAD answer has no body: end the message here.
            self._keep_alive = parser.should_keep_alive()
            self._message_done = True
            self._stale_parser = True

    def on_body(self, body: bytes) -> None:
        if self._message_done:
            self._keep_alive = False  # a body after a HEAD answer: the framing is off
            return
        response = self._response
        if response is not None:
            response.feed(body)

    def on_message_complete(self) -> None:
        if self._informational or self._message_done:
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._message_done = True

    # Internals
    def _finish(self, response: UpstreamResponse) -> None:
        """The whole body is in: complete and hand over the response, then reuse or close
        the connection, then call `on_done`, which may send the next request on it."""
        self._response = None
        self._clear_deadline()
        if self._waiter is not None:
            # Everything arrived with the headers: hand it over as one `body`.
            chunks = response._chunks
            if chunks:
                response.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                response._chunks = []
                response._buffered = 0
            response.complete = True
            status = response.status
            if not self._head and status != 204 and status != 304:
                response.length = str(len(response.body)).encode()
        response.end()
        self._hand_over(response)
        if self._paused:
            self.resume()
        transport = self._transport
        if self._keep_alive and transport is not None and not transport.is_closing():
            self._pool._release(self)
        elif transport is not None:
            transport.close()
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done()

    def _hand_over(self, response: UpstreamResponse) -> None:
        """Resolve request() once the headers are in, with whatever body came along."""
        waiter = self._waiter
        if waiter is None or (self._whole and not response.complete):
            return
        self._waiter = None
        if not response.complete:
            chunks = response._chunks
            if chunks:
                response.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                response._chunks = []
                response._buffered = 0
        if not waiter.done():
            waiter.set_result(response)
        else:
            # Cancelled before the headers came: a body still arriving ends the connection
            # now (a complete one left it reusable). give_up() would be too late, since the
            # connection may be serving another request by the time it runs.
            response.abandon()

    def _on_timer(self) -> None:
        deadline = self._deadline
        if deadline == 0.0:
            return  # idle: the timer lapses until the next request sets it
        if self.loop.time() < deadline:
            self._timer.set(deadline)  # a later request's deadline
            return
        self._fail(UpstreamTimeout("the replica did not answer within the timeout"))

    def _fail(self, error: UpstreamError) -> None:
        """End the request in flight with `error` and close the connection."""
        self._clear_deadline()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(error)
        response = self._response
        if response is not None:
            self._response = None
            response.fail(error)
        self._abort()

    def _forget_request(self) -> None:
        self._clear_deadline()
        self._waiter = None
        self._abort()

    def _clear_deadline(self) -> None:
        """The request is over; its deadline no longer applies."""
        self._deadline = 0.0

    def _stop_timer(self) -> None:
        self._deadline = 0.0
        self._timer.cancel()

    def _abort(self) -> None:
        # abort, not close: a close would wait to flush a body the replica may never read.
        # A request on an aborted connection never completes, so `on_done` is never due.
        self._on_done = None
        self._stop_timer()
        if self._transport is not None:
            self._transport.abort()


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to one replica address.

    `address` is "unix:/path/to.sock" or "host:port" (an IPv6 literal in brackets).
    Idle connections are reused last-in first-out, so under light load a few stay warm
    and the rest age out. One idle longer than `idle_timeout` is closed rather than
    reused: it must stay below the replica's own keep-alive timeout (scoring_runtime:
    75 s; uvicorn's default: 5 s), or a request could cross the replica's close on the
    wire and be lost after all.
    """

    def __init__(self, address: str, *, max_idle: int = 32, idle_timeout: float = 60.0) -> None:
        self.address = address
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._unix_path, self._host, self._port, authority = _parse_address(address)
        self._request_line_end = b" HTTP/1.1\r\nhost: " + authority + b"\r\n"
        self._idle: list[UpstreamConnection] = []
        self._open: set[UpstreamConnection] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        on_done: Callable[[], None] | None = None,
        replaced: frozenset[bytes] = _NOTHING_REPLACED,
    ) -> UpstreamResponse:
        """Send a request; return once the replica's status line and headers are in
        (with the body too when its length is known and at most WHOLE_BODY_LIMIT).

        `replaced` names response fields the caller sets itself: the replica's are dropped.
        `on_done()` runs as soon as the replica has sent its last byte, which can be
        before the caller resumes: the replica is free then, whatever the caller still
        does with the body.

        Raises NotDelivered (safe to send elsewhere), ConnectionLost or UpstreamTimeout;
        `timeout` runs from now until the last byte of the body.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout
        data, rest = self._encode(method, target, headers, body)
        head = method == b"HEAD"
        conn = self._take_idle(now)
        if conn is not None:
            try:
                return await conn.exchange(data, rest, head, deadline, on_done, replaced)
            except NotDelivered:
                pass  # the replica had closed it; a new connection tells whether it is still up
        conn = await self._connect(loop, deadline)
        return await conn.exchange(data, rest, head, deadline, on_done, replaced)

    def start(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        on_done: Callable[[], None] | None,
        replaced: frozenset[bytes],
        waiter: asyncio.Future[Any],
    ) -> UpstreamConnection | None:
        """Send a request now, without awaiting anything, if an idle connection takes it:
        `waiter` then gets the response as from `request()`, and the caller hands the
        connection back to `give_up(waiter)` if it stops waiting. None: nothing was sent
        (no idle connection, or the replica had closed it); use `request()`.
        """
        loop = self._loop
        if loop is None:
            return None  # never used yet, so nothing is idle
        now = loop.time()
        conn = self._take_idle(now)
        if conn is None:
            return None
        data, rest = self._encode(method, target, headers, body)
        try:
            conn.send(data, rest, method == b"HEAD", now + timeout, on_done, replaced, waiter)
        except NotDelivered:
            return None
        return conn

    async def close(self) -> None:
        """Close idle connections now and busy ones when their response is done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _encode(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        drop: frozenset[bytes] = _REQUEST_DROP,
    ) -> tuple[bytes, bytes | None]:
        """The request as one buffer, or as head and body when the body is big."""
        parts = [method, b" ", target, self._request_line_end]
        listed: frozenset[bytes] | None = None
        for name, value in headers:
            if name in drop:
                if name == b"connection":
                    listed = _listed_names(value, listed)
                continue
            # Appended piece by piece: a tuple to extend by costs more.
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
        if listed and drop is _REQUEST_DROP:
            # Connection named other headers as hop-by-hop; they may come before it.
            return self._encode(method, target, headers, body, drop | listed)
        size = len(body)
        if size or method not in _NO_BODY_METHODS:
            parts += (b"content-length: ", str(size).encode(), b"\r\n\r\n")
        else:
            parts.append(b"\r\n")
        if size <= JOIN_LIMIT:
            parts.append(body)
            return b"".join(parts), None
        return b"".join(parts), body

    def _take_idle(self, now: float) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self.idle_timeout and not conn.closing:
                return conn
            conn.close()
        return None

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> UpstreamConnection:
        if self._closed:
            raise NotDelivered(f"the pool for {self.address} is closed")
        conn = UpstreamConnection(self, loop)
        try:
            if self._unix_path is not None:
                connecting = loop.create_unix_connection(lambda: conn, self._unix_path)
            else:
                connecting = loop.create_connection(lambda: conn, self._host, self._port)
            await asyncio.wait_for(connecting, deadline - loop.time())
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"connecting to {self.address} timed out") from None
        except OSError as exc:
            raise NotDelivered(f"cannot connect to {self.address}: {exc}") from exc
        return conn

    # Called by connections.
    def _opened(self, conn: UpstreamConnection) -> None:
        self._open.add(conn)

    def _release(self, conn: UpstreamConnection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        assert self._loop is not None
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        self._open.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)


def _listed_names(value: bytes, listed: frozenset[bytes] | None) -> frozenset[bytes] | None:
    """Add the header names a Connection field lists (beyond keep-alive/close) to `listed`."""
    if value in _PLAIN_CONNECTION:
        return listed  # the usual case, without building a set
    names = frozenset(t.strip().lower() for t in value.split(b",")) - _CONNECTION_OPTIONS
    if not names:
        return listed
    return names if listed is None else listed | names


def _split_field(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b": ")
    return name, value


def _parse_address(address: str) -> tuple[str | None, str, int, bytes]:
    """(unix path, host, port, Host header value) for "unix:/path" or "host:port"."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if not path:
            raise ValueError(f"replica address {address!r} has no socket path")
        return path, "", 0, b"localhost"
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"replica address {address!r} is not 'host:port' or 'unix:/path'")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None, host, port, authority.encode("idna" if not host.isascii() else "ascii")
