"""mlfe's HTTP protocol: one socket write per response, streaming still streams, and apps
hear of a client hanging up through the disconnect signal. Behaviour shared with any
correct HTTP/1.1 server is pinned in test_http_server_conformance.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from scoring_runtime.http_protocol import (
    CLIENT_DISCONNECT,
    HEADER_LINES,
    JOIN_LIMIT,
    DisconnectSignal,
    HttpProtocol,
)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.writes.append(b"|".join(bytes(d) for d in list_of_data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return "extra" if name == "peername" else default


def protocol_on(transport: RecordingTransport, app: App) -> HttpProtocol:
    config = uvicorn.Config(app, http=HttpProtocol, lifespan="off", log_level="warning")
    protocol = HttpProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(transport)
    return protocol


async def respond(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def test_head_and_body_go_out_in_one_write() -> None:
    transport = RecordingTransport()
    protocol = protocol_on(transport, respond)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.sleep(0.01)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


async def test_header_lines_an_app_hands_over_are_written_as_they_are() -> None:
    async def relay(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert HEADER_LINES in scope["extensions"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2")],
                HEADER_LINES: b"X-From-Replica: a: b\r\nx-two: 2\r\n",
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    transport = RecordingTransport()
    protocol = protocol_on(transport, relay)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.sleep(0.01)
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\nX-From-Replica: a: b\r\nx-two: 2\r\ncontent-length: 2\r\n\r\nok"
    ]


async def test_a_head_whose_body_is_slow_goes_out_at_the_next_turn() -> None:
    body_may_come = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await body_may_come.wait()
        await send({"type": "http.response.body", "body": b"late"})

    transport = RecordingTransport()
    protocol = protocol_on(transport, slow)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.sleep(0.01)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    body_may_come.set()
    await asyncio.sleep(0.01)
    assert transport.writes[1:] == [b"4\r\nlate\r\n0\r\n\r\n"]


async def test_a_large_body_is_not_copied_into_the_head() -> None:
    big = b"x" * (JOIN_LIMIT + 1)

    async def large(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", str(len(big)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": big})

    transport = RecordingTransport()
    protocol = protocol_on(transport, large)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    await asyncio.sleep(0.01)
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(big)}\r\n\r\n".encode()
    assert transport.writes == [head + b"|" + big]


async def test_nothing_is_written_once_the_client_is_gone() -> None:
    transport = RecordingTransport()
    protocol = protocol_on(transport, respond)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    transport.aborted = True
    protocol.connection_lost(None)  # before the app's task ran
    await asyncio.sleep(0.01)
    assert transport.writes == []


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[uvicorn.Server] = []
    tasks: list[asyncio.Task[None]] = []

    async def start(app: App, keep_alive: float = 5.0) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        config = uvicorn.Config(
            app,
            http=HttpProtocol,
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=keep_alive,
        )
        server = uvicorn.Server(config)
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not server.started:
            await asyncio.sleep(0.01)
        return int(sock.getsockname()[1])

    yield start
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


async def test_keep_alive_responses_over_a_real_socket(
    serve: Callable[[App], Awaitable[int]],
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    port = await serve(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for path in ("/one", "/two", "/three"):
        writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 OK") and body == path.encode()
    writer.write(b"GET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    head, body = await read_response(reader)
    assert body == b"/last"
    assert await reader.read() == b""  # closed, after the answer was out
    writer.close()


async def test_a_streamed_response_reaches_the_client_before_it_ends(
    serve: Callable[[App], Awaitable[int]],
) -> None:
    client_saw_first_chunk = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        # Held back until the end of the response, this would never be set.
        await asyncio.wait_for(client_saw_first_chunk.wait(), 5)
        await send({"type": "http.response.body", "body": b"second"})

    port = await serve(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert await reader.readuntil(b"first\r\n") == b"5\r\nfirst\r\n"
    client_saw_first_chunk.set()
    assert await reader.readuntil(b"0\r\n\r\n") == b"6\r\nsecond\r\n0\r\n\r\n"
    writer.close()


async def test_the_disconnect_signal_calls_back_when_the_client_hangs_up(
    serve: Callable[[App], Awaitable[int]],
) -> None:
    watching = asyncio.Event()
    gone = asyncio.Event()
    signals: list[DisconnectSignal] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the whole request is in; only a disconnect can come now
        signal = scope["extensions"][CLIENT_DISCONNECT]
        signals.append(signal)
        signal.watch(gone.set)
        watching.set()
        await asyncio.wait_for(gone.wait(), 5)
        signal.close()

    port = await serve(app)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    await asyncio.wait_for(watching.wait(), 5)
    assert not signals[0].client_gone
    writer.close()
    await asyncio.wait_for(gone.wait(), 5)
    assert signals[0].client_gone
    # Watching a client already gone calls back at once.
    late: list[bool] = []
    signals[0].watch(lambda: late.append(True))
    assert late == [True]


async def test_a_closed_watch_is_not_called_and_each_request_sees_its_connection(
    serve: Callable[[App], Awaitable[int]],
) -> None:
    seen: list[DisconnectSignal] = []
    called: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        signal = scope["extensions"][CLIENT_DISCONNECT]
        seen.append(signal)
        signal.watch(lambda: called.append(True)).close()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = await serve(app)
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for reader, writer in (*connections, connections[0]):
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 204")
    for _, writer in connections:
        writer.close()
    await asyncio.sleep(0.1)
    assert seen[0] is seen[2] and seen[0] is not seen[1]
    assert all(signal.client_gone for signal in seen)
    assert called == []


async def test_a_client_silent_midway_through_its_request_is_closed_after_the_timeout(
    serve: Callable[..., Awaitable[int]],
) -> None:
    # uvicorn's protocol waits for such a client forever; a slow trickle keeps it open.
    port = await serve(respond, keep_alive=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")  # the headers never end
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for part in (b"GET / HTTP/1.1\r\n", b"host: x\r\n", b"x-a: 1\r\n", b"\r\n"):
        writer.write(part)
        await asyncio.sleep(0.2)  # each pause is below the timeout
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK")
    writer.close()
