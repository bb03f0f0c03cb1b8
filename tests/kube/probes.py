"""Container probes as the kubelet runs them: httpGet, tcpSocket, exec.

An HTTP probe succeeds on a status from 200 to 399 within timeoutSeconds, over a fresh
connection (the kubelet does not keep probe connections alive). The message on failure
reads like the kubelet's, since it ends up in Unhealthy events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any


class ProbeFailed(Exception):
    pass


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ProbeFailed(f"port {port!r} is not a named port of the container")


async def run_probe(
    probe: Mapping[str, Any], host: str, container: Mapping[str, Any], env: Mapping[str, str]
) -> None:
    """Raise ProbeFailed with the kubelet's wording when the probe does not pass."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        action = probe["httpGet"]
        port = resolve_port(action.get("port"), container)
        await _http_get(
            action.get("host") or host,
            port,
            action.get("path", "/"),
            action.get("httpHeaders") or [],
            timeout,
        )
    elif "tcpSocket" in probe:
        port = resolve_port(probe["tcpSocket"].get("port"), container)
        await _tcp(probe["tcpSocket"].get("host") or host, port, timeout)
    elif "exec" in probe:
        await _exec(probe["exec"].get("command") or [], env, timeout)
    else:
        raise ProbeFailed("probe has no supported handler")


async def _http_get(
    host: str, port: int, path: str, headers: list[Mapping[str, str]], timeout: float
) -> None:
    url = f"http://{host}:{port}{path}"
    try:
        status_line = await asyncio.wait_for(_status_line(host, port, path, headers), timeout)
    except asyncio.TimeoutError:
        raise ProbeFailed(
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        ) from None
    except OSError as error:
        reason = (
            "connect: connection refused"
            if isinstance(error, ConnectionRefusedError)
            else str(error)
        )
        raise ProbeFailed(f'Get "{url}": dial tcp {host}:{port}: {reason}') from None
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProbeFailed(f'Get "{url}": malformed HTTP response {status_line!r}')
    code = int(parts[1])
    if not 200 <= code < 400:
        raise ProbeFailed(f"HTTP probe failed with statuscode: {code}")


async def _status_line(host: str, port: int, path: str, headers: list[Mapping[str, str]]) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "User-Agent: kube-probe/1.31",
            "Accept: */*",
            "Connection: close",
        ]
        lines += [f"{h['name']}: {h['value']}" for h in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _tcp(host: str, port: int, timeout: float) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        raise ProbeFailed(f"dial tcp {host}:{port}: i/o timeout") from None
    except OSError as error:
        reason = (
            "connect: connection refused"
            if isinstance(error, ConnectionRefusedError)
            else str(error)
        )
        raise ProbeFailed(f"dial tcp {host}:{port}: {reason}") from None
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _exec(command: list[str], env: Mapping[str, str], timeout: float) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise ProbeFailed(f"command {command!r} timed out") from None
    if process.returncode != 0:
        raise ProbeFailed(
            output.decode(errors="replace").strip() or f"command exited with {process.returncode}"
        )
