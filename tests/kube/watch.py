"""Watch streams: `?watch=1`, as kube-apiserver serves them.

The response is 200 with chunked JSON lines `{"type": ..., "object": ...}`:
- without resourceVersion (or "0"): a synthetic ADDED per current object, then changes;
- with resourceVersion=N: every change after N from the history; if N is older than the
  history the stream opens and carries one ERROR event with a Status 410 Expired
  ("too old resource version"), then ends, which is what a real server does;
- with a label or field selector, an object that stops matching arrives as DELETED and
  one that starts matching as ADDED;
- with allowWatchBookmarks=true, BOOKMARK events carrying only the current
  resourceVersion when the stream is idle; with sendInitialEvents=true the initial
  ADDED events end with a BOOKMARK annotated `k8s.io/initial-events-end`;
- timeoutSeconds ends the stream cleanly.
A test can end every open stream cleanly or cut its connection (drop_watches).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tests.kube.resources import ResourceType
from tests.kube.selectors import FieldSelector, LabelSelector
from tests.kube.status import ApiError
from tests.kube.store import Change, Store

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

END = "end"
DROP = "drop"
_DISCONNECTED = "disconnected"
DEFAULT_TIMEOUT_S = 1800.0


class WatchDropped(Exception):
    """Raised inside the ASGI app so the server closes the connection mid-stream."""


class Watcher:
    def __init__(
        self,
        resource: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | str] = asyncio.Queue()

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and (meta.get("namespace") or "") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(
            obj, self.resource.fields
        )

    def translate(self, change: Change) -> tuple[str, dict[str, Any]] | None:
        if change.resource is not self.resource:
            return None
        now, before = self.matches(change.obj), self.matches(change.old)
        if change.type == "MODIFIED":
            if now and before:
                return "MODIFIED", change.obj
            if now:
                return "ADDED", change.obj
            if before:
                return "DELETED", change.obj
            return None
        if change.type == "DELETED":
            return ("DELETED", change.obj) if before or now else None
        return (change.type, change.obj) if now else None

    def offer(self, change: Change) -> None:
        event = self.translate(change)
        if event is not None:
            self.queue.put_nowait(event)

    def control(self, signal: str) -> None:
        self.queue.put_nowait(signal)


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "object": obj}) + b"\n"


def _bookmark(resource: ResourceType, revision: int, initial_end: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta}


class WatchHub:
    """Every open watch, so a test can end or cut them all."""

    def __init__(self, store: Store, bookmark_interval_s: float) -> None:
        self.store = store
        self.bookmark_interval_s = bookmark_interval_s
        self.watchers: set[Watcher] = set()

    def signal_all(self, signal: str) -> int:
        for watcher in self.watchers:
            watcher.control(signal)
        return len(self.watchers)

    async def serve(
        self,
        send: Send,
        receive: Receive,
        watcher: Watcher,
        resource_version: str | None,
        bookmarks: bool,
        send_initial_events: bool,
        timeout_s: float | None,
    ) -> None:
        store = self.store
        initial: list[tuple[str, dict[str, Any]]] = []
        error: ApiError | None = None
        if send_initial_events or resource_version in (None, "", "0"):
            initial = [
                ("ADDED", obj)
                for obj in store.items(watcher.resource, watcher.namespace)
                if watcher.matches(obj)
            ]
        else:
            try:
                backlog = store.changes_after(int(str(resource_version)))
            except ApiError as expired:
                error = expired
                backlog = []
            initial = [event for event in map(watcher.translate, backlog) if event is not None]
        start_revision = store.revision
        # Registered in the same step as the backlog was read: no change can fall between.
        unsubscribe = store.subscribe(watcher.offer)
        self.watchers.add(watcher)
        disconnect = asyncio.ensure_future(_wait_disconnect(receive, watcher))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"cache-control", b"no-cache, private"),
                    ],
                }
            )
            if error is not None:
                await send(
                    {
                        "type": "http.response.body",
                        "body": _line("ERROR", error.status()),
                        "more_body": True,
                    }
                )
            else:
                for event_type, obj in initial:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _line(event_type, obj),
                            "more_body": True,
                        }
                    )
                if send_initial_events and bookmarks:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _line(
                                "BOOKMARK", _bookmark(watcher.resource, start_revision, True)
                            ),
                            "more_body": True,
                        }
                    )
                await self._pump(send, watcher, bookmarks, timeout_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnect.cancel()
            self.watchers.discard(watcher)
            unsubscribe()

    async def _pump(
        self, send: Send, watcher: Watcher, bookmarks: bool, timeout_s: float | None
    ) -> None:
        deadline = time.monotonic() + (timeout_s if timeout_s else DEFAULT_TIMEOUT_S)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wait = min(remaining, self.bookmark_interval_s) if bookmarks else remaining
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except asyncio.TimeoutError:
                if bookmarks and time.monotonic() < deadline:
                    bookmark = _bookmark(watcher.resource, self.store.revision)
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _line("BOOKMARK", bookmark),
                            "more_body": True,
                        }
                    )
                continue
            if item in (END, _DISCONNECTED):
                return
            if item == DROP:
                raise WatchDropped()
            assert isinstance(item, tuple)
            await send({"type": "http.response.body", "body": _line(*item), "more_body": True})


async def _wait_disconnect(receive: Receive, watcher: Watcher) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            watcher.control(_DISCONNECTED)
            return
