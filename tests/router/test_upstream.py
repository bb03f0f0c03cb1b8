"""router/upstream.py against real servers on loopback sockets.

Two kinds of peer: a real uvicorn server (what replicas run), and a raw asyncio-streams
server scripted byte by byte for what uvicorn never sends (1xx, close-delimited bodies,
junk, a replica dying mid-request). Every test runs on both the default asyncio loop and
uvloop, which the router uses in production: their transports fail differently.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import pytest
import uvicorn
import uvloop

from router.upstream import (
    ConnectionLost,
    NotDelivered,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from tests.helpers.waiting import eventually

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
TEST_DEADLINE = 30.0
NONE: frozenset[bytes] = frozenset()  # no response fields replaced by the caller

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def on_both_loops(
    test: Callable[[], Coroutine[Any, Any, None]],
) -> Callable[[str], None]:
    """Run an async test once on asyncio's loop and once on uvloop's."""

    @pytest.mark.parametrize("loop_name", list(LOOPS))
    def run(loop_name: str) -> None:
        loop = LOOPS[loop_name]()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(asyncio.wait_for(test(), TEST_DEADLINE))
        finally:
            loop.run_until_complete(cancel_leftovers())
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


async def cancel_leftovers() -> None:
    """Stop what a test left running (peer handlers, uvicorn tasks) before the loop closes."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def read_all(response: UpstreamResponse) -> bytes:
    parts = [response.body]
    while chunk := await response.read():
        parts.append(chunk)
    return b"".join(parts)


def header(response: UpstreamResponse, name: bytes) -> bytes | None:
    values = [v for k, v in response.headers if k == name]
    assert len(values) <= 1, f"{name!r} appears {len(values)} times"
    return values[0] if values else None


# Peers ---------------------------------------------------------------------------------


class PeerApp:
    """An ASGI app with the routes the tests need; it records what it received."""

    def __init__(self) -> None:
        self.clients: list[Any] = []  # scope["client"] per request: distinct = connections
        self.requests: list[dict[str, Any]] = []
        self.gate: asyncio.Queue[None] = asyncio.Queue()
        self.disconnected = asyncio.Event()

    @property
    def connections(self) -> int:
        return len(set(self.clients))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.clients.append(scope["client"])
        self.requests.append({"method": scope["method"], "headers": scope["headers"], "body": body})
        query = scope["query_string"].decode()
        route = getattr(self, "route_" + scope["path"].strip("/"))
        await route(query, body, receive, send)

    async def route_echo(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        request = self.requests[-1]
        document = {
            "method": request["method"],
            "headers": [[k.decode(), v.decode()] for k, v in request["headers"]],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        await respond(send, 200, orjson.dumps(document), [(b"x-peer", b"echo")])

    async def route_sleep(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        try:
            # receive() returns only when the client goes away.
            await asyncio.wait_for(receive(), float(query))
            self.disconnected.set()
            return
        except asyncio.TimeoutError:
            pass
        await respond(send, 200, b"slept", [])

    async def route_chunks(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        """`n` chunks, each sent only when the test puts a token in `gate`."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(int(query)):
            await self.gate.get()
            chunk = f"chunk{i};".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def route_stall(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        """One chunk, then nothing until the client goes away."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        message = await receive()
        assert message["type"] == "http.disconnect"
        self.disconnected.set()

    async def route_big(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"x" * int(query), [])

    async def route_hello(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"hello world", [])  # uvicorn drops the body for HEAD

    async def route_status(self, query: str, body: bytes, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": int(query), "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


class UvicornPeer:
    """A real uvicorn server in the test's event loop, on TCP, TCP over IPv6 or Unix."""

    def __init__(self, app: PeerApp, family: str = "tcp", **config: Any) -> None:
        self.app = app
        self.family = family
        self.config = config
        self.address = ""
        self._tmp: str | None = None

    async def __aenter__(self) -> UvicornPeer:
        if self.family == "unix":
            self._tmp = tempfile.mkdtemp(prefix="mlfe")
            path = os.path.join(self._tmp, "r.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            self.address = f"unix:{path}"
        elif self.family == "ipv6":
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.bind(("::1", 0))
            self.address = f"[::1]:{sock.getsockname()[1]}"
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app,
            http="httptools",
            lifespan="off",
            log_level="error",
            timeout_graceful_shutdown=1,
            **self.config,
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.ensure_future(self.server.serve(sockets=[sock]))
        while not self.server.started:
            assert not self.task.done(), "uvicorn did not start"
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawPeer:
    """A scripted server on asyncio streams: says exactly the bytes a test needs."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.address = ""

    async def __aenter__(self) -> RawPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def reset_on_close(writer: asyncio.StreamWriter) -> None:
    """Make close() send RST rather than FIN, as a killed process's socket may."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Keep-alive and concurrency ------------------------------------------------------------


@on_both_loops
async def test_sequential_requests_share_one_connection() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        for i in range(10):
            response = await pool.request(b"POST", b"/echo", [], b"%d" % i, 5.0)
            assert response.status == 200
            assert orjson.loads(response.body)["length"] == len(b"%d" % i)
        assert app.connections == 1
        assert (pool.open_count, pool.idle_count) == (1, 1)
        await pool.close()


@on_both_loops
async def test_concurrent_requests_open_several_connections() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address, max_idle=2)
        responses = await asyncio.gather(
            *(pool.request(b"GET", b"/sleep?0.2", [], b"", 5.0) for _ in range(4))
        )
        assert [r.body for r in responses] == [b"slept"] * 4
        assert app.connections == 4
        # Only max_idle of them are kept for later.
        await eventually(lambda: pool.open_count == 2)
        assert pool.idle_count == 2
        await pool.close()


@on_both_loops
async def test_idle_connection_closed_by_the_replica_is_replaced_without_error() -> None:
    app = PeerApp()
    async with UvicornPeer(app, timeout_keep_alive=0.2) as peer:
        pool = UpstreamPool(peer.address)
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
        await eventually(lambda: pool.open_count == 0)  # uvicorn closed it; the pool noticed
        response = await pool.request(b"GET", b"/echo", [], b"", 5.0)
        assert response.status == 200
        assert app.connections == 2


@on_both_loops
async def test_replica_closing_after_an_answer_without_saying_so_is_survived() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with RawPeer(answer_once) as peer:
        pool = UpstreamPool(peer.address)
        assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
        await eventually(lambda: pool.idle_count == 0)
        assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
        assert peer.connections == 2


@on_both_loops
async def test_connections_idle_past_idle_timeout_are_not_reused() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address, idle_timeout=0.05)
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
        await asyncio.sleep(0.1)
        assert (await pool.request(b"GET", b"/echo", [], b"", 5.0)).status == 200
        assert app.connections == 2
        await pool.close()


# Request framing and headers -----------------------------------------------------------


@on_both_loops
async def test_host_and_content_length_are_set_and_hop_by_hop_headers_dropped() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        client_headers = [
            (b"x-foo", b"named by Connection, before it"),
            (b"host", b"client.example"),
            (b"connection", b"keep-alive, X-Foo"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"upgrade", b"h2c"),
            (b"proxy-connection", b"keep-alive"),
            (b"trailer", b"x-checksum"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"999"),
            (b"expect", b"100-continue"),
            (b"x-request-id", b"abc"),
        ]
        response = await pool.request(b"POST", b"/echo?a=1", client_headers, b"{}", 5.0)
        seen = orjson.loads(response.body)["headers"]
        assert sorted(seen) == [
            ["content-length", "2"],
            ["host", peer.address],
            ["x-request-id", "abc"],
        ]

        response = await pool.request(b"GET", b"/echo", [], b"", 5.0)
        assert orjson.loads(response.body)["headers"] == [["host", peer.address]]
        await pool.close()


@on_both_loops
async def test_a_20_mb_request_body_arrives_intact() -> None:
    app = PeerApp()
    body = bytes(range(256)) * (20 * 1024 * 4)
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"POST", b"/echo", [], body, 20.0)
        echoed = orjson.loads(response.body)
        assert echoed["length"] == len(body) == 20 * 1024 * 1024
        assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
        await pool.close()


# Response framing and headers ----------------------------------------------------------


@on_both_loops
async def test_a_complete_response_carries_its_exact_length() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"POST", b"/echo", [], b"abc", 5.0)
        assert response.complete
        assert header(response, b"content-length") == str(len(response.body)).encode()
        assert header(response, b"x-peer") == b"echo"
        assert await response.read() == b""
        await pool.close()


@on_both_loops
async def test_a_short_body_written_after_the_headers_still_comes_back_complete() -> None:
    async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"hello")
        await writer.drain()
        await reader.read()

    async with RawPeer(slow_body) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/", [], b"", 5.0)
        assert (response.complete, response.body) == (True, b"hello")
        assert header(response, b"content-length") == b"5"
        await pool.close()


@on_both_loops
async def test_a_chunked_response_streams_chunk_by_chunk() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/chunks?3", [], b"", 5.0)
        # Headers came before any chunk: the replica is still holding the first one back.
        assert (response.status, response.complete, response.body) == (200, False, b"")
        assert header(response, b"transfer-encoding") is None
        assert header(response, b"content-length") is None
        for i in range(3):
            app.gate.put_nowait(None)
            assert await response.read() == f"chunk{i};".encode()
        assert await response.read() == b""
        assert await response.read() == b""
        # The stream ended cleanly, so the connection is reused.
        assert (await pool.request(b"GET", b"/echo", [], b"", 5.0)).status == 200
        assert app.connections == 1
        await pool.close()


@on_both_loops
async def test_on_done_runs_once_the_replica_has_sent_everything() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        done: list[int] = []

        def on_done() -> None:
            # By now the connection is back in the pool for whoever the slot goes to.
            done.append(pool.idle_count)

        response = await pool.request(b"GET", b"/echo", [], b"", 5.0, on_done)
        assert response.complete and done == [1]

        done.clear()
        response = await pool.request(b"GET", b"/chunks?2", [], b"", 5.0, on_done)
        assert done == []  # headers only: the replica is still working
        app.gate.put_nowait(None)
        assert await response.read() == b"chunk0;"
        assert done == []
        app.gate.put_nowait(None)
        await eventually(lambda: done == [1])  # the last chunk arrived, unread by the caller
        assert await read_all(response) == b"chunk1;"
        assert done == [1]
        await pool.close()


@on_both_loops
async def test_on_done_never_runs_for_a_failed_request() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        done: list[None] = []
        with pytest.raises(UpstreamTimeout):
            await pool.request(b"GET", b"/sleep?10", [], b"", 0.3, lambda: done.append(None))
        response = await pool.request(b"GET", b"/stall", [], b"", 0.5, lambda: done.append(None))
        with pytest.raises(UpstreamTimeout):
            await read_all(response)
        await pool.close()
    with pytest.raises(NotDelivered):
        await pool.request(b"GET", b"/echo", [], b"", 5.0, lambda: done.append(None))
    assert done == []


@on_both_loops
async def test_start_sends_at_once_on_an_idle_connection_or_not_at_all() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        loop = asyncio.get_running_loop()
        unsent = loop.create_future()
        # Nothing idle yet: nothing is sent, and the caller uses request().
        assert pool.start(b"POST", b"/echo", [], b"no", 5.0, None, NONE, unsent) is None
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
        waiter = loop.create_future()
        assert pool.start(b"POST", b"/echo", [], b"four", 5.0, None, NONE, waiter) is not None
        assert pool.idle_count == 0
        response = await waiter
        assert orjson.loads(response.body)["length"] == 4
        assert [r["body"] for r in app.requests] == [b"", b"four"]
        assert app.connections == 1 and not unsent.done()
        await pool.close()


@on_both_loops
async def test_on_done_can_send_the_next_request_on_the_connection_it_frees() -> None:
    """How the router serves its queue: each request still gets its own answer."""
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
        second = asyncio.get_running_loop().create_future()
        sent: list[object] = []

        def send_next() -> None:
            sent.append(pool.start(b"POST", b"/echo", [], b"22", 5.0, None, NONE, second))

        first = await pool.request(b"POST", b"/echo", [], b"1", 5.0, send_next)
        assert orjson.loads(first.body)["length"] == 1
        assert sent and sent[0] is not None
        assert orjson.loads((await second).body)["length"] == 2
        assert app.connections == 1
        await pool.close()


@on_both_loops
async def test_giving_up_on_a_started_request_closes_its_connection() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
        waiter = asyncio.get_running_loop().create_future()
        conn = pool.start(b"GET", b"/sleep?10", [], b"", 5.0, None, NONE, waiter)
        assert conn is not None
        await eventually(lambda: len(app.requests) == 2)
        waiter.cancel()
        conn.give_up(waiter)
        await asyncio.wait_for(app.disconnected.wait(), 5.0)
        await eventually(lambda: pool.open_count == 0)


@on_both_loops
async def test_an_answer_that_comes_after_its_caller_gave_up_is_never_handed_over() -> None:
    """The caller's give_up() may run after the answer arrived; by then the connection
    can be serving the next request, which must not be disturbed."""
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        await pool.request(b"GET", b"/echo", [], b"", 5.0)
        loop = asyncio.get_running_loop()
        # A whole answer: the connection goes back to the pool.
        waiter = loop.create_future()
        conn = pool.start(b"GET", b"/echo", [], b"", 5.0, None, NONE, waiter)
        assert conn is not None
        waiter.cancel()
        await eventually(lambda: pool.idle_count == 1)
        streaming = await pool.request(b"GET", b"/chunks?1", [], b"", 5.0)
        conn.give_up(waiter)
        app.gate.put_nowait(None)
        assert await read_all(streaming) == b"chunk0;"
        assert app.connections == 1
        # A body still to come: nobody will read it, so the connection is closed.
        waiter = loop.create_future()
        assert pool.start(b"GET", b"/chunks?1", [], b"", 5.0, None, NONE, waiter) is not None
        waiter.cancel()
        await eventually(lambda: pool.open_count == 0)


@on_both_loops
async def test_a_long_content_length_body_is_read_whole() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/big?5000000", [], b"", 10.0)
        assert await read_all(response) == b"x" * 5_000_000
        assert header(response, b"content-length") in (None, b"5000000")
        assert (await pool.request(b"GET", b"/echo", [], b"", 5.0)).status == 200
        assert app.connections == 1
        await pool.close()


@on_both_loops
async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"world")
        await writer.drain()

    async with RawPeer(close_delimited) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/", [], b"", 5.0)
        assert await read_all(response) == b"hello world"
        assert header(response, b"content-type") == b"text/plain"
        await eventually(lambda: pool.open_count == 0)


@on_both_loops
async def test_hop_by_hop_response_headers_are_dropped() -> None:
    async def hop_by_hop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: X-Bar\r\nX-Bar: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nX-Keep: yes\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    async with RawPeer(hop_by_hop) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/", [], b"", 5.0)
        assert response.complete
        assert response.body == b"ok"
        assert response.lines == b"x-keep: yes\r\n"
        assert response.headers == [(b"x-keep", b"yes"), (b"content-length", b"2")]
        await pool.close()


@on_both_loops
async def test_fields_the_caller_replaces_are_dropped_and_the_rest_kept_as_lines() -> None:
    async def fields(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Request-Id: replica-id\r\nX-Note: a: b\r\n"
                b"X-Empty:\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()

    async with RawPeer(fields) as peer:
        pool = UpstreamPool(peer.address)
        mine = frozenset((b"x-request-id",))
        for _ in range(2):  # the second time, the names are known ones
            response = await pool.request(b"GET", b"/", [], b"", 5.0, replaced=mine)
            assert response.lines == b"x-note: a: b\r\nx-empty: \r\n"
            assert response.length == b"2"
            assert response.headers == [
                (b"x-note", b"a: b"),
                (b"x-empty", b""),
                (b"content-length", b"2"),
            ]
        kept = await pool.request(b"GET", b"/", [], b"", 5.0)
        assert (b"x-request-id", b"replica-id") in kept.headers
        await pool.close()


@on_both_loops
async def test_head_204_and_304_answers_have_no_body_and_keep_the_connection() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        head = await pool.request(b"HEAD", b"/hello", [], b"", 5.0)
        assert (head.status, head.complete, head.body) == (200, True, b"")
        assert header(head, b"content-length") == b"11"  # the length of what GET would send
        get = await pool.request(b"GET", b"/hello", [], b"", 5.0)
        assert get.body == b"hello world"
        for status in (204, 304):
            response = await pool.request(b"GET", b"/status?%d" % status, [], b"", 5.0)
            assert (response.status, response.complete, response.body) == (status, True, b"")
            assert header(response, b"content-length") is None
        assert (await pool.request(b"GET", b"/hello", [], b"", 5.0)).body == b"hello world"
        assert app.connections == 1
        await pool.close()


@on_both_loops
async def test_informational_responses_are_skipped() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    async with RawPeer(early_hints) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"POST", b"/", [], b"{}", 5.0)
        assert (response.status, response.body) == (200, b"ok")
        assert header(response, b"link") is None
        await pool.close()


@on_both_loops
async def test_unread_body_holds_the_replica_back() -> None:
    size = 32 * 1024 * 1024
    written = asyncio.Event()

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        writer.write(b"z" * size)
        await writer.drain()
        written.set()
        await reader.read()

    async with RawPeer(firehose) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/", [], b"", 20.0)
        await asyncio.sleep(0.3)
        # Nobody reads, so reading paused and the replica cannot finish writing.
        assert not written.is_set()
        assert len(await read_all(response)) == size
        await asyncio.wait_for(written.wait(), 5.0)
        await pool.close()


# Failures ------------------------------------------------------------------------------


@on_both_loops
async def test_connect_failures_are_not_delivered() -> None:
    with pytest.raises(NotDelivered):
        await UpstreamPool(f"127.0.0.1:{free_port()}").request(b"GET", b"/", [], b"", 5.0)
    missing = os.path.join(tempfile.gettempdir(), f"mlfe-missing-{os.getpid()}.sock")
    pool = UpstreamPool(f"unix:{missing}")
    with pytest.raises(NotDelivered):
        await pool.request(b"POST", b"/score", [], b"{}", 5.0)
    assert pool.open_count == 0


@on_both_loops
async def test_timeout_raises_and_the_connection_is_not_reused() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        with pytest.raises(UpstreamTimeout):
            await pool.request(b"GET", b"/sleep?10", [], b"", 0.3)
        assert pool.idle_count == 0
        await eventually(lambda: pool.open_count == 0)
        await asyncio.wait_for(app.disconnected.wait(), 5.0)  # the replica saw it go
        assert (await pool.request(b"GET", b"/echo", [], b"", 5.0)).status == 200
        assert app.connections == 2
        await pool.close()


@on_both_loops
async def test_each_request_on_a_reused_connection_gets_its_own_timeout() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        loop = asyncio.get_running_loop()
        # Quick answers under a long timeout leave the connection's timer set far ahead.
        for _ in range(20):
            assert (await pool.request(b"GET", b"/echo", [], b"", 60.0)).status == 200
        assert app.connections == 1
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await pool.request(b"GET", b"/sleep?10", [], b"", 0.3)
        assert loop.time() - started < 5.0
        # And a short timeout set first does not cut a later, longer one short.
        assert (await pool.request(b"GET", b"/echo", [], b"", 0.2)).status == 200
        response = await pool.request(b"GET", b"/sleep?0.4", [], b"", 5.0)
        assert response.body == b"slept"
        await pool.close()


@on_both_loops
async def test_timeout_while_the_body_streams_raises_from_read() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/stall", [], b"", 0.5)
        first = response.body or await response.read()
        assert first == b"first;"
        with pytest.raises(UpstreamTimeout):
            await response.read()
        await asyncio.wait_for(app.disconnected.wait(), 5.0)
        await eventually(lambda: pool.open_count == 0)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("reused", [False, True], ids=["new", "reused"])
@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_replica_dying_after_reading_the_request_is_connection_lost(
    loop_name: str, reused: bool, reset: bool
) -> None:
    async def scenario() -> None:
        async def die(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if reused:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
            await read_request(reader)
            if reset:
                reset_on_close(writer)

        async with RawPeer(die) as peer:
            pool = UpstreamPool(peer.address)
            if reused:
                await pool.request(b"POST", b"/score", [], b"{}", 5.0)
            with pytest.raises(ConnectionLost):
                await pool.request(b"POST", b"/score", [], b"{}", 5.0)
            await eventually(lambda: pool.open_count == 0)

    on_both_loops(scenario)(loop_name)


@on_both_loops
async def test_connection_lost_mid_body_is_connection_lost() -> None:
    declared = 0

    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n0123456789" % declared)
        await writer.drain()

    async with RawPeer(truncate) as peer:
        pool = UpstreamPool(peer.address)
        # A short body is awaited whole, so request() itself fails.
        declared = 100
        with pytest.raises(ConnectionLost):
            await pool.request(b"GET", b"/", [], b"", 5.0)
        # A long one streams: what arrived is readable, then read() fails.
        declared = 10_000_000
        response = await pool.request(b"GET", b"/", [], b"", 5.0)
        assert not response.complete
        received = response.body
        with pytest.raises(ConnectionLost):
            while True:
                received += await response.read()
        assert received == b"0123456789"


@on_both_loops
async def test_an_invalid_response_is_connection_lost() -> None:
    async def nonsense(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 banana\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawPeer(nonsense) as peer:
        pool = UpstreamPool(peer.address)
        with pytest.raises(ConnectionLost):
            await pool.request(b"GET", b"/", [], b"", 5.0)
        await eventually(lambda: pool.open_count == 0)


@pytest.mark.parametrize("pause", [False, True], ids=["same-packet", "later"])
@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_bytes_after_an_answer_keep_the_answer_but_not_the_connection(
    loop_name: str, pause: bool
) -> None:
    async def scenario() -> None:
        async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            if pause:
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad")
            await writer.drain()
            await reader.read()

        async with RawPeer(chatty) as peer:
            pool = UpstreamPool(peer.address)
            assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
            await eventually(lambda: pool.open_count == 0)
            assert (await pool.request(b"GET", b"/", [], b"", 5.0)).body == b"ok"
            assert peer.connections == 2
            await pool.close()

    on_both_loops(scenario)(loop_name)


@on_both_loops
async def test_abandon_closes_the_connection() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/stall", [], b"", 5.0)
        response.abandon()
        await asyncio.wait_for(app.disconnected.wait(), 5.0)
        await eventually(lambda: pool.open_count == 0)
        with pytest.raises(ConnectionLost):
            await response.read()


@on_both_loops
async def test_a_cancelled_request_closes_its_connection() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        task = asyncio.ensure_future(pool.request(b"GET", b"/sleep?10", [], b"", 5.0))
        await eventually(lambda: len(app.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(app.disconnected.wait(), 5.0)
        await eventually(lambda: pool.open_count == 0)


@on_both_loops
async def test_close_closes_idle_connections_now_and_busy_ones_when_done() -> None:
    app = PeerApp()
    async with UvicornPeer(app) as peer:
        pool = UpstreamPool(peer.address)
        await asyncio.gather(*(pool.request(b"GET", b"/echo", [], b"", 5.0) for _ in range(2)))
        streaming = await pool.request(b"GET", b"/chunks?1", [], b"", 5.0)
        await pool.close()
        await eventually(lambda: pool.open_count == 1)  # only the busy one is left
        app.gate.put_nowait(None)
        assert await read_all(streaming) == b"chunk0;"
        await eventually(lambda: pool.open_count == 0)
        with pytest.raises(NotDelivered):
            await pool.request(b"GET", b"/echo", [], b"", 5.0)


# Addresses -----------------------------------------------------------------------------


@on_both_loops
async def test_unix_socket_address() -> None:
    app = PeerApp()
    async with UvicornPeer(app, family="unix") as peer:
        pool = UpstreamPool(peer.address)
        for _ in range(3):
            response = await pool.request(b"GET", b"/echo", [], b"", 5.0)
            assert ["host", "localhost"] in orjson.loads(response.body)["headers"]
        assert pool.open_count == 1
        await pool.close()


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@on_both_loops
async def test_ipv6_loopback_address() -> None:
    app = PeerApp()
    async with UvicornPeer(app, family="ipv6") as peer:
        pool = UpstreamPool(peer.address)
        response = await pool.request(b"GET", b"/echo", [], b"", 5.0)
        assert ["host", peer.address] in orjson.loads(response.body)["headers"]
        await pool.close()


@pytest.mark.parametrize("address", ["nonsense", "host:", ":80", "host:http", "unix:"])
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        UpstreamPool(address)
