"""Following the cluster: a local copy of one kind of object, kept current by a watch.

`Informer` is client-go's Reflector in miniature: a thread lists, then watches from the
list's resourceVersion; after a disconnect it watches again from the last resourceVersion
seen (bookmarks included); on 410 Gone it lists again and reports the difference. Events
reach the event loop in order through `call_soon_threadsafe`. `slice_endpoints` reads the
pod addresses an EndpointSlice lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes.watch.watch import iter_resp_lines

from autoscaler.backends.kube_api import REQUEST_TIMEOUT, Json, api_call, api_error, is_status
from autoscaler.backends.kube_manifests import PORT_NAME

logger = logging.getLogger("mlfe.autoscaler.kubernetes")

Change = Callable[[str, Json | None, Json | None], None]


class _Gone(Exception):
    """The watch's resourceVersion is older than the server keeps: list again."""


class Informer:
    """A local copy of one kind of object in a namespace, kept current by a watch.

    `objects` (by name) and the `on_change(name, old, new)` callbacks live on the event
    loop; `new` is None for a deletion, `old` None for a new object. A thread lists,
    then watches from the list's resourceVersion; a dropped connection is watched again
    from the last resourceVersion seen, bookmarks included, so no change is missed; a
    410 Gone means that version is compacted away, so it lists again and the loop side
    reports the difference between what it had and what the list holds.
    """

    def __init__(
        self,
        list_objects: Callable[..., Any],
        namespace: str,
        *,
        label_selector: str | None = None,
        on_change: Change | None = None,
        watch_timeout: int = 300,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
        name: str = "",
    ) -> None:
        self.list_objects = list_objects
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.name = name or getattr(list_objects, "__name__", "objects")
        self.objects: dict[str, Json] = {}
        self.lists = 0  # full lists applied: 1 + re-lists after 410 Gone
        self.watches = 0  # watch requests made
        self._on_change = on_change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None  # the live watch response, shut down by stop()
        self._response_lock = threading.Lock()
        self._synced: asyncio.Future[None] | None = None
        self._resource_version: str | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start watching; call on the event loop. `synced()` tells when the first list is in."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._synced = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.name}", daemon=True)
        self._thread.start()

    async def synced(self) -> None:
        """Resolves once the first list has been applied to `objects`."""
        assert self._synced is not None, "start() the informer first"
        await asyncio.shield(self._synced)

    async def stop(self) -> None:
        self._stopping.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the thread's read at once
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.retry_delay
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._list()
                self._watch()
                delay = self.retry_delay
            except _Gone:
                logger.info("event=watch-expired kind=%s action=relist", self.name)
                self._resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    break
                if is_status(error, 410):
                    logger.info("event=watch-expired kind=%s action=relist", self.name)
                    self._resource_version = None
                    continue
                # One cut connection is routine (load balancers, API server restarts);
                # failing again is worth a warning.
                log = logger.info if delay == self.retry_delay else logger.warning
                log(
                    "event=watch-error kind=%s retry_in=%.1fs error=%r",
                    self.name,
                    delay,
                    api_error(error),
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, self.max_retry_delay)

    def _list(self) -> None:
        body = api_call(self.list_objects, self.namespace, label_selector=self.label_selector)
        items = body.get("items") or []
        self._resource_version = body["metadata"]["resourceVersion"]
        self._deliver(self._apply_list, items)

    def _watch(self) -> None:
        # Server-side timeouts vary a little, so many watchers do not reconnect together.
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.2))
        self.watches += 1
        response = self.list_objects(
            self.namespace,
            label_selector=self.label_selector,
            watch=True,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            # A silent connection longer than this is dead: reconnect.
            _request_timeout=(REQUEST_TIMEOUT[0], timeout + 30),
        )
        with self._response_lock:
            self._response = response
        try:
            if self._stopping.is_set():
                return
            for line in iter_resp_lines(response):
                if self._stopping.is_set():
                    return
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._deliver(self._apply_event, kind, obj)
                if version:
                    self._resource_version = version
        finally:
            with self._response_lock:
                self._response = None
            with contextlib.suppress(Exception):
                response.close()
                response.release_conn()

    def _deliver(self, apply: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(apply, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stopping.set()

    # -- the event loop side ---------------------------------------------------------------

    def _apply_list(self, items: list[Json]) -> None:
        self.lists += 1
        fresh = {item["metadata"]["name"]: item for item in items}
        for name in [n for n in self.objects if n not in fresh]:
            self._set(name, None)
        for name, item in fresh.items():
            old = self.objects.get(name)
            if old is None or _version(old) != _version(item):
                self._set(name, item)
        if self._synced is not None and not self._synced.done():
            self._synced.set_result(None)

    def _apply_event(self, kind: str, obj: Json) -> None:
        name = obj["metadata"]["name"]
        self._set(name, None if kind == "DELETED" else obj)

    def _set(self, name: str, new: Json | None) -> None:
        old = self.objects.pop(name, None)
        if new is not None:
            self.objects[name] = new
        elif old is None:
            return
        if self._on_change is None:
            return
        try:
            self._on_change(name, old, new)
        except Exception:
            logger.exception("event=watch-handler-error kind=%s name=%s", self.name, name)


def _version(obj: Json) -> str | None:
    metadata = obj.get("metadata")
    return metadata.get("resourceVersion") if isinstance(metadata, dict) else None


# -- endpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One pod as an EndpointSlice lists it."""

    pod: str
    address: str  # "ip:port"
    ready: bool
    serving: bool


def slice_endpoints(endpoint_slice: Json, port_name: str | None = PORT_NAME) -> list[Endpoint]:
    """The pod endpoints of an EndpointSlice, with the port named `port_name`."""
    if endpoint_slice.get("addressType") not in (None, "IPv4", "IPv6"):
        return []
    port = None
    for entry in endpoint_slice.get("ports") or []:
        if port_name is None or entry.get("name") == port_name:
            port = entry.get("port")
            break
    if port is None:
        return []
    found = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        target = endpoint.get("targetRef") or {}
        if not addresses or target.get("kind", "Pod") != "Pod" or not target.get("name"):
            continue
        conditions = endpoint.get("conditions") or {}
        # Unknown (null) readiness means ready, as the EndpointSlice API defines it.
        ready = conditions.get("ready") is not False
        serving = conditions.get("serving", ready) is not False
        if conditions.get("terminating") is True:
            ready = False
        ip = addresses[0]
        host = f"[{ip}]" if ":" in ip else ip
        found.append(Endpoint(target["name"], f"{host}:{port}", ready, serving))
    return found
