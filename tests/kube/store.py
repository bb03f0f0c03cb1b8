"""The object store: what etcd is to kube-apiserver.

One global, monotonic revision counter; every write bumps it and stamps the object's
`metadata.resourceVersion`. Each write is also appended to a bounded history of changes
so a watch can start from any revision still in it; a watch from before the history
(after it was trimmed or `compact()`ed) gets 410 Expired, as on a cluster whose etcd
compacted. Everything runs on the cluster's event loop thread, so there is no locking.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.kube.meta import clone, object_key
from tests.kube.resources import ResourceType
from tests.kube.status import expired

# Clusters start well above 1, and so do we: code that treats small numbers specially
# (or compares resourceVersions as strings) fails here as it would there.
FIRST_REVISION = 1000


@dataclass(frozen=True)
class Change:
    """One write, as a watch reports it. `old` is the state before (None when added)."""

    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None


Listener = Callable[[Change], None]


class Store:
    def __init__(self, history_limit: int = 2000) -> None:
        self.revision = FIRST_REVISION
        # The oldest revision a watch may start from: every change after it is in history.
        self.floor = FIRST_REVISION
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._types: dict[str, ResourceType] = {}
        self._listeners: list[Listener] = []

    # -- reads -------------------------------------------------------------------------

    def get(self, resource: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._objects.get(resource.key, {}).get((namespace, name))
        return clone(obj) if obj is not None else None

    def peek(self, resource: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself, for read-only use by in-process controllers."""
        return self._objects.get(resource.key, {}).get((namespace, name))

    def items(
        self, resource: ResourceType, namespace: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stored objects in key order (namespace, name), as etcd lists them; read-only."""
        table = self._objects.get(resource.key, {})
        for key in sorted(table):
            if namespace is None or key[0] == namespace:
                yield table[key]

    def find_uid(self, uid: str) -> tuple[ResourceType, dict[str, Any]] | None:
        for key, table in self._objects.items():
            for obj in table.values():
                if obj["metadata"].get("uid") == uid:
                    return self._types[key], obj
        return None

    # -- writes ------------------------------------------------------------------------

    def create(self, resource: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        stored = self._stamp(resource, obj)
        self._objects.setdefault(resource.key, {})[object_key(stored)] = stored
        self._record(Change(self.revision, "ADDED", resource, stored, None))
        return clone(stored)

    def update(self, resource: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        table = self._objects.setdefault(resource.key, {})
        key = object_key(obj)
        old = table[key]
        stored = self._stamp(resource, obj)
        table[key] = stored
        self._record(Change(self.revision, "MODIFIED", resource, stored, old))
        return clone(stored)

    def delete(self, resource: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        old = self._objects[resource.key].pop((namespace, name))
        # The DELETED event carries the revision of the deletion, as etcd's does.
        stored = self._stamp(resource, old)
        self._record(Change(self.revision, "DELETED", resource, stored, old))
        return clone(stored)

    def _stamp(self, resource: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        self._types[resource.key] = resource
        body = clone(obj)
        stored: dict[str, Any] = {"kind": resource.kind, "apiVersion": resource.api_version}
        stored.update((k, v) for k, v in body.items() if k not in stored)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        return stored

    def _record(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self.floor = self._history.popleft().revision
        for listener in list(self._listeners):
            listener(change)

    # -- history -----------------------------------------------------------------------

    def changes_after(self, revision: int) -> list[Change]:
        """Every change after `revision`; 410 Expired if some are no longer kept."""
        if revision < self.floor:
            raise expired(f"too old resource version: {revision} ({self.floor})")
        return [change for change in self._history if change.revision > revision]

    def compact(self, revision: int | None = None) -> int:
        """Forget history up to `revision` (default: now); older watches get 410."""
        target = self.revision if revision is None else min(revision, self.revision)
        while self._history and self._history[0].revision <= target:
            self._history.popleft()
        self.floor = max(self.floor, target)
        return self.floor

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` synchronously on every write; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
