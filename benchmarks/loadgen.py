"""An HTTP/1.1 load generator light enough to saturate a Python server on two cores.

    python benchmarks/loadgen.py http://127.0.0.1:5001/score -X POST -b @body.json -c 8 -d 10
    python benchmarks/loadgen.py unix:/tmp/r.sock:/score --rate 500 -c 32 -d 10 --json out.json

Closed loop (the default): each of N keep-alive connections sends its next request when
the previous answer arrives. Open loop (``--rate``): requests arrive on a fixed clock and
wait for a free connection when all are busy; latency is measured from the *intended*
send time, so a server stall shows up in the percentiles instead of being hidden by a
client that politely stopped sending (coordinated omission).

The hot path is callbacks only: a pre-built request is written, ``httptools`` parses the
answer, and the completion callback records it and writes the next request. No task,
future or allocation per request beyond what the transport itself needs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

SAMPLE_INTERVAL_S = 0.1
# After a failed connect the closed loop waits this long before trying again, so a dead
# server costs a few hundred attempts per second instead of a spinning core.
CONNECT_RETRY_DELAY_S = 0.01
# uvloop rounds timers to whole milliseconds; sleeping less would spin.
MIN_ARRIVAL_SLEEP_S = 0.001
# The arrival clock ticks at most this often; faster rates send several arrivals per tick,
# so the load generator wakes at most 10,000 times a second for arrivals.
MIN_TICK_S = 100e-6


# ---------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Target:
    """Where requests go: a TCP host and port, or a Unix socket path."""

    path: str
    host: str = ""
    port: int = 0
    uds: str = ""

    @property
    def host_header(self) -> str:
        if self.uds:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Parse ``http://host:port/path`` or ``unix:/socket.sock:/path``."""
    if url.startswith("unix:"):
        rest = url[len("unix:") :]
        socket_path, sep, path = rest.partition(":/")
        if not socket_path:
            raise ValueError(f"no socket path in {url!r}; expected unix:/path.sock:/path")
        return Target(path="/" + path if sep else "/", uds=socket_path)
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}; expected http://host:port/path")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(path=path, host=parts.hostname, port=parts.port or 80)


@dataclass(frozen=True)
class LoadConfig:
    """One load run. Set ``rate`` for an open loop; leave it None for a closed loop."""

    url: str
    method: str = "GET"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    connections: int = 1
    rate: float | None = None
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    timeout: float = 10.0
    target: Target = field(init=False)

    def __post_init__(self) -> None:
        # The URL is parsed here, once, so a bad one fails before any socket is opened.
        object.__setattr__(self, "target", parse_url(self.url))
        if self.connections < 1:
            raise ValueError(f"connections ({self.connections}) must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate ({self.rate}) must be positive")
        if self.duration is None and self.requests is None:
            raise ValueError("give a duration, a request count or both")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration ({self.duration}) must be positive")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests ({self.requests}) must be at least 1")
        if self.warmup < 0:
            raise ValueError(f"warmup ({self.warmup}) must not be negative")
        if self.timeout <= 0:
            raise ValueError(f"timeout ({self.timeout}) must be positive")

    @property
    def mode(self) -> str:
        return "closed" if self.rate is None else "open"

    def request_bytes(self) -> bytes:
        """The request as written on the wire, built once for the whole run."""
        lines = [f"{self.method} {self.target.path} HTTP/1.1", f"Host: {self.target.host_header}"]
        names = {name.lower() for name, _ in self.headers}
        if "host" in names:
            lines.pop()
        if (self.body or self.method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


# ---------------------------------------------------------------------------------------
# Arrival clock


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(seconds: float) -> _Timespec:
    whole = int(seconds)
    return _Timespec(whole, int((seconds - whole) * 1_000_000_000))


class ArrivalClock:
    """A periodic tick on the event loop, precise to microseconds (a Linux timerfd).

    The loop's own timers cannot pace an open loop: uvloop keeps its clock in whole
    milliseconds, so ``asyncio.sleep`` wakes a millisecond or two late and the arrivals
    due meanwhile go out together, 13 at once at 13,000 per second. Each is counted late
    from its intended time, and the burst queues in the server as no steady stream of
    that rate would. A timerfd ticks on ``CLOCK_MONOTONIC``, the clock behind
    ``time.perf_counter``, and wakes the loop through its selector like any socket.
    """

    _CLOCK_MONOTONIC = 1
    _TFD_TIMER_ABSTIME = 1
    _TFD_NONBLOCK = os.O_NONBLOCK
    _TFD_CLOEXEC = os.O_CLOEXEC

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, libc: ctypes.CDLL) -> None:
        self.loop = loop
        self.fd = fd
        self.libc = libc
        self.waiter: asyncio.Future[None] | None = None
        loop.add_reader(fd, self._fired)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop) -> ArrivalClock | None:
        """A clock on ``loop``, or None where there is no timerfd on perf_counter's clock."""
        clock = time.get_clock_info("perf_counter").implementation
        if not sys.platform.startswith("linux") or "CLOCK_MONOTONIC" not in clock:
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(cls._CLOCK_MONOTONIC, cls._TFD_NONBLOCK | cls._TFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        return cls(loop, fd, libc)

    def start(self, first: float, interval: float) -> None:
        """Tick at ``first`` (a perf_counter time), then every ``interval`` seconds."""
        spec = _Itimerspec(_timespec(interval), _timespec(first))
        if self.libc.timerfd_settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    async def tick(self) -> None:
        """Wait for the next tick; ticks missed meanwhile are not made up for."""
        self.waiter = self.loop.create_future()
        await self.waiter

    def _fired(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)  # the count of ticks since the last read; the caller uses now
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


# ---------------------------------------------------------------------------------------
# Results


class LatencyHistogram:
    """Log-linear buckets over microseconds, in the manner of HdrHistogram.

    Exact below 256 µs and within 1/128 (0.8 %) above, in constant memory, so a
    long run at thousands of requests per second costs no more than a short one.
    """

    _SUB_BITS = 7
    _EXACT_LIMIT = 1 << (_SUB_BITS + 1)

    def __init__(self) -> None:
        self._counts = [0] * 4096
        self.count = 0
        self.total_us = 0
        self.min_us = 0
        self.max_us = 0

    def record(self, value_us: int) -> None:
        if value_us < self._EXACT_LIMIT:
            index = max(value_us, 0)
        else:
            shift = value_us.bit_length() - self._SUB_BITS - 1
            index = (shift << self._SUB_BITS) + (value_us >> shift)
            if index >= len(self._counts):
                self._counts.extend([0] * (index + 1 - len(self._counts)))
        self._counts[index] += 1
        if self.count == 0 or value_us < self.min_us:
            self.min_us = value_us
        if value_us > self.max_us:
            self.max_us = value_us
        self.count += 1
        self.total_us += value_us

    def _highest_in_bucket(self, index: int) -> int:
        if index < self._EXACT_LIMIT:
            return index
        shift = (index >> self._SUB_BITS) - 1
        mantissa = index - (shift << self._SUB_BITS)
        return ((mantissa + 1) << shift) - 1

    def percentile_us(self, percent: float) -> int:
        """The smallest recorded value that ``percent`` % of values do not exceed."""
        if self.count == 0:
            return 0
        wanted = max(1, math.ceil(self.count * percent / 100.0))
        seen = 0
        for index, bucket_count in enumerate(self._counts):
            seen += bucket_count
            if seen >= wanted:
                return min(max(self._highest_in_bucket(index), self.min_us), self.max_us)
        return self.max_us

    def summary(self) -> LatencySummary:
        def ms(value_us: float) -> float:
            return round(value_us / 1000.0, 3)

        return LatencySummary(
            count=self.count,
            min_ms=ms(self.min_us),
            mean_ms=ms(self.total_us / self.count) if self.count else 0.0,
            p50_ms=ms(self.percentile_us(50)),
            p90_ms=ms(self.percentile_us(90)),
            p99_ms=ms(self.percentile_us(99)),
            p999_ms=ms(self.percentile_us(99.9)),
            max_ms=ms(self.max_us),
        )


@dataclass(frozen=True)
class LatencySummary:
    """Latency of completed responses (any status); errors are counted, not timed."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float


@dataclass(frozen=True)
class LoadResult:
    """What a run measured, after warmup.

    ``errors`` counts requests that got no answer, by kind: ``connect`` (the socket could
    not be opened), ``timeout`` (no answer within the timeout of the intended send time),
    ``reset`` (the server closed the connection first) and ``protocol`` (unparsable answer).
    """

    url: str
    method: str
    mode: str
    connections: int
    target_rate: float | None
    elapsed_s: float
    completed: int
    rps: float
    latency: LatencySummary
    status_counts: dict[int, int]
    errors: dict[str, int]
    client_cpu_s: float
    # Sockets opened over the whole run: about `connections` against a keep-alive server,
    # about one per request against one that closes after every answer.
    sockets_opened: int

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "method": self.method,
            "mode": self.mode,
            "connections": self.connections,
            "target_rate": self.target_rate,
            "elapsed_s": round(self.elapsed_s, 4),
            "completed": self.completed,
            "rps": round(self.rps, 1),
            "latency_ms": {
                "min": self.latency.min_ms,
                "mean": self.latency.mean_ms,
                "p50": self.latency.p50_ms,
                "p90": self.latency.p90_ms,
                "p99": self.latency.p99_ms,
                "p99.9": self.latency.p999_ms,
                "max": self.latency.max_ms,
            },
            "status_counts": {str(status): n for status, n in sorted(self.status_counts.items())},
            "errors": dict(self.errors),
            "errors_total": self.errors_total,
            "client_cpu_s": round(self.client_cpu_s, 4),
            "sockets_opened": self.sockets_opened,
        }


@dataclass(frozen=True)
class Sample:
    """One 100 ms slice of a run (warmup included), for time series."""

    elapsed_s: float
    measuring: bool
    completed: int
    errors: int
    rps: float
    in_flight: int
    queued: int
    p50_ms: float
    p99_ms: float
    max_ms: float


SampleCallback = Callable[[Sample], None]


# ---------------------------------------------------------------------------------------
# The engine


class _Slot:
    """One logical client connection; its socket is replaced when the server closes it."""

    __slots__ = ("busy", "conn", "connect_task", "intended", "measured")

    def __init__(self) -> None:
        self.conn: _HttpConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.busy = False
        self.intended = 0.0
        self.measured = False


class _HttpConnection(asyncio.Protocol):
    """One socket: feeds answers to httptools and reports each complete one to the run."""

    def __init__(self, run: _LoadRun, slot: _Slot) -> None:
        self.run = run
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        # Only on_message_complete is defined: httptools skips callbacks a protocol lacks.
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.run.on_broken(self, "protocol")

    def on_message_complete(self) -> None:
        self.run.on_response(self, self.parser.get_status_code(), self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.on_broken(self, "reset")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _LoadRun:
    """State of one run: slots, the open-loop queue, counters and histograms."""

    def __init__(self, config: LoadConfig, on_sample: SampleCallback | None) -> None:
        self.config = config
        self.target = config.target
        self.request = config.request_bytes()
        self.on_sample = on_sample
        self.loop = asyncio.get_running_loop()
        self.slots = [_Slot() for _ in range(config.connections)]
        self.idle: list[_Slot] = []
        self.queue: collections.deque[float] = collections.deque()
        self.open_loop = config.rate is not None

        self.start = 0.0
        self.measure_start = 0.0
        self.measure_end = math.inf
        self.issued = 0  # measured requests sent or queued
        self.outstanding = 0  # measured requests without an outcome yet
        self.last_outcome = 0.0
        self.stopping = False
        self.finished = asyncio.Event()

        self.histogram = LatencyHistogram()
        self.status_counts: dict[int, int] = {}
        self.errors: dict[str, int] = {}

        self.interval_histogram = LatencyHistogram()
        self.interval_completed = 0
        self.interval_errors = 0
        self.in_flight = 0
        self.sockets_opened = 0

    # -- sending ------------------------------------------------------------------------

    def send(self, slot: _Slot, intended: float, measured: bool) -> None:
        slot.busy = True
        slot.intended = intended
        slot.measured = measured
        self.in_flight += 1
        conn = slot.conn
        if conn is not None and conn.transport is not None:
            conn.transport.write(self.request)
        else:
            slot.connect_task = self.loop.create_task(self.connect_and_send(slot))

    async def connect_and_send(self, slot: _Slot) -> None:
        try:
            conn = await self.connect(slot)
        except asyncio.CancelledError:
            return  # timed out while connecting; the sweep has counted it
        except OSError:
            slot.connect_task = None
            self.on_failure(slot, "connect")
            return
        slot.connect_task = None
        slot.conn = conn
        assert conn.transport is not None
        conn.transport.write(self.request)

    async def connect(self, slot: _Slot) -> _HttpConnection:
        def factory() -> _HttpConnection:
            return _HttpConnection(self, slot)

        if self.target.uds:
            _, conn = await self.loop.create_unix_connection(factory, self.target.uds)
        else:
            _, conn = await self.loop.create_connection(factory, self.target.host, self.target.port)
        self.sockets_opened += 1
        return conn

    async def preconnect(self) -> None:
        """Open every connection before the clock starts; failures retry on first use."""

        async def one(slot: _Slot) -> None:
            with contextlib.suppress(OSError):
                slot.conn = await asyncio.wait_for(self.connect(slot), self.config.timeout)

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.gather(*(one(slot) for slot in self.slots))

    # -- outcomes -----------------------------------------------------------------------

    def on_response(self, conn: _HttpConnection, status: int, keep_alive: bool) -> None:
        slot = conn.slot
        if slot.conn is not conn or not slot.busy:
            return  # an answer to a request that already timed out
        now = time.perf_counter()
        slot.busy = False
        self.in_flight -= 1
        if not keep_alive:
            slot.conn = None
            conn.close()
        latency_us = int((now - slot.intended) * 1_000_000)
        if slot.measured:
            self.histogram.record(latency_us)
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
            self.outstanding -= 1
            self.last_outcome = now
        if self.on_sample is not None:
            self.interval_histogram.record(latency_us)
            self.interval_completed += 1
        self.next_request(slot, now)

    def on_broken(self, conn: _HttpConnection, kind: str) -> None:
        """The socket failed: a request on it (if any) is lost and the socket dropped."""
        slot = conn.slot
        if slot.conn is not conn:
            return
        slot.conn = None
        conn.close()
        if slot.busy:
            self.on_failure(slot, kind)

    def on_failure(self, slot: _Slot, kind: str) -> None:
        now = time.perf_counter()
        slot.busy = False
        self.in_flight -= 1
        self.count_error(slot.measured, kind, now)
        if kind == "connect" and not self.open_loop and not self.stopping:
            self.loop.call_later(CONNECT_RETRY_DELAY_S, self.next_request, slot, None)
        else:
            self.next_request(slot, now)

    def count_error(self, measured: bool, kind: str, now: float) -> None:
        if measured:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.outstanding -= 1
            self.last_outcome = now
        self.interval_errors += 1

    # -- scheduling ---------------------------------------------------------------------

    def next_request(self, slot: _Slot, now: float | None) -> None:
        """Give a free slot its next request, or park it."""
        if self.open_loop:
            if self.queue:
                intended = self.queue.popleft()
                self.send(slot, intended, intended >= self.measure_start)
            else:
                self.idle.append(slot)
        elif not self.stopping:
            if now is None:
                now = time.perf_counter()
            if now >= self.measure_end:
                self.stop()
            else:
                measured = now >= self.measure_start
                self.send(slot, now, measured)
                if measured:
                    self.count_issued()
        if self.stopping and self.outstanding <= 0:
            self.finished.set()

    def count_issued(self) -> None:
        self.issued += 1
        self.outstanding += 1
        if self.config.requests is not None and self.issued >= self.config.requests:
            self.stop()

    def stop(self) -> None:
        self.stopping = True
        if self.outstanding <= 0:
            self.finished.set()

    def arrive(self, intended: float) -> None:
        """Open loop: a request is due at ``intended``; it goes out now or waits."""
        measured = intended >= self.measure_start
        if self.idle:
            self.send(self.idle.pop(), intended, measured)
        else:
            # Warmup arrivals queue too, so the measured part starts with the backlog the
            # offered load really builds up.
            self.queue.append(intended)
        if measured:
            self.count_issued()

    async def arrivals(self, rate: float) -> None:
        """Issue every arrival that is due, then wait for the next one.

        Arrival k is due at start + k / rate whenever this task gets to run, so a late
        wake-up delays the send but never the intended time the latency is counted from.
        The arrival clock ticks once per arrival (at most every 100 µs); without one (not
        Linux) the loop's own timers pace the arrivals, a millisecond's worth at a time.
        """
        clock = ArrivalClock.open(self.loop)
        sent = 0
        try:
            if clock is not None:
                clock.start(self.start, max(1.0 / rate, MIN_TICK_S))
            while not self.stopping:
                due = int((time.perf_counter() - self.start) * rate) + 1
                while sent < due and not self.stopping:
                    intended = self.start + sent / rate
                    if intended >= self.measure_end:
                        self.stop()
                        break
                    sent += 1
                    self.arrive(intended)
                if clock is not None:
                    await clock.tick()
                else:
                    next_due = self.start + sent / rate
                    await asyncio.sleep(max(MIN_ARRIVAL_SLEEP_S, next_due - time.perf_counter()))
        finally:
            if clock is not None:
                clock.close()

    # -- housekeeping -------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Time out requests older than the timeout, counted from their intended time."""
        deadline = now - self.config.timeout
        for slot in self.slots:
            if slot.busy and slot.intended <= deadline:
                slot.busy = False
                self.in_flight -= 1
                if slot.connect_task is not None:
                    slot.connect_task.cancel()
                    slot.connect_task = None
                if slot.conn is not None:
                    slot.conn.close()
                    slot.conn = None
                self.count_error(slot.measured, "timeout", now)
                self.next_request(slot, now)
        while self.queue and self.queue[0] <= deadline:
            intended = self.queue.popleft()
            self.count_error(intended >= self.measure_start, "timeout", now)
        if self.stopping and self.outstanding <= 0:
            self.finished.set()

    def emit_sample(self, now: float, interval_s: float) -> None:
        if self.on_sample is None:
            return
        histogram = self.interval_histogram
        self.on_sample(
            Sample(
                elapsed_s=round(now - self.start, 4),
                measuring=now >= self.measure_start and not self.stopping,
                completed=self.interval_completed,
                errors=self.interval_errors,
                rps=round(self.interval_completed / interval_s, 1),
                in_flight=self.in_flight,
                queued=len(self.queue),
                p50_ms=histogram.percentile_us(50) / 1000.0,
                p99_ms=histogram.percentile_us(99) / 1000.0,
                max_ms=histogram.max_us / 1000.0,
            )
        )
        self.interval_histogram = LatencyHistogram()
        self.interval_completed = 0
        self.interval_errors = 0

    async def execute(self) -> LoadResult:
        config = self.config
        await self.preconnect()
        cpu_before = time.process_time()
        self.start = time.perf_counter()
        self.measure_start = self.start + config.warmup
        if config.duration is not None:
            self.measure_end = self.measure_start + config.duration
        arrivals: asyncio.Task[None] | None = None
        if config.rate is not None:
            self.idle = list(reversed(self.slots))
            arrivals = self.loop.create_task(self.arrivals(config.rate))
        else:
            for slot in self.slots:
                self.next_request(slot, self.start)
        last_tick = self.start
        try:
            while not self.finished.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    wait = max(0.0, last_tick + SAMPLE_INTERVAL_S - time.perf_counter())
                    await asyncio.wait_for(self.finished.wait(), wait)
                now = time.perf_counter()
                if now - last_tick >= SAMPLE_INTERVAL_S:
                    if not self.stopping and now >= self.measure_end:
                        self.stop()
                    self.sweep(now)
                    self.emit_sample(now, now - last_tick)
                    last_tick = now
            # The slice since the last tick, so samples add up to the whole run.
            now = time.perf_counter()
            self.emit_sample(now, max(now - last_tick, 1e-9))
        finally:
            self.stopping = True
            if arrivals is not None:
                arrivals.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await arrivals
            self.close_all()
        end = self.last_outcome or time.perf_counter()
        elapsed = max(end - self.measure_start, 1e-9)
        completed = self.histogram.count
        return LoadResult(
            url=config.url,
            method=config.method,
            mode=config.mode,
            connections=config.connections,
            target_rate=config.rate,
            elapsed_s=elapsed,
            completed=completed,
            rps=completed / elapsed,
            latency=self.histogram.summary(),
            status_counts=dict(self.status_counts),
            errors=dict(self.errors),
            client_cpu_s=time.process_time() - cpu_before,
            sockets_opened=self.sockets_opened,
        )

    def close_all(self) -> None:
        for slot in self.slots:
            if slot.connect_task is not None:
                slot.connect_task.cancel()
            if slot.conn is not None:
                slot.conn.close()
                slot.conn = None
            slot.busy = False


async def run_load(config: LoadConfig, on_sample: SampleCallback | None = None) -> LoadResult:
    """Run one load test on the running event loop and return what it measured.

    ``on_sample`` is called every 100 ms with the slice just ended (warmup included).
    """
    return await _LoadRun(config, on_sample).execute()


def run_load_blocking(config: LoadConfig, on_sample: SampleCallback | None = None) -> LoadResult:
    """``run_load`` on a fresh uvloop event loop (asyncio's when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_load(config, on_sample))
    return uvloop.run(run_load(config, on_sample))


# ---------------------------------------------------------------------------------------
# Command line


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header {text!r} is not 'Name: value'")
    return name.strip(), value.strip()


def _read_body(text: str) -> bytes:
    if text.startswith("@"):
        return Path(text[1:]).read_bytes()
    return text.encode()


def config_from_args(argv: Sequence[str] | None = None) -> tuple[LoadConfig, str | None]:
    parser = argparse.ArgumentParser(
        description="HTTP/1.1 load generator: closed loop (-c) or open loop (--rate)."
    )
    parser.add_argument("url", help="http://host:port/path or unix:/path.sock:/path")
    parser.add_argument("-X", "--method", default=None, help="default GET, or POST with a body")
    parser.add_argument("-b", "--body", default=None, help="request body, or @file")
    parser.add_argument("-H", "--header", action="append", type=_parse_header, default=[])
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-r", "--rate", type=float, default=None, help="open loop: requests/s")
    parser.add_argument("-d", "--duration", type=float, default=None, help="seconds (default 10)")
    parser.add_argument("-n", "--requests", type=int, default=None, help="stop after N requests")
    parser.add_argument("-w", "--warmup", type=float, default=0.0, help="seconds not measured")
    parser.add_argument("-t", "--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--json", dest="json_file", default=None, help="write JSON here")
    args = parser.parse_args(argv)
    body = _read_body(args.body) if args.body is not None else b""
    duration = args.duration
    if duration is None and args.requests is None:
        duration = 10.0
    try:
        config = LoadConfig(
            url=args.url,
            method=(args.method or ("POST" if body else "GET")).upper(),
            body=body,
            headers=tuple(args.header),
            connections=args.connections,
            rate=args.rate,
            duration=duration,
            requests=args.requests,
            warmup=args.warmup,
            timeout=args.timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.json_file


def _summary_line(result: LoadResult) -> str:
    latency = result.latency
    statuses = " ".join(f"{s}={n}" for s, n in sorted(result.status_counts.items()))
    errors = " ".join(f"{k}={n}" for k, n in sorted(result.errors.items())) or "none"
    return (
        f"mode={result.mode} connections={result.connections} completed={result.completed} "
        f"rps={result.rps:.1f} p50_ms={latency.p50_ms} p90_ms={latency.p90_ms} "
        f"p99_ms={latency.p99_ms} p99.9_ms={latency.p999_ms} max_ms={latency.max_ms} "
        f"status=[{statuses}] errors=[{errors}]"
    )


def main(argv: Sequence[str] | None = None) -> int:
    config, json_file = config_from_args(argv)
    result = run_load_blocking(config)
    document = json.dumps(result.to_dict(), indent=2)
    if json_file:
        Path(json_file).write_text(document + "\n")
        print(_summary_line(result))
    else:
        print(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
