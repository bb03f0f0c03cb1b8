"""N scoring slots: run() calls execute on N worker threads, off the event loop.

A request first waits (FIFO) for a free slot on the loop, then its job goes to a
worker thread and the scoring timeout starts. A slot is released only when the worker
really finishes, so a run() that outlived its timeout still counts as busy: the replica
never runs more than N calls at once, whatever the clients were told.

Workers hand results back with `call_soon_threadsafe` on a plain future, which costs
less than `run_in_executor`'s concurrent.futures chain on every request. The scoring
timeouts share one `Alarm` rather than a loop timer per call: all calls have the same
timeout, so their deadlines come in call order and the alarm only looks at the oldest.

Workers run under Linux's SCHED_BATCH policy (`yield_on_wakeup`). The event loop's thread
wakes a worker while it holds the GIL; under the default policy the woken worker preempts
it on the spot, only to find the GIL taken and sleep again: two wasted context switches
per call (`perf record -e sched:sched_switch` showed the loop's thread preempted by its own
workers about 0.65 times per request behind the router). A SCHED_BATCH thread does not
preempt on wakeup and otherwise gets the same share of CPU at the same nice level; the
event loop's thread keeps the default policy, so it still preempts for I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from scoring_runtime.alarm import Alarm
from scoring_runtime.log import log_event

T = TypeVar("T")
A = TypeVar("A")


class ScoringTimeout(Exception):
    """run() did not finish within the scoring timeout (it may still be running)."""


class _Job(Generic[A, T]):
    __slots__ = ("argument", "function", "loop", "waiter")

    def __init__(
        self,
        function: Callable[[A], T],
        argument: A,
        loop: asyncio.AbstractEventLoop,
        waiter: asyncio.Future[T],
    ) -> None:
        self.function = function
        self.argument = argument
        self.loop = loop
        self.waiter = waiter


class ScoringSlots:
    """Bounded concurrency for blocking calls, with a timeout that keeps the slot busy."""

    def __init__(self, size: int, timeout_s: float, thread_name: str = "run") -> None:
        self.size = size
        self.timeout_s = timeout_s
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Calls on a worker that have not answered yet, oldest first, with their deadlines;
        # at most `size` of them, since each holds a slot.
        self._running: dict[asyncio.Future[Any], float] = {}
        # Made on the running loop at the first call; its loop is the one calls run on.
        self._timeouts: Alarm | None = None
        self._jobs: queue.SimpleQueue[_Job[Any, Any] | None] = queue.SimpleQueue()
        # Daemon threads: a run() stuck forever must not keep the process alive at exit.
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> int:
        """Slots held by a call, including calls that already timed out."""
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def call(self, function: Callable[[A], T], argument: A) -> T:
        """`function(argument)` on a worker thread; raises ScoringTimeout past the timeout."""
        await self._acquire()
        timeouts = self._timeouts
        if timeouts is None:
            # Once: get_running_loop() makes a getpid() syscall on every call.
            timeouts = self._timeouts = Alarm(asyncio.get_running_loop(), self._expire_due)
        loop = timeouts.loop
        waiter: asyncio.Future[T] = loop.create_future()
        deadline = loop.time() + self.timeout_s
        self._running[waiter] = deadline
        self._jobs.put(_Job(function, argument, loop, waiter))
        timeouts.set(deadline)
        try:
            return await waiter
        finally:
            self._running.pop(waiter, None)

    def close(self) -> None:
        """Ask idle workers to stop; busy ones finish their call first (they are daemons)."""
        for _ in self._threads:
            self._jobs.put(None)

    async def _acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self._release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # The slot goes straight to the longest waiter; _free stays unchanged.
                waiter.set_result(None)
                return
        self._free += 1

    def _expire_due(self) -> None:
        """Fail every call past its deadline with ScoringTimeout; its slot stays busy."""
        assert self._timeouts is not None  # it is what calls this
        now = self._timeouts.loop.time()
        running = self._running
        while running:
            waiter, deadline = next(iter(running.items()))
            if deadline > now:
                self._timeouts.set(deadline)
                return
            del running[waiter]
            if not waiter.done():
                waiter.set_exception(ScoringTimeout())

    def _finish(self, job: _Job[Any, Any], result: Any, error: BaseException | None) -> None:
        # Runs on the loop once the worker is done: only now is the slot free again.
        self._release()
        if job.waiter.done():
            # Timed out earlier; the caller has answered. Worth a line: the slot was
            # busy all along, which explains waits seen meanwhile.
            log_event("timed_out_call_finished", failed=error is not None)
            return
        if error is not None:
            job.waiter.set_exception(error)
        else:
            job.waiter.set_result(result)

    def _work(self) -> None:
        yield_on_wakeup()
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                result, error = job.function(job.argument), None
            except Exception as raised:
                result, error = None, raised
            except BaseException as raised:
                # SystemExit and friends must not escape into the event loop.
                result, error = None, RuntimeError(f"run() raised {type(raised).__name__}")
                error.__cause__ = raised
            try:
                job.loop.call_soon_threadsafe(self._finish, job, result, error)
            except RuntimeError:
                return  # the loop is closed: the process is shutting down


def yield_on_wakeup() -> None:
    """Put the calling thread under SCHED_BATCH where Linux offers it; elsewhere, or where
    the policy is refused, the thread keeps the default and works the same, a bit dearer."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None:
        return
    try:
        os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError as error:
        log_event("sched_batch_refused", logging.DEBUG, error=str(error))
