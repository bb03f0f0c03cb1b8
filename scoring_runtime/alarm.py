"""One event-loop timer for a deadline that keeps moving.

Per-request deadlines (a keep-alive timeout, a scoring timeout, a queue's maximum wait)
mostly move later, request after request. Making and cancelling a loop timer for each
costs about 1 µs in uvloop; an `Alarm` is moved earlier at once but left alone when the
deadline moves later, and its callback, when it fires, looks at the deadline now due and
sets the alarm again if it has not come yet. A busy connection or queue then pays for one
timer per firing instead of one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Alarm:
    """Calls `callback` at or after the earliest time given to `set()` since it last rang."""

    __slots__ = ("_callback", "_handle", "loop", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        self.loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self.when = 0.0  # loop time it rings at, while set

    @property
    def is_set(self) -> bool:
        return self._handle is not None

    def set(self, when: float) -> None:
        """Ring by `when` (loop time): a later time than the one set is left to the callback."""
        if self._handle is None or when < self.when:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self.loop.call_at(when, self._ring)
            self.when = when

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ring(self) -> None:
        self._handle = None
        self._callback()
