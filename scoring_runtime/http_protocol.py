"""mlfe's HTTP/1.1 server protocol: what uvicorn runs for each connection of the router
and of the scoring runtime (`uvicorn.Config(http=HttpProtocol)`).

uvicorn still owns the sockets, signals and graceful shutdown; this replaces only its
httptools protocol, which is the per-request hot path. Serving a no-op app to 32 loopback
connections, uvicorn's protocol cost about 19 µs of CPU per request and this one about
13 (benchmarks/http_protocol.py measures the router both ways). Per request uvicorn's made
an `asyncio.Event`, a `RequestResponseCycle` of eleven arguments, a keep-alive timer and
a done callback, and ran two regex searches per response header. Here a request costs
one `_Exchange`, its task, and a future only when `receive()` must wait; the keep-alive
timer is one per connection, re-armed when it fires; a response's header names are looked
up among those already seen, and its values are checked in one pass over the joined head.
Behaviour is uvicorn's (tests/scoring_runtime/test_http_server_conformance.py pins it
through real sockets).

A response's head is held until its first body message so both go out in one write
(on loopback each write wakes the client), or at the next turn of the loop if the body
is slow to come. Each request's scope carries a `DisconnectSignal`, so an app can hear of
a client hanging up without keeping a receive() call parked to find out, and offers
`HEADER_LINES`, so an app relaying fields another HTTP parser already accepted (the
router, relaying a replica's answer) can hand them over as they arrived.
"""

from __future__ import annotations

import asyncio
import http
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from scoring_runtime.alarm import Alarm

__all__ = ["CLIENT_DISCONNECT", "HEADER_LINES", "DisconnectSignal", "HttpProtocol", "lower_name"]

CLIENT_DISCONNECT: Final = "mlfe.client_disconnect"
# Offered in scope["extensions"]: `http.response.start` may carry, under this key, header
# fields already serialized as `name: value\r\n` lines, written after the status line
# as they are. The app vouches for them (no control characters, token names); they must
# not include content-length, transfer-encoding or connection, which the server reads from
# `headers` to frame the body. The router relays a replica's fields this way, which spares
# them a second round of per-field work here: about 4% of its instructions per request.
HEADER_LINES: Final = "mlfe.header_lines"

# Request body buffered and not yet received by the app, above which reading pauses.
HIGH_WATER: Final = 64 * 1024
# Above this, a held head and its body go out with writelines() rather than joined.
JOIN_LIMIT: Final = 64 * 1024

# Bytes refused in response header names (RFC 9110 §5.6.2 tokens only) and values (no
# control characters, so no CR/LF response splitting). Checked with bytes.translate, which
# deletes them: a shorter result means one was there. Values are checked in the joined
# head, which is shorter by exactly its own line ends when they are clean.
_INVALID_NAME: Final = bytes(range(0x20)) + b'\x7f()<>@,;:[]={} \\"'
_INVALID_VALUE: Final = bytes((*range(0x09), *range(0x0A, 0x20), 0x7F))
# What a response header name means to the framing. Names already seen valid and in lower
# case are remembered with theirs, so a known name costs one dict lookup instead of a
# lower(), three comparisons and its share of a check. Bounded: a server answering with
# endless invented names cannot grow it.
_PLAIN: Final = 0
_CONTENT_LENGTH: Final = 1
_TRANSFER_ENCODING: Final = 2
_CONNECTION: Final = 3
_NAME_KINDS: Final = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}
_NAME_KINDS_LIMIT: Final = 1024
# Header names as a peer spelled them, with their lower-case form. Clients and replicas send
# the same few names on every message: a known one costs a dict lookup instead of a lower()
# and a new bytes object, and the lower-case object it returns keeps its hash, so the sets
# and dicts it is looked up in next do not hash it again. Bounded like the above.
_LOWERED: Final[dict[bytes, bytes]] = {}
_LOWERED_LIMIT: Final = 1024
# Request targets already seen to be plain paths (no query, escape or fragment), with
# their decoded form: clients call the same few URLs over and over. Bounded like the above.
_PLAIN_PATHS: Final[dict[bytes, str]] = {}
_PLAIN_PATHS_LIMIT: Final = 1024
_PLAIN_PATH_MAX_BYTES: Final = 256
_NO_BODY_STATUS: Final = frozenset((204, 304))
# Every scope's "asgi" entry: apps read it, none writes it, so one dict serves them all.
_ASGI_VERSION: Final = {"version": "3.0", "spec_version": "2.3"}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_SERVER_ERROR_HEADERS: Final = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"21"),
    (b"connection", b"close"),
]

logger = logging.getLogger("uvicorn.error")


def lower_name(name: bytes) -> bytes:
    """A header name in lower case, as the parsers hand names over."""
    lowered = _LOWERED.get(name)
    if lowered is None:
        lowered = name.lower()
        if len(_LOWERED) < _LOWERED_LIMIT:
            _LOWERED[name] = lowered
    return lowered


def _checked_name(name: bytes) -> tuple[bytes, int]:
    """A response header name not seen before: lower-cased (as it is sent) and checked,
    with what it means to the framing; raises RuntimeError for an invalid one."""
    lowered = name.lower()
    if not lowered or len(lowered.translate(None, _INVALID_NAME)) != len(lowered):
        raise RuntimeError("Invalid HTTP header name.")
    kind = _NAME_KINDS.get(lowered, _PLAIN)
    if lowered == name and len(_NAME_KINDS) < _NAME_KINDS_LIMIT:
        _NAME_KINDS[lowered] = kind
    return lowered, kind


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES: Final = {status: _status_line(status) for status in range(100, 600)}


class DisconnectSignal:
    """Calls back when the client connection closes, for the request being served.

    Under ASGI alone an app hears of a disconnect only from receive(), so a request
    waiting for something else must keep a receive() parked meanwhile: a coroutine, an
    event and a future per wait. The router's queued requests wait all the time under
    load; watching through this signal costs an attribute write instead.
    """

    __slots__ = ("_on_gone", "client_gone")

    def __init__(self) -> None:
        self.client_gone = False
        self._on_gone: Callable[[], object] | None = None

    def watch(self, on_gone: Callable[[], object]) -> DisconnectSignal:
        """Call `on_gone` once if the client leaves before `close()`; at once if it has."""
        if self.client_gone:
            on_gone()
        else:
            self._on_gone = on_gone
        return self

    def close(self) -> None:
        """Stop watching."""
        self._on_gone = None

    def fire(self) -> None:
        self.client_gone = True
        on_gone, self._on_gone = self._on_gone, None
        if on_gone is not None:
            on_gone()


class _HeldHeads:
    """Responses whose head waits for its body, flushed together at the next turn of the
    loop: one callback per turn for all of the loop's connections instead of one per
    response (a loop callback costs more than the rest of a small response's head)."""

    __slots__ = ("_exchanges", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._exchanges: list[_Exchange] = []
        self._scheduled = False

    def add(self, exchange: _Exchange) -> None:
        self._exchanges.append(exchange)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        exchanges, self._exchanges = self._exchanges, []
        for exchange in exchanges:
            exchange._flush_held()


# One per event loop, shared by every connection it serves.
_HELD_HEADS: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HeldHeads]] = (
    weakref.WeakKeyDictionary()
)


def _held_heads(loop: asyncio.AbstractEventLoop) -> _HeldHeads:
    held = _HELD_HEADS.get(loop)
    if held is None:
        held = _HELD_HEADS[loop] = _HeldHeads(loop)
    return held


class HttpProtocol(asyncio.Protocol):
    """One client connection: requests parsed by httptools, each served by the ASGI app
    in its own task, one at a time (pipelined requests wait their turn)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.root_path: str = config.root_path
        self.raw_root_path = config.root_path.encode("ascii")
        # uvicorn annotates this as int but takes floats; compiled (setup.py), a read
        # through the annotation would refuse a float.
        self.keep_alive_timeout = float(cast(Any, config).timeout_keep_alive)
        self.app_state = app_state
        self.server_state = server_state
        self.tasks = server_state.tasks
        self.held_heads = _held_heads(self.loop)
        self.parser = httptools.HttpRequestParser(self)
        # Answer the first of pipelined requests even if the client closes after sending.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.signal = DisconnectSignal()
        # Shared by the scopes of this connection's requests, as the signal in it is.
        self.extensions: dict[str, object] = {CLIENT_DISCONNECT: self.signal, HEADER_LINES: {}}
        self.closed = False
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.last_active = 0.0
        self.keep_alive_timer = Alarm(self.loop, self._check_keep_alive)
        # The exchange whose response is being produced, and those parsed behind it.
        self.active: _Exchange | None = None
        self.pipeline: deque[_Exchange] = deque()
        # The request being parsed: its URL, headers and, once they are in, exchange.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.incoming: _Exchange | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.server = get_local_addr(self.transport)
        self.client = get_remote_addr(self.transport)
        self.scheme = "https" if is_ssl(self.transport) else "http"
        self.last_active = self.loop.time()
        self.keep_alive_timer.set(self.last_active + self.keep_alive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server_state.connections.discard(self)
        self.keep_alive_timer.cancel()
        exchange = self.active
        if exchange is not None:
            if not exchange.response_complete:
                exchange.disconnected = True
            exchange.wake()
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        self.signal.fire()

    def eof_received(self) -> None:
        pass  # the transport closes; connection_lost tells the app

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained = self.drained
        if drained is not None:
            self.drained = None
            if not drained.done():
                drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol switch offered: the request is served as plain HTTP
        except httptools.HttpParserError:
            logger.warning("Invalid HTTP request received.")
            self._send_400("Invalid HTTP request received.")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = lower_name(name)
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self.url
        path = _PLAIN_PATHS.get(url)
        if path is not None:
            raw_path, query = url, b""
        # find() rather than `in`: bytes' `in` first tries its operand as an int, which
        # raises and clears a TypeError every time (about 70 ns each).
        elif url[:1] == b"/" and url.find(b"?") < 0 and url.find(b"%") < 0 and url.find(b"#") < 0:
            raw_path, query = url, b""
            path = url.decode("ascii")
            if len(_PLAIN_PATHS) < _PLAIN_PATHS_LIMIT and len(url) <= _PLAIN_PATH_MAX_BYTES:
                _PLAIN_PATHS[url] = path
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
            path = raw_path.decode("ascii")
            if "%" in path:
                path = unquote(path)
        http_version = parser.get_http_version()
        scope = {
            "type": "http",
            "asgi": _ASGI_VERSION,
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": self.root_path,
            "path": self.root_path + path,
            "raw_path": self.raw_root_path + raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "extensions": self.extensions,
        }
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        exchange = _Exchange(self, scope, keep_alive, self.expect_continue)
        self.incoming = exchange
        if self.active is None:
            self._start(exchange)
        else:
            self.pipeline.append(exchange)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.incoming
        if exchange is None or exchange.response_complete:
            return
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > HIGH_WATER:
            self._pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.incoming
        if exchange is None or exchange.response_complete:
            return
        exchange.more_body = False
        exchange.wake()

    # Called by uvicorn's server

    def shutdown(self) -> None:
        """Close now if idle, else after the response in progress."""
        if self.active is None:
            self.transport.close()
        else:
            self.active.keep_alive = False
            self.pipeline.clear()

    # Internals

    def _start(self, exchange: _Exchange) -> None:
        self.active = exchange
        task = self.loop.create_task(exchange.run(self.app))
        exchange.task = task
        self.tasks.add(task)

    def response_done(self, exchange: _Exchange) -> None:
        """The exchange's response is out: start the next pipelined request, if any."""
        self.server_state.total_requests += 1
        self.active = None
        if self.closed or self.transport.is_closing():
            return
        self.last_active = self.loop.time()
        if self.pipeline:
            self._start(self.pipeline.popleft())
        self._resume_reading()

    def _check_keep_alive(self) -> None:
        """Close a connection idle for the keep-alive timeout. The timer is the
        connection's, set when it opened and set again for what is left of the timeout
        whenever it finds the connection used since."""
        if self.closed:
            return
        now = self.loop.time()
        if self.active is not None:
            self.keep_alive_timer.set(now + self.keep_alive_timeout)
        elif now - self.last_active >= self.keep_alive_timeout:
            self.transport.close()
        else:
            self.keep_alive_timer.set(self.last_active + self.keep_alive_timeout)

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.pipeline:
            self.read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self.drained is None:
            self.drained = self.loop.create_future()
        await self.drained

    def _send_400(self, message: str) -> None:
        body = message.encode("ascii")
        self.transport.write(
            b"".join(
                (
                    STATUS_LINES[400],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        self.transport.close()


class _Exchange:
    """One request and its response: the app's `receive` and `send`."""

    __slots__ = (
        "buffered",
        "chunked",
        "chunks",
        "conn",
        "delivered",
        "disconnected",
        "expect_continue",
        "head",
        "held",
        "keep_alive",
        "more_body",
        "remaining",
        "response_complete",
        "response_started",
        "scope",
        "task",
        "waiter",
    )

    def __init__(
        self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect_continue: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.head = scope["method"] == "HEAD"
        self.task: asyncio.Task[None] | None = None
        # Request body.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.delivered = False  # the last of the body went to the app
        self.waiter: asyncio.Future[None] | None = None
        # Response.
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.remaining = 0  # content-length bytes not yet sent
        self.held: bytes | None = None  # the head, until its first body message

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self._close()
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self._close()
            elif not self.response_started and not self.disconnected:
                logger.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self._close()
        finally:
            self.conn.tasks.discard(self.task)
            if not self.response_complete and self.conn.active is self:
                self.conn.active = None

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.expect_continue and not conn.transport.is_closing():
            conn.transport.write(_CONTINUE)
        self.expect_continue = False
        while not (self.disconnected or self.response_complete):
            if self.chunks or (not self.more_body and not self.delivered):
                body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
                self.chunks = []
                self.buffered = 0
                self.delivered = not self.more_body
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if conn.incoming is self:
                conn._resume_reading()
            waiter = self.waiter = conn.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            headers = message.get("headers", ())
            defaults = conn.server_state.default_headers  # Date and Server, when configured
            if defaults:
                headers = [*defaults, *headers]
            self._start_response(message["status"], headers, message.get(HEADER_LINES, b""))
            conn.held_heads.add(self)
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            self._send_body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )

    def _start_response(self, status: int, headers: Any, lines: bytes) -> None:
        self.response_started = True
        self.expect_continue = False
        head: list[bytes] = []
        length: bytes | None = None
        chunked = close = False
        count = 0
        for pair in headers:
            # Tuples, the usual case, are read in place; unpacking through an iterator
            # costs several times as much per header.
            if type(pair) is tuple:
                name, value = cast(tuple[bytes, bytes], pair)
            else:
                name, value = pair
            kind = _NAME_KINDS.get(name)
            if kind is None:
                name, kind = _checked_name(name)
            if kind == _CONTENT_LENGTH:
                if length is None and not chunked:
                    length = value
            elif kind == _TRANSFER_ENCODING:
                if length is None and value.lower() == b"chunked":
                    chunked = True
            elif kind == _CONNECTION and b"close" in [
                token.strip() for token in value.lower().split(b",")
            ]:
                close = True
            head.append(name)
            head.append(b": ")
            head.append(value)
            head.append(b"\r\n")
            count += 1
        if not close and not self.keep_alive:
            head.append(b"connection: close\r\n")
            count += 1
        if length is None and not chunked and not self.head and status not in _NO_BODY_STATUS:
            chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
            count += 1
        head.append(b"\r\n")
        checked = b"".join(head)
        # Names are checked above; a value may hold no control character but tab. In one
        # pass over the joined fields, only the CR LF ending each of their lines and the
        # blank one may be deleted.
        if len(checked) - len(checked.translate(None, _INVALID_VALUE)) != 2 * (count + 1):
            raise RuntimeError("Invalid HTTP header value.")
        status_line = STATUS_LINES.get(status) or _status_line(status)
        held = status_line + lines + checked if lines else status_line + checked
        if close:
            self.keep_alive = False
        if length is not None:
            self.remaining = int(length.decode())
        self.chunked = chunked
        self.held = held

    def _send_body(self, body: bytes, more_body: bool) -> None:
        if self.head:
            self.remaining = 0
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.remaining:
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining -= len(body)
            data = body
        self._write(data)
        if not more_body:
            if self.remaining != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                self.conn.transport.close()
            self.conn.response_done(self)

    def _write(self, data: bytes) -> None:
        held = self.held
        transport = self.conn.transport
        if held is None:
            if data:
                transport.write(data)
            return
        self.held = None
        if len(data) <= JOIN_LIMIT:
            transport.write(held + data)
        else:
            transport.writelines((held, data))

    def _flush_held(self) -> None:
        """The head is still held at the next turn of the loop: the body is slow to come."""
        if self.held is not None and not self.conn.transport.is_closing():
            self._write(b"")

    def _close(self) -> None:
        self._flush_held()
        self.conn.transport.close()

    async def _send_500(self) -> None:
        await self.send(
            {"type": "http.response.start", "status": 500, "headers": _SERVER_ERROR_HEADERS}
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
