"""The reconcile loop every in-process component runs, and the garbage collector.

Components run on the cluster's event loop and reconcile the whole store whenever a
write touches a kind they care about, and at least every `resync_s` (for time-driven
work like backoffs and deadlines). A pass that finds nothing to change writes nothing,
so a pass triggered by its own writes converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tests.kube import resources as kinds
from tests.kube.meta import clone
from tests.kube.registry import FOREGROUND_FINALIZER, Registry
from tests.kube.resources import ResourceType
from tests.kube.status import ApiError
from tests.kube.store import Change

logger = logging.getLogger("tests.kube")


class Controller:
    name = "controller"
    watches: tuple[ResourceType, ...] = ()
    resync_s = 1.0

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.store = registry.store
        self._wake = asyncio.Event()

    def reconcile(self) -> None:
        raise NotImplementedError

    def _on_change(self, change: Change) -> None:
        if not self.watches or change.resource in self.watches:
            self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        unsubscribe = self.store.subscribe(self._on_change)
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.resync_s)
                self._wake.clear()
                # Let a burst of writes land before looking at the result.
                await asyncio.sleep(0)
                try:
                    self.reconcile()
                except Exception:
                    logger.exception("event=reconcile_failed controller=%s", self.name)
        finally:
            unsubscribe()


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for reference in obj["metadata"].get("ownerReferences") or []:
        if reference.get("controller"):
            return reference
    return None


class GarbageCollector(Controller):
    """Deletes dependents whose owners are gone, and completes foreground deletion."""

    name = "garbage-collector"

    def reconcile(self) -> None:
        owners: dict[str, dict[str, Any]] = {}
        dependents: dict[str, int] = {}
        everything: list[tuple[ResourceType, dict[str, Any]]] = []
        for resource in kinds.ALL:
            for obj in self.store.items(resource):
                owners[obj["metadata"]["uid"]] = obj
                everything.append((resource, obj))
                for reference in obj["metadata"].get("ownerReferences") or []:
                    dependents[reference["uid"]] = dependents.get(reference["uid"], 0) + 1
        for resource, obj in everything:
            self._collect(resource, obj, owners)
        for resource, obj in everything:
            meta = obj["metadata"]
            if FOREGROUND_FINALIZER in (meta.get("finalizers") or []) and not dependents.get(
                meta["uid"]
            ):
                finished = clone(obj)
                finished["metadata"]["finalizers"] = [
                    f for f in meta["finalizers"] if f != FOREGROUND_FINALIZER
                ]
                if not finished["metadata"]["finalizers"]:
                    del finished["metadata"]["finalizers"]
                self.registry.write(resource, finished)

    def _collect(
        self, resource: ResourceType, obj: dict[str, Any], owners: dict[str, dict[str, Any]]
    ) -> None:
        meta = obj["metadata"]
        references = meta.get("ownerReferences") or []
        if not references or meta.get("deletionTimestamp"):
            return
        live = [ref for ref in references if ref["uid"] in owners]
        owner_deleting = any(
            FOREGROUND_FINALIZER in (owners[ref["uid"]]["metadata"].get("finalizers") or [])
            and owners[ref["uid"]]["metadata"].get("deletionTimestamp")
            for ref in live
        )
        namespace, name = meta.get("namespace") or "", meta["name"]
        if not live or owner_deleting:
            try:
                self.registry.delete(resource, namespace, name, {"propagationPolicy": "Background"})
                logger.info(
                    "event=garbage_collected kind=%s namespace=%s name=%s",
                    resource.kind,
                    namespace,
                    name,
                )
            except ApiError:
                pass  # already gone
        elif len(live) != len(references):
            trimmed = clone(obj)
            trimmed["metadata"]["ownerReferences"] = live
            self.registry.write(resource, trimmed)
