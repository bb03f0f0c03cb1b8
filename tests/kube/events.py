"""core/v1 Events as the cluster's components record them.

Like client-go's event recorder, a repeat of the same reason and message about the same
object bumps `count` and `lastTimestamp` on the existing Event instead of adding one, so
a pod that fails scheduling every second has one FailedScheduling event, not hundreds.
"""

from __future__ import annotations

import time
from typing import Any

from tests.kube import resources as kinds
from tests.kube.meta import clone, new_uid, now_time
from tests.kube.registry import Registry
from tests.kube.resources import ResourceType


class EventRecorder:
    def __init__(self, registry: Registry, component: str, host: str = "") -> None:
        self._registry = registry
        self._component = component
        self._host = host
        self._seen: dict[tuple[str, str, str], tuple[str, str]] = {}

    def record(
        self,
        resource: ResourceType,
        involved: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        store = self._registry.store
        if key in self._seen:
            existing = store.peek(kinds.EVENTS, *self._seen[key])
            if existing is not None:
                updated = clone(existing)
                updated["count"] = int(existing.get("count", 1)) + 1
                updated["lastTimestamp"] = now_time()
                self._registry.write(kinds.EVENTS, updated)
                return
        name = f"{meta['name']}.{time.time_ns():x}"
        involved_ref = {
            "kind": resource.kind,
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": resource.api_version,
            "resourceVersion": meta.get("resourceVersion"),
        }
        if meta.get("namespace"):
            involved_ref["namespace"] = meta["namespace"]
        event = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": new_uid(),
                "creationTimestamp": now_time(),
            },
            "involvedObject": involved_ref,
            "reason": reason,
            "message": message,
            "source": {
                "component": self._component,
                **({"host": self._host} if self._host else {}),
            },
            "firstTimestamp": now_time(),
            "lastTimestamp": now_time(),
            "count": 1,
            "type": event_type,
            "reportingComponent": self._component,
            "reportingInstance": self._host,
        }
        if store.peek(kinds.NAMESPACES, "", namespace) is None:
            return  # the namespace went away; a real recorder would fail the same way
        store.create(kinds.EVENTS, event)
        self._seen[key] = (namespace, name)
