"""Client CPU per request: router/upstream.py against httpx and a bare asyncio-streams client.

    .venv/bin/python benchmarks/upstream_micro.py [--requests 3000] [--concurrency 32] [--rounds 3]

One uvicorn no-op server (uvloop + httptools, its own process) answers every client. In
this process, on uvloop, each client sends the same scoring-like POST, first one at a
time, then from `--concurrency` tasks at once; the figure is the client process's CPU
time (time.process_time) per request, so the server's work is not counted. Clients take
turns within each round and the median round is reported, so drift on a shared machine
hits all of them. Results are printed and written to benchmarks/results/upstream_micro.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not only as `python -m benchmarks....`
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import save_report  # noqa: E402
from router.upstream import UpstreamPool  # noqa: E402

RESULT_FILE = ROOT / "benchmarks" / "results" / "upstream_micro.json"
BODY = b'{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}'
ANSWER = b'{"result": [0.5]}'
# What a data plane forwards: the client's headers as ASGI gives them.
HEADERS = [
    (b"content-type", b"application/json"),
    (b"accept", b"*/*"),
    (b"user-agent", b"loadgen/1.0"),
    (b"x-request-id", b"0f8fad5b-d9cb-469f-a165-70867728950e"),
    (b"connection", b"keep-alive"),
]
TIMEOUT_S = 10.0

SendOne = Callable[[], Awaitable[bytes]]


# ---------------------------------------------------------------------------------------
# The server: a no-op ASGI app on uvicorn, in a child process


async def noop_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(ANSWER)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        noop_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the no-op server exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the no-op server did not start listening within 30 s")


# ---------------------------------------------------------------------------------------
# The clients


class StreamsClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the floor without a parser."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.request = (
            b"POST /score HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % port
            + b"".join(name + b": " + value + b"\r\n" for name, value in HEADERS)
            + b"content-length: %d\r\n\r\n" % len(BODY)
            + BODY
        )

    async def send(self) -> bytes:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        start = head.lower().index(b"content-length:") + len(b"content-length:")
        length = int(head[start : head.index(b"\r\n", start)])
        body = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return body

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def make_clients(port: int) -> dict[str, tuple[SendOne, Callable[[], Awaitable[None]]]]:
    pool = UpstreamPool(f"127.0.0.1:{port}", max_idle=256)

    async def via_upstream() -> bytes:
        response = await pool.request(b"POST", b"/score", HEADERS, BODY, TIMEOUT_S)
        if response.complete:
            return response.body
        parts = [response.body]
        while chunk := await response.read():
            parts.append(chunk)
        return b"".join(parts)

    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        timeout=TIMEOUT_S,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
    )
    httpx_headers = [(k.decode(), v.decode()) for k, v in HEADERS if k != b"connection"]

    async def via_httpx() -> bytes:
        response = await client.post("/score", content=BODY, headers=httpx_headers)
        return response.content

    streams = StreamsClient(port)
    return {
        "upstream": (via_upstream, pool.close),
        "httpx": (via_httpx, client.aclose),
        "raw_streams": (streams.send, streams.close),
    }


async def measure(send: SendOne, requests: int, concurrency: int) -> dict[str, float]:
    """CPU µs and wall-clock throughput for `requests` requests from `concurrency` tasks."""
    per_task = requests // concurrency
    total = per_task * concurrency

    async def worker() -> None:
        for _ in range(per_task):
            body = await send()
            if body != ANSWER:
                raise SystemExit(f"unexpected answer {body!r}")

    cpu = time.process_time()
    wall = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    return {"cpu_us_per_request": cpu / total * 1e6, "requests_per_s": total / wall}


async def run(args: argparse.Namespace, port: int) -> dict[str, Any]:
    clients = await make_clients(port)
    modes = {"sequential": 1, "concurrent": args.concurrency}
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {mode: [] for mode in modes} for name in clients
    }
    for send, _ in clients.values():  # warm up connections and code paths
        await measure(send, 200, args.concurrency)
    for round_no in range(args.rounds):
        for mode, concurrency in modes.items():
            for name, (send, _) in clients.items():
                figures = await measure(send, args.requests, concurrency)
                rounds[name][mode].append(figures)
                print(
                    f"round={round_no + 1} mode={mode} client={name} "
                    f"cpu_us_per_request={figures['cpu_us_per_request']:.1f} "
                    f"requests_per_s={figures['requests_per_s']:.0f}",
                    flush=True,
                )
    for _, close in clients.values():
        await close()

    results: dict[str, dict[str, dict[str, Any]]] = {
        name: {
            mode: {
                "cpu_us_per_request": round(
                    statistics.median(r["cpu_us_per_request"] for r in runs), 1
                ),
                "requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs)),
                "rounds": runs,
            }
            for mode, runs in by_mode.items()
        }
        for name, by_mode in rounds.items()
    }
    ratios = {
        f"{name}_cpu_per_upstream_cpu": {
            mode: round(
                results[name][mode]["cpu_us_per_request"]
                / results["upstream"][mode]["cpu_us_per_request"],
                2,
            )
            for mode in modes
        }
        for name in clients
        if name != "upstream"
    }
    return {"results": results, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child: the server
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_until_listening(port, server)
        measured = uvloop.run(run(args, port))
    finally:
        server.terminate()
        server.wait(timeout=10)

    document = {
        "benchmark": "upstream_micro",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "requests_per_measurement": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "request_body_bytes": len(BODY),
            "server": "uvicorn + uvloop + httptools no-op ASGI app, one process, TCP loopback",
            "client_loop": "uvloop",
            "figure": "client process CPU time per request (time.process_time), median round",
        },
        **measured,
    }
    save_report(RESULT_FILE, document)
    print(json.dumps({"results": _summary(measured["results"]), "ratios": measured["ratios"]}))
    print(f"written to {RESULT_FILE.relative_to(ROOT)}")


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {mode: figures["cpu_us_per_request"] for mode, figures in by_mode.items()}
        for name, by_mode in results.items()
    }


if __name__ == "__main__":
    main()
