"""The scheduler: binds pending pods to the one node, unless a fault says they do not fit.

A pod that cannot be placed stays Pending with condition PodScheduled=False, reason
Unschedulable, and a Warning event FailedScheduling from default-scheduler, retried
every few seconds (the event's count grows, as on a cluster). So does a pod whose
PersistentVolumeClaim the cluster does not know.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from tests.kube import resources as kinds
from tests.kube.controllers import Controller
from tests.kube.events import EventRecorder
from tests.kube.faults import UNSCHEDULABLE, Faults
from tests.kube.meta import clone, now_time
from tests.kube.registry import Registry

logger = logging.getLogger("tests.kube")

RETRY_S = 5.0


class Scheduler(Controller):
    name = "default-scheduler"
    watches = (kinds.PODS,)

    def __init__(
        self, registry: Registry, faults: Faults, node_name: str, volume_claims: Mapping[str, str]
    ) -> None:
        super().__init__(registry)
        self._faults = faults
        self._node_name = node_name
        self._volume_claims = volume_claims
        self._events = EventRecorder(registry, "default-scheduler")
        self._last_attempt: dict[str, float] = {}

    def reconcile(self) -> None:
        pending = set()
        for pod in list(self.store.items(kinds.PODS)):
            spec = pod["spec"]
            if spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            uid = pod["metadata"]["uid"]
            pending.add(uid)
            reason = self._cannot_place(pod)
            if reason is None:
                self._bind(clone(pod))
                continue
            now = time.monotonic()
            if now - self._last_attempt.get(uid, -RETRY_S) >= RETRY_S:
                self._last_attempt[uid] = now
                self._mark_unschedulable(pod, reason)
        for uid in set(self._last_attempt) - pending:
            del self._last_attempt[uid]

    def _cannot_place(self, pod: dict[str, Any]) -> str | None:
        fault = self._faults.find(UNSCHEDULABLE, pod)
        if fault is not None:
            return fault.message
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in self._volume_claims:
                return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.'
        return None

    def _mark_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        status = clone(pod.get("status") or {})
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": now_time(),
            "reason": "Unschedulable",
            "message": message,
        }
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        old = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        if old is not None and old.get("status") == "False" and old.get("message") == message:
            condition["lastTransitionTime"] = old["lastTransitionTime"]
        status["conditions"] = [*conditions, condition]
        status["phase"] = "Pending"
        self.registry.write_status(kinds.PODS, meta["namespace"], meta["name"], status)
        self._events.record(kinds.PODS, pod, "Warning", "FailedScheduling", message)
        logger.info("event=failed_scheduling pod=%s/%s", meta["namespace"], meta["name"])

    def _bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        pod["spec"]["nodeName"] = self._node_name
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_time(),
            }
        )
        status["conditions"] = conditions
        if self.registry.write(kinds.PODS, pod) is None:
            return
        self._events.record(
            kinds.PODS,
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {self._node_name}",
        )
