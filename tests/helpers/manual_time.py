"""An event loop whose clock moves only when the test moves it."""

from __future__ import annotations

import asyncio


class ManualTimeLoop(asyncio.SelectorEventLoop):
    """`time()` is `now`, set by the test; errors raised in loop callbacks are kept in
    `errors`, since they never reach the test by themselves."""

    def __init__(self, now: float) -> None:
        super().__init__()
        self.now = now
        self.errors: list[dict[str, object]] = []
        self.set_exception_handler(lambda _, context: self.errors.append(context))

    def time(self) -> float:
        return self.now
