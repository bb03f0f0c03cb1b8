"""uvicorn's httptools protocol, sending each response in one write instead of two.

An ASGI app sends a response as `http.response.start` and `http.response.body`, and
uvicorn writes each to the socket as it comes: two syscalls, two packets, and on loopback
two wake-ups of the client, for a response of a few hundred bytes
(benchmarks/single_write.py measures the router both ways). Here the
protocol's transport holds what is written during one step of the event loop and writes
it at once: when the response completes, or at the next turn of the loop for a response
still streaming. The router and the scoring runtime both serve through it.

It also puts a `DisconnectSignal` in each request's `scope["extensions"]`, so an app
can hear of a client hanging up without keeping a receive() call parked to find out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CLIENT_DISCONNECT", "DisconnectSignal", "SingleWriteHttpProtocol"]

CLIENT_DISCONNECT = "mlfe.client_disconnect"

# Above this, buffers go out with writelines() rather than being copied into one.
JOIN_LIMIT = 64 * 1024


class _CoalescingTransport:
    """A transport that defers writes to the end of the current event-loop step."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        transport = self._transport
        if transport.is_closing():
            return  # the client is gone; uvicorn has seen connection_lost
        if len(pending) == 1:
            transport.write(pending[0])
        elif sum(map(len, pending)) <= JOIN_LIMIT:
            transport.write(b"".join(pending))
        else:
            transport.writelines(pending)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # The rest of the transport interface (pause_reading, get_extra_info, ...).
        return getattr(self._transport, name)


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


class SingleWriteHttpProtocol(HttpToolsProtocol):
    """Pass as `uvicorn.Config(http=...)`; everything else is uvicorn's httptools protocol."""

    transport: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # One signal per connection: uvicorn serves its requests one at a time.
        self._disconnect = DisconnectSignal()
        coalescing = _CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(coalescing)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._disconnect.fire()

    def on_headers_complete(self) -> None:
        # Before uvicorn hands the scope to the app's task.
        self.scope["extensions"] = {CLIENT_DISCONNECT: self._disconnect}  # type: ignore[dict-item]
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Out now rather than at the next turn of the loop: the client is waiting.
        self.transport.flush()
        super().on_response_complete()
