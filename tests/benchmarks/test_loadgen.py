"""benchmarks/loadgen.py against a real uvicorn server on loopback TCP and a Unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks.loadgen import ArrivalClock, LoadConfig, LoadResult, Sample, run_load

ROOT = Path(__file__).resolve().parents[2]

# A raw ASGI app whose endpoints each misbehave in one way, counted per ?key= so tests
# sharing the server do not see each other's requests.
SERVER_SCRIPT = r"""
import asyncio, socket, sys, time
from urllib.parse import parse_qs
import uvicorn

hits, body_bytes, active, peak = {}, {}, {}, {}

async def app(scope, receive, send):
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    key = query.get("key", "")
    received = 0
    more = True
    while more:
        message = await receive()
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    hits[key] = hits.get(key, 0) + 1
    body_bytes[key] = body_bytes.get(key, 0) + received
    active[key] = active.get(key, 0) + 1
    peak[key] = max(peak.get(key, 0), active[key])
    status, body, path = 200, b"ok", scope["path"]
    if path == "/stats":
        of = query["of"]
        body = f"{hits.get(of, 0)} {body_bytes.get(of, 0)} {peak.get(of, 0)}".encode()
    elif path == "/unavailable":
        status = 503
    elif path == "/alternate":
        status = 200 if hits[key] % 2 else 503
    elif path == "/stall" and hits[key] == int(query["at"]):
        time.sleep(int(query["ms"]) / 1000)  # blocks the whole server, like a GC pause
    elif path == "/slow":
        await asyncio.sleep(int(query["ms"]) / 1000)
    active[key] -= 1
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

tcp = socket.create_server(("127.0.0.1", 0))
uds = socket.socket(socket.AF_UNIX)
uds.bind(sys.argv[1])
uds.listen(128)
config = uvicorn.Config(app, lifespan="off", log_level="warning", http="httptools")
print(tcp.getsockname()[1], flush=True)
uvicorn.Server(config).run(sockets=[tcp, uds])
"""


@dataclass(frozen=True)
class FixtureServer:
    base: str
    socket_path: str

    def stats(self, key: str) -> tuple[int, int, int]:
        """Requests, request-body bytes and peak concurrency the server saw for ``key``."""
        text = httpx.get(f"{self.base}/stats?of={key}").text
        hits, body_bytes, peak = (int(part) for part in text.split())
        return hits, body_bytes, peak


@pytest.fixture(scope="module")
def server() -> Iterator[FixtureServer]:
    folder = tempfile.mkdtemp(prefix="mlfe")
    socket_path = os.path.join(folder, "s.sock")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, socket_path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield FixtureServer(base=f"http://127.0.0.1:{port}", socket_path=socket_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def new_key() -> str:
    return uuid.uuid4().hex[:12]


async def test_closed_loop_sends_exactly_the_requested_count(server: FixtureServer) -> None:
    key = new_key()
    config = LoadConfig(
        url=f"{server.base}/ok?key={key}", connections=4, requests=200, duration=None
    )

    result = await run_load(config)

    assert result.completed == 200
    assert result.status_counts == {200: 200}
    assert result.errors == {}
    assert result.rps > 0
    assert result.latency.count == 200
    assert result.latency.min_ms <= result.latency.p50_ms <= result.latency.p99_ms
    assert result.latency.p99_ms <= result.latency.max_ms
    assert result.sockets_opened == 4  # keep-alive: one socket per connection, reused
    assert server.stats(key)[0] == 200


async def test_closed_loop_keeps_connections_busy_and_caps_them(server: FixtureServer) -> None:
    key = new_key()
    config = LoadConfig(url=f"{server.base}/slow?ms=20&key={key}", connections=3, requests=30)

    result = await run_load(config)

    assert result.status_counts == {200: 30}
    assert server.stats(key)[2] == 3


async def test_warmup_requests_are_sent_but_not_counted(server: FixtureServer) -> None:
    key = new_key()
    config = LoadConfig(url=f"{server.base}/ok?key={key}", connections=2, duration=0.4, warmup=0.3)

    result = await run_load(config)

    hits = server.stats(key)[0]
    assert result.completed == sum(result.status_counts.values()) > 0
    assert hits > result.completed
    assert result.elapsed_s >= 0.4


async def test_post_body_reaches_the_server_intact(server: FixtureServer) -> None:
    key = new_key()
    body = b'{"data": [[1, 2, 3]]}' * 50
    config = LoadConfig(
        url=f"{server.base}/ok?key={key}",
        method="POST",
        body=body,
        headers=(("Content-Type", "application/json"),),
        connections=2,
        requests=20,
        duration=None,
    )

    result = await run_load(config)

    assert result.status_counts == {200: 20}
    assert server.stats(key)[:2] == (20, 20 * len(body))


async def test_statuses_are_counted_by_code(server: FixtureServer) -> None:
    key = new_key()
    unavailable = await run_load(
        LoadConfig(url=f"{server.base}/unavailable?key={key}", requests=10, duration=None)
    )
    alternate = await run_load(
        LoadConfig(url=f"{server.base}/alternate?key={key}", requests=100, duration=None)
    )

    assert unavailable.status_counts == {503: 10}
    assert unavailable.errors == {}
    assert alternate.status_counts == {200: 50, 503: 50}


async def test_open_loop_counts_a_server_stall_from_the_intended_send_time(
    server: FixtureServer,
) -> None:
    # At 200 req/s the server freezes for 300 ms after its 100th request: the ~60
    # requests due during the freeze must carry the wait, not just the one in flight.
    key = new_key()
    config = LoadConfig(
        url=f"{server.base}/stall?at=100&ms=300&key={key}", connections=4, rate=200, duration=1.5
    )

    result = await run_load(config)

    assert result.mode == "open"
    assert result.completed == 300
    assert result.status_counts == {200: 300}
    assert result.latency.max_ms >= 300
    assert result.latency.p99_ms >= 250
    assert result.latency.p90_ms >= 75


async def test_open_loop_requests_wait_for_a_free_connection(server: FixtureServer) -> None:
    # Two connections at 50 ms each serve 40 req/s; 100 req/s for 0.5 s builds a queue
    # that the latencies must show, while the server never sees more than two at once.
    key = new_key()
    config = LoadConfig(
        url=f"{server.base}/slow?ms=50&key={key}", connections=2, rate=100, duration=0.5
    )

    result = await run_load(config)

    assert result.status_counts == {200: 50}
    assert server.stats(key)[2] == 2
    assert result.latency.max_ms >= 600


async def test_arrival_clock_ticks_at_perf_counter_times_never_early() -> None:
    # Off-millisecond times the loop's own timers would round: each tick must come at or
    # after its time on perf_counter's clock (a wrong clock fires at once or never).
    clock = ArrivalClock.open(asyncio.get_running_loop())
    if clock is None:
        pytest.skip("no timerfd on this platform")
    first, interval = time.perf_counter() + 0.0203, 0.0017
    woken = []
    try:
        clock.start(first, interval)
        for _ in range(5):
            await asyncio.wait_for(clock.tick(), timeout=2)
            woken.append(time.perf_counter())
    finally:
        clock.close()

    assert all(at >= first + k * interval for k, at in enumerate(woken))


async def test_unix_socket_url(server: FixtureServer) -> None:
    key = new_key()
    config = LoadConfig(
        url=f"unix:{server.socket_path}:/ok?key={key}", connections=2, requests=50, duration=None
    )

    result = await run_load(config)

    assert result.status_counts == {200: 50}
    assert server.stats(key)[0] == 50


async def test_timeouts_are_counted_as_errors(server: FixtureServer) -> None:
    config = LoadConfig(url=f"{server.base}/slow?ms=2000", requests=2, duration=None, timeout=0.2)

    result = await run_load(config)

    assert result.errors == {"timeout": 2}
    assert result.completed == 0


async def test_refused_connections_are_counted_as_connect_errors() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        result = await run_load(LoadConfig(url=f"http://127.0.0.1:{port}/", requests=3))

    assert result.errors == {"connect": 3}
    assert result.completed == 0


async def test_connections_closed_without_an_answer_are_counted_as_resets() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()

    rude = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = rude.sockets[0].getsockname()[1]
    try:
        result = await run_load(LoadConfig(url=f"http://127.0.0.1:{port}/", requests=5))
    finally:
        rude.close()
        await rude.wait_closed()

    assert result.errors == {"reset": 5}


async def test_samples_arrive_every_100_ms(server: FixtureServer) -> None:
    samples: list[Sample] = []
    config = LoadConfig(url=f"{server.base}/ok", connections=2, duration=0.6, warmup=0.2)

    result: LoadResult = await run_load(config, on_sample=samples.append)

    assert len(samples) >= 5
    assert [s.elapsed_s for s in samples] == sorted(s.elapsed_s for s in samples)
    assert not samples[0].measuring
    assert any(s.measuring for s in samples)
    assert sum(s.completed for s in samples) >= result.completed


def test_cli_prints_json(server: FixtureServer, tmp_path: Path) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_text('{"data": 1}')
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "loadgen.py"),
            f"{server.base}/ok",
            "-b",
            f"@{body_file}",
            "-H",
            "Content-Type: application/json",
            "-n",
            "20",
            "-c",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    document = json.loads(completed.stdout)
    assert document["method"] == "POST"
    assert document["completed"] == 20
    assert document["status_counts"] == {"200": 20}
    assert set(document["latency_ms"]) >= {"p50", "p90", "p99", "p99.9", "max"}
