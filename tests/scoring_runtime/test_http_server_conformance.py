"""HTTP/1.1 conformance of the protocol mlfe serves with (`uvicorn_server(...).config.http`).

Each test runs a small ASGI app behind `router.server.uvicorn_server` on a real socket on
127.0.0.1 and talks to it with raw asyncio streams, so it sees the exact bytes and framing
on the wire. The tests pin down behaviour any correct implementation of the protocol
keeps: they parse responses rather than compare bytes, and assert nothing about response
header order or log text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
import uvicorn

from router.server import uvicorn_server
from scoring_runtime.http_protocol import CLIENT_DISCONNECT, DisconnectSignal
from scoring_runtime.listen import bind_tcp
from tests.helpers.waiting import eventually

# One event loop for the module, so most tests share one server (starting and stopping a
# uvicorn server costs ~0.2 s); the tests that need their own server start it.
pytestmark = [pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

HOST = "127.0.0.1"
# Bounds every wait on the network, so a bug fails a test instead of hanging it.
IO_TIMEOUT = 5.0

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- The client side: a tiny HTTP/1.1 response reader --------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in the order received
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    def header(self, name: bytes) -> bytes | None:
        values = self.values(name)
        assert len(values) <= 1, f"{name!r} sent {len(values)} times: {values}"
        return values[0] if values else None

    def tokens(self, name: bytes) -> set[bytes]:
        """The comma-separated tokens of a header like Connection or Transfer-Encoding."""
        return {
            token.strip().lower()
            for value in self.values(name)
            for token in value.split(b",")
            if token.strip()
        }

    @property
    def chunked(self) -> bool:
        return b"chunked" in self.tokens(b"transfer-encoding")

    @property
    def closes(self) -> bool:
        return b"close" in self.tokens(b"connection")


async def _read_response(reader: asyncio.StreamReader, head_request: bool) -> Response:
    status_line = await reader.readuntil(b"\r\n")
    version, status, *_reason = status_line.rstrip(b"\r\n").split(b" ", 2)
    assert version == b"HTTP/1.1", status_line
    status_code = int(status)
    headers: list[tuple[bytes, bytes]] = []
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, colon, value = line.partition(b":")
        assert colon and name and name == name.strip(), f"bad header line {line!r}"
        headers.append((name.lower(), value.strip()))
    response = Response(status_code, headers, b"")
    if head_request or status_code < 200 or status_code in (204, 304):
        return response  # no body, whatever the headers say
    if response.chunked:
        assert response.header(b"content-length") is None, "both chunked and content-length"
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n", "chunk not followed by CRLF"
        response.body = bytes(body)
    elif (length := response.header(b"content-length")) is not None:
        response.body = await reader.readexactly(int(length))
    else:
        response.body = await reader.read()  # delimited by the close
    return response


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> Response:
    """One complete response: status line, headers, and a body framed as HTTP/1.1 says."""
    return await asyncio.wait_for(_read_response(reader, head_request), IO_TIMEOUT)


async def parse_complete(data: bytes) -> Response | None:
    """The response in `data`, or None if `data` holds no complete response."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    try:
        return await _read_response(reader, head_request=False)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = IO_TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts too)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(reader.read(65536), max(remaining, 0.01))
        except ConnectionResetError:
            break
        except asyncio.TimeoutError:
            raise AssertionError(f"the server did not close within {timeout} s") from None
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def assert_closed(reader: asyncio.StreamReader) -> None:
    leftover = await read_until_closed(reader)
    assert leftover == b"", f"unexpected bytes before the close: {leftover[:200]!r}"


def request(
    method: str = "GET",
    target: str = "/",
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {target} {version}", "host: test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# --- The server side -----------------------------------------------------------------


@dataclass
class Served:
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    sock: Any
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port), IO_TIMEOUT
        )
        self.writers.append(writer)
        return reader, writer


@contextlib.asynccontextmanager
async def running(app: App, *, keep_alive: float | None = None) -> AsyncIterator[Served]:
    server = uvicorn_server(app)
    if keep_alive is not None:
        server.config.timeout_keep_alive = keep_alive  # type: ignore[assignment]
    sock = bind_tcp(HOST, 0)
    port = int(sock.getsockname()[1])
    task = asyncio.create_task(server.serve(sockets=[sock]))
    served = Served(server, task, port, sock)
    try:
        deadline = time.monotonic() + IO_TIMEOUT
        while not (server.started or task.done()):
            assert time.monotonic() < deadline, "the server did not start"
            await asyncio.sleep(0.001)
        if task.done():
            task.result()
        yield served
    finally:
        for writer in served.writers:
            writer.close()
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 3)
        except asyncio.TimeoutError:
            server.force_exit = True
            await asyncio.wait_for(task, 3)


class Dispatch:
    """The shared server's app: hands each request to the app of the test running now."""

    def __init__(self) -> None:
        self.app: App | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "a request outside any test"
        await self.app(scope, receive, send)


Serve = Callable[[App], Served]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server() -> AsyncIterator[tuple[Served, Dispatch]]:
    dispatch = Dispatch()
    async with running(dispatch) as served:
        yield served, dispatch


@pytest_asyncio.fixture(loop_scope="module")
async def serve(shared_server: tuple[Served, Dispatch]) -> AsyncIterator[Serve]:
    """`served = serve(app)`: the shared server, answering with `app` for this test.

    The test's connections are closed when it ends."""
    served, dispatch = shared_server

    def use(app: App) -> Served:
        dispatch.app = app
        return served

    yield use
    writers, served.writers = served.writers, []
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
    dispatch.app = None


async def read_body(receive: Receive) -> tuple[bytes, list[dict[str, Any]]]:
    """The whole request body, and the messages it came in."""
    messages: list[dict[str, Any]] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body), messages


async def respond(
    send: Send,
    body: bytes,
    *,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    all_headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": all_headers + (headers or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request body, or the path if the body is empty."""
    body, _ = await read_body(receive)
    await respond(send, body or scope["path"].encode())


# --- Keep-alive and pipelining -------------------------------------------------------


async def test_keep_alive_serves_two_requests_with_a_complete_scope(serve: Serve) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(dict(scope))
        body, _ = await read_body(receive)
        await respond(send, f"{scope['method']} {scope['path']} {body.decode()}".encode())

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(
        b"GET /p%20q?a=1&b=2 HTTP/1.1\r\nHost: example\r\nX-Custom-Header: Value\r\n"
        b"x-dup: 1\r\nX-Dup: 2\r\n\r\n"
    )
    first = await read_response(reader)
    writer.write(request("POST", "/second", body=b"data"))
    second = await read_response(reader)

    assert (first.status, first.body) == (200, b"GET /p q ")
    assert (second.status, second.body) == (200, b"POST /second data")
    assert not first.closes and not second.closes

    scope = scopes[0]
    assert scope["type"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["path"] == "/p q"
    assert scope["raw_path"] == b"/p%20q"
    assert scope["query_string"] == b"a=1&b=2"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == ""
    assert tuple(scope["server"]) == (HOST, served.port)
    client_host, client_port = writer.get_extra_info("sockname")[:2]
    assert tuple(scope["client"]) == (client_host, client_port)
    headers = [(bytes(name), bytes(value)) for name, value in scope["headers"]]
    assert sorted(headers) == sorted(
        [
            (b"host", b"example"),
            (b"x-custom-header", b"Value"),
            (b"x-dup", b"1"),
            (b"x-dup", b"2"),
        ]
    )
    # Values of a repeated header keep their order.
    assert [value for name, value in headers if name == b"x-dup"] == [b"1", b"2"]

    assert scopes[1]["method"] == "POST" and scopes[1]["path"] == "/second"
    assert scopes[1]["query_string"] == b""


async def test_pipelined_requests_get_their_responses_in_order(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)  # the later request must still wait its turn
        await respond(send, scope["path"].encode() + b":" + body)

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(
        request("GET", "/slow")
        + request("POST", "/post", body=b"GET /smuggled HTTP/1.1\r\n\r\n")
        + request("GET", "/last")
    )
    responses = [await read_response(reader) for _ in range(3)]
    assert [r.body for r in responses] == [
        b"/slow:",
        b"/post:GET /smuggled HTTP/1.1\r\n\r\n",
        b"/last:",
    ]
    assert all(r.status == 200 for r in responses)
    # Nothing more: the body that looked like a request was not served as one.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.2)


# --- Request bodies ------------------------------------------------------------------


async def test_request_body_with_content_length_reaches_the_app_exactly(serve: Serve) -> None:
    received: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        received.append(body)
        await respond(send, body)

    payload = bytes(range(256)) * 4 + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    served = serve(app)
    reader, writer = await served.connect()
    head, rest = request("PUT", "/", body=payload).split(b"\r\n\r\n", 1)
    writer.write(head + b"\r\n\r\n" + rest[:10])
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(rest[10:])
    response = await read_response(reader)
    assert response.status == 200 and response.body == payload
    assert received == [payload]


async def test_chunked_request_body_sent_in_pieces_reaches_the_app_exactly(serve: Serve) -> None:
    received: list[tuple[bytes, list[dict[str, Any]]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, messages = await read_body(receive)
        received.append((body, messages))
        await respond(send, body)

    pieces = [
        b"POST /chunked HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n",
        b"5\r\nhel",
        b"lo\r\n",
        b"6;ext=1\r\n world\r\n",
        b"a\r\n\r\n0123456",
        b"7\r\n0\r\n",
        b"\r\n",
    ]
    served = serve(app)
    reader, writer = await served.connect()
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    response = await read_response(reader)
    # The connection is still good for another request.
    writer.write(request("GET", "/after"))
    after = await read_response(reader)

    expected = b"hello world\r\n01234567"
    assert response.status == 200 and response.body == expected
    assert after.status == 200 and after.body == b""
    body, messages = received[0]
    assert body == expected
    assert all(m["type"] == "http.request" for m in messages)
    assert messages[-1].get("more_body", False) is False
    assert all(m["more_body"] for m in messages[:-1])


async def test_a_large_request_body_sent_in_several_writes_arrives_intact(serve: Serve) -> None:
    payload = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(100_000))
    assert len(payload) > 3_000_000
    received: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        received.append(body)
        await respond(send, f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request("POST", "/big", headers={"content-length": str(len(payload))}))
    step = 256 * 1024
    for offset in range(0, len(payload), step):
        writer.write(payload[offset : offset + step])
        await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
    response = await read_response(reader)

    assert response.status == 200
    assert response.body == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
    assert received == [payload]


# --- Response framing ----------------------------------------------------------------


async def test_a_content_length_the_app_sends_frames_the_response_as_is(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"content-length", b"11"), (b"x-app", b"yes")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "body": b" world", "more_body": False})

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request() + request())
    first = await read_response(reader)
    second = await read_response(reader)
    for response in (first, second):
        assert response.status == 200
        assert response.header(b"content-length") == b"11"
        assert response.header(b"transfer-encoding") is None
        assert response.header(b"x-app") == b"yes"
        assert response.body == b"hello world"


async def test_header_names_in_any_case_frame_the_response_and_go_out_in_lower_case(
    serve: Serve,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"Content-Length", b"5"), (b"X-App", b"Yes"), (b"Connection", b"Close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    data = await read_until_closed(reader)  # the app's Connection: Close is obeyed
    response = await parse_complete(data)
    assert response is not None and response.status == 200
    assert response.body == b"hello"
    assert response.header(b"transfer-encoding") is None
    assert b"\r\ncontent-length: 5\r\n" in data
    assert b"\r\nx-app: Yes\r\n" in data  # names lower-cased, values as sent


async def test_a_streamed_response_without_content_length_is_chunked(serve: Serve) -> None:
    parts = [b"abc", b"", b"defgh", b"x" * 70_000, b"", b"end"]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    response = await read_response(reader)
    assert response.status == 200
    assert response.tokens(b"transfer-encoding") == {b"chunked"}
    assert response.header(b"content-length") is None
    assert response.body == b"".join(parts)
    # The final chunk ended the response: the connection carries on.
    writer.write(request())
    assert (await read_response(reader)).body == b"".join(parts)


async def test_a_multi_megabyte_streamed_response_reaches_a_slow_reader_intact(
    serve: Serve,
) -> None:
    chunk_count, chunk_size = 64, 64 * 1024
    chunks = [
        hashlib.sha256(str(i).encode()).digest() * (chunk_size // 32) for i in range(chunk_count)
    ]
    expected = b"".join(chunks)
    finished = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0)  # let each chunk go out, so back-pressure can build
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        finished.set()

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    await writer.drain()
    await asyncio.sleep(0.4)  # the client reads nothing while the server streams
    response = await read_response(reader)
    assert response.status == 200 and response.chunked
    assert len(response.body) == len(expected)
    assert response.body == expected
    await asyncio.wait_for(finished.wait(), IO_TIMEOUT)
    writer.write(request("GET", "/next"))
    assert (await read_response(reader)).status == 200


# --- Responses without a body --------------------------------------------------------


async def test_head_gets_headers_without_body_and_the_connection_stays_usable(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, b"hello")  # the app sends the body even for HEAD

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request("HEAD", "/"))
    head = await read_response(reader, head_request=True)
    assert head.status == 200
    assert head.header(b"content-length") == b"5"
    assert not head.chunked
    # Any body byte sent for the HEAD would now be read as the GET's status line.
    writer.write(request("GET", "/"))
    get = await read_response(reader)
    assert get.status == 200 and get.body == b"hello"


@pytest.mark.parametrize("status", [204, 304])
async def test_204_and_304_responses_have_no_body_and_are_not_chunked(
    status: int, serve: Serve
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        if scope["path"] == "/empty":
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await respond(send, b"next")

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request("GET", "/empty"))
    empty = await read_response(reader)
    assert empty.status == status
    assert empty.header(b"transfer-encoding") is None
    assert empty.header(b"content-length") in (None, b"0")
    writer.write(request("GET", "/next"))
    following = await read_response(reader)
    assert following.status == 200 and following.body == b"next"


# --- Expect: 100-continue ------------------------------------------------------------


async def test_expect_100_continue_gets_an_interim_response_before_the_body(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        await respond(send, b"got " + body)

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(
        request("POST", "/upload", headers={"content-length": "5", "expect": "100-continue"})
    )
    interim = await read_response(reader)
    assert interim.status == 100
    writer.write(b"hello")
    final = await read_response(reader)
    assert final.status == 200 and final.body == b"got hello"
    # A request without Expect on the same connection gets no interim response.
    writer.write(request("POST", "/again", body=b"x"))
    again = await read_response(reader)
    assert again.status == 200 and again.body == b"got x"


# --- Closing the connection ----------------------------------------------------------


async def test_an_http_1_0_request_is_answered_with_connection_close_then_eof(serve: Serve) -> None:
    versions: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        versions.append(scope["http_version"])
        await echo_app(scope, receive, send)

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(b"GET /old HTTP/1.0\r\n\r\n")
    response = await read_response(reader)
    assert response.status == 200 and response.body == b"/old"
    assert response.closes
    await assert_closed(reader)
    assert versions == ["1.0"]


async def test_a_request_with_connection_close_is_answered_then_the_connection_closes(
    serve: Serve,
) -> None:
    served = serve(echo_app)
    reader, writer = await served.connect()
    writer.write(request("GET", "/bye", headers={"connection": "close"}))
    response = await read_response(reader)
    assert response.status == 200 and response.body == b"/bye"
    assert response.closes
    await assert_closed(reader)


async def test_an_app_sending_connection_close_makes_the_server_close(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, b"last", headers=[(b"connection", b"close")])

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    response = await read_response(reader)
    assert response.status == 200 and response.body == b"last"
    assert response.closes
    await assert_closed(reader)


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: test\r\nthis is not a header\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: test\r\ncontent-length: nope\r\n\r\n",
    ],
    ids=["request-line", "header-line", "content-length"],
)
async def test_a_malformed_request_gets_400_and_the_connection_closes(
    garbage: bytes, serve: Serve
) -> None:
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)
        await echo_app(scope, receive, send)

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(garbage)
    response = await read_response(reader)
    assert response.status == 400
    await assert_closed(reader)
    assert called == []


# --- Errors in the app ---------------------------------------------------------------


async def test_an_app_raising_before_the_response_gets_500_and_a_close(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        raise ValueError("boom")

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    response = await read_response(reader)
    assert response.status == 500
    assert response.body == b"Internal Server Error"
    assert response.closes
    await assert_closed(reader)


async def test_an_app_returning_without_a_response_gets_500(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    response = await read_response(reader)
    assert response.status == 500
    assert response.body == b"Internal Server Error"
    await assert_closed(reader)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_app_raising_mid_response_makes_the_server_close_the_connection(
    serve: Serve,
    framing: str,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"content-length", b"100")] if framing == "content-length" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom")

    served = serve(app)
    reader, writer = await served.connect()
    # A second request pipelined behind: it must not be answered on this connection.
    writer.write(request() + request())
    data = await read_until_closed(reader)
    assert await parse_complete(data) is None, f"a complete response in {data!r}"


@pytest.mark.parametrize(
    "bad_header",
    [
        (b"x-evil", b"a\r\nx-injected: yes"),
        (b"x-evil", b"a\nx-injected: yes"),
        (b"x-evil", b"a\rx-injected: yes"),
        (b"x-evil", b"a\x00x-injected: yes"),
        (b"x-evil\r\nx-injected", b"yes"),
        (b"bad name", b"yes"),
        (b"x-del\x7fx-injected", b"yes"),
        (b"", b"x-injected: yes"),
    ],
    ids=[
        "crlf-in-value",
        "lf-in-value",
        "cr-in-value",
        "nul-in-value",
        "crlf-in-name",
        "space-in-name",
        "del-in-name",
        "empty-name",
    ],
)
async def test_an_invalid_response_header_never_reaches_the_client(
    serve: Serve,
    bad_header: tuple[bytes, bytes],
) -> None:
    send_errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"content-length", b"2"), (b"x-ok", b"1"), bad_header]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
        except Exception as exc:
            send_errors.append(exc)
            raise

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    data = await read_until_closed(reader)
    assert b"x-injected" not in data.lower()
    assert b"bad name" not in data.lower()
    # The app's send() fails. The client gets either nothing at all (the connection is
    # closed: what uvicorn does) or a 500; never the app's 200 with the header dropped.
    assert len(send_errors) == 1
    if data:
        response = await parse_complete(data)
        assert response is not None and response.status == 500, data


async def test_a_body_longer_than_content_length_does_not_leak_a_second_response(
    serve: Serve,
) -> None:
    smuggled = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello" + smuggled})

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request() + request())  # the client would read a second response
    data = await read_until_closed(reader)
    assert b"smuggled" not in data
    assert data.count(b"HTTP/1.1 ") <= 1


async def test_a_body_shorter_than_content_length_at_the_end_closes_the_connection(
    serve: Serve,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello", "more_body": False})

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request() + request())
    data = await read_until_closed(reader)
    assert await parse_complete(data) is None, f"a complete response in {data!r}"
    assert data.count(b"HTTP/1.1 ") <= 1


# --- Disconnects ---------------------------------------------------------------------


async def test_receive_returns_http_disconnect_when_the_client_closes(serve: Serve) -> None:
    messages: list[dict[str, Any]] = []
    body_read = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        body_read.set()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect":
                return

    served = serve(app)
    _reader, writer = await served.connect()
    writer.write(request("POST", "/", body=b"{}"))
    await asyncio.wait_for(body_read.wait(), IO_TIMEOUT)
    await asyncio.sleep(0.05)
    assert messages == []  # nothing to receive while the client is connected
    writer.close()
    await eventually(lambda: messages, IO_TIMEOUT, "receive() returned")
    assert messages == [{"type": "http.disconnect"}]


async def test_the_disconnect_signal_in_the_scope_fires_when_the_client_closes(
    serve: Serve,
) -> None:
    signals: list[DisconnectSignal] = []
    gone = asyncio.Event()
    watching = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        signal = scope["extensions"][CLIENT_DISCONNECT]
        signals.append(signal)
        signal.watch(gone.set)
        watching.set()
        await asyncio.wait_for(gone.wait(), IO_TIMEOUT)

    served = serve(app)
    _reader, writer = await served.connect()
    writer.write(request("POST", "/", body=b"{}"))
    await asyncio.wait_for(watching.wait(), IO_TIMEOUT)
    await asyncio.sleep(0.05)
    assert not gone.is_set()
    writer.close()
    await asyncio.wait_for(gone.wait(), IO_TIMEOUT)
    assert isinstance(signals[0], DisconnectSignal)
    assert signals[0].client_gone


async def test_receive_after_the_response_is_complete_returns_http_disconnect(serve: Serve) -> None:
    after: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, b"done")
        try:
            after.append(await asyncio.wait_for(receive(), 1.0))
        except asyncio.TimeoutError:
            after.append({"type": "timed out"})

    served = serve(app)
    reader, writer = await served.connect()
    writer.write(request())
    response = await read_response(reader)
    assert response.body == b"done"
    await eventually(lambda: after, IO_TIMEOUT, "the app's receive() returned")
    # The connection itself is still open for further requests.
    writer.write(request())
    assert (await read_response(reader)).body == b"done"
    assert after[0] == {"type": "http.disconnect"}


# --- Keep-alive timeout --------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout() -> None:
    async with running(echo_app, keep_alive=0.3) as served:
        reader, writer = await served.connect()
        writer.write(request())
        assert (await read_response(reader)).status == 200
        start = time.monotonic()
        await assert_closed(reader)
        assert time.monotonic() - start < 2.0


async def test_a_busy_keep_alive_connection_is_not_closed_by_the_timeout() -> None:
    async with running(echo_app, keep_alive=0.3) as served:
        reader, writer = await served.connect()
        for i in range(10):
            writer.write(request("GET", f"/{i}"))
            response = await read_response(reader)
            assert response.status == 200 and response.body == f"/{i}".encode()
            assert not response.closes
            await asyncio.sleep(0.1)


# --- Shutdown ------------------------------------------------------------------------


async def test_graceful_shutdown_completes_the_request_in_flight() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        started.set()
        await asyncio.wait_for(release.wait(), IO_TIMEOUT)
        await respond(send, b"finished")

    async with running(app) as served:
        reader, writer = await served.connect()
        writer.write(request())
        await asyncio.wait_for(started.wait(), IO_TIMEOUT)
        served.server.should_exit = True
        # uvicorn closes the listening socket as it begins shutting connections down.
        await eventually(lambda: served.sock.fileno() == -1, IO_TIMEOUT, "shutdown began")
        assert not served.task.done()
        release.set()
        response = await read_response(reader)
        assert response.status == 200 and response.body == b"finished"
        assert response.closes
        await assert_closed(reader)
        await asyncio.wait_for(asyncio.shield(served.task), IO_TIMEOUT)


# --- Many connections ----------------------------------------------------------------


async def test_many_concurrent_keep_alive_connections_get_their_own_responses(serve: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        request_id = dict(scope["headers"])[b"x-request-id"]
        if int(request_id.split(b"-")[1]) % 3 == 0:
            await asyncio.sleep(0.001)  # vary timing so responses interleave
        await respond(send, request_id + b"|" + body + b"|" + scope["path"].encode())

    async def client(served: Served, c: int) -> None:
        reader, writer = await served.connect()
        for i in range(20):
            rid = f"{c}-{i}"
            writer.write(
                request(
                    "POST",
                    f"/c{c}/r{i}",
                    body=f"body {rid}".encode(),
                    headers={"x-request-id": rid},
                )
            )
            response = await read_response(reader)
            assert response.status == 200
            assert response.body == f"{rid}|body {rid}|/c{c}/r{i}".encode()

    served = serve(app)
    await asyncio.wait_for(asyncio.gather(*(client(served, c) for c in range(50))), 10 * IO_TIMEOUT)
