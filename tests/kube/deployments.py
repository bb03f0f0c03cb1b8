"""The Deployment controller, without ReplicaSets: pods are owned by the Deployment.

What a client can observe matches a cluster: pods `<deployment>-<random5>` labelled with
the template's labels plus `pod-template-hash`; scaling through spec.replicas (or the
scale subresource); rolling updates that respect maxSurge / maxUnavailable (new pods
first, old ones removed as new ones become available); Recreate; and a status with
replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
observedGeneration and the Available / Progressing (/ ReplicaFailure) conditions.
Zero counts are omitted, as the real API's `omitempty` does.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

import orjson

from tests.kube import resources as kinds
from tests.kube.controllers import Controller, controller_of
from tests.kube.meta import clone, now_time, parse_time
from tests.kube.registry import Registry
from tests.kube.status import ApiError

logger = logging.getLogger("tests.kube")

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).digest()
    return "".join(_HASH_ALPHABET[byte % len(_HASH_ALPHABET)] for byte in digest[:10])


def resolve_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def pod_ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _ready_since(pod: dict[str, Any]) -> float | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            stamp = condition.get("lastTransitionTime")
            return parse_time(stamp).timestamp() if stamp else 0.0
    return None


def _deletion_rank(pod: dict[str, Any]) -> tuple[Any, ...]:
    """Which pods go first when scaling down: unscheduled, pending, not ready, newest."""
    status = pod.get("status") or {}
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
    created = pod["metadata"].get("creationTimestamp", "")
    return (
        bool(pod["spec"].get("nodeName")),
        phase_rank,
        pod_ready(pod),
        -restarts,
        _negate(created),
    )


def _negate(text: str) -> tuple[int, ...]:
    return tuple(-ord(char) for char in text)


class DeploymentController(Controller):
    name = "deployment-controller"
    watches = (kinds.DEPLOYMENTS, kinds.PODS)

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        # Per deployment uid: the last time it made progress, and its rollout revisions.
        self._progress: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._revisions: dict[str, dict[str, int]] = {}

    def reconcile(self) -> None:
        alive = set()
        for deployment in list(self.store.items(kinds.DEPLOYMENTS)):
            alive.add(deployment["metadata"]["uid"])
            if deployment["metadata"].get("deletionTimestamp"):
                continue
            self._sync(clone(deployment))
        for uid in set(self._progress) - alive:
            del self._progress[uid]
        for uid in set(self._revisions) - alive:
            del self._revisions[uid]

    def _owned_pods(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        uid = deployment["metadata"]["uid"]
        namespace = deployment["metadata"]["namespace"]
        owned = []
        for pod in self.store.items(kinds.PODS, namespace):
            reference = controller_of(pod)
            if reference is not None and reference.get("uid") == uid:
                owned.append(pod)
        return owned

    def _sync(self, deployment: dict[str, Any]) -> None:
        spec = deployment["spec"]
        desired = int(spec.get("replicas", 1))
        current_hash = template_hash(spec["template"])
        self._record_revision(deployment, current_hash)
        failure = None
        try:
            self._rollout(deployment, desired, current_hash)
        except ApiError as error:
            failure = error.message
            logger.warning(
                "event=pod_create_failed deployment=%s reason=%s",
                deployment["metadata"]["name"],
                error.message,
            )
        self._update_status(deployment, desired, current_hash, failure)

    def _record_revision(self, deployment: dict[str, Any], current_hash: str) -> None:
        revisions = self._revisions.setdefault(deployment["metadata"]["uid"], {})
        if current_hash not in revisions:
            revisions[current_hash] = max(revisions.values(), default=0) + 1
        revision = str(revisions[current_hash])
        annotations = deployment["metadata"].get("annotations") or {}
        if annotations.get(REVISION_ANNOTATION) != revision:
            annotations[REVISION_ANNOTATION] = revision
            deployment["metadata"]["annotations"] = annotations
            written = self.registry.write(kinds.DEPLOYMENTS, deployment)
            if written is not None:
                deployment["metadata"] = written["metadata"]

    def _rollout(self, deployment: dict[str, Any], desired: int, current_hash: str) -> None:
        pods = self._owned_pods(deployment)
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        new = [
            p
            for p in active
            if (p["metadata"].get("labels") or {}).get("pod-template-hash") == current_hash
        ]
        old = [p for p in active if p not in new]
        strategy = deployment["spec"].get("strategy") or {}

        if strategy.get("type") == "Recreate":
            if old:
                self._delete(old)
                return
            if any(p not in active for p in pods):
                return  # wait until the old pods are gone
            self._scale(deployment, new, desired, current_hash)
            return

        if not old:
            self._scale(deployment, new, desired, current_hash)
            return
        rolling = strategy.get("rollingUpdate") or {}
        surge = resolve_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = resolve_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        # Scale up the new template within the surge budget.
        room = min(desired - len(new), desired + surge - len(active))
        for _ in range(max(room, 0)):
            self._create_pod(deployment, current_hash)
        if len(new) > desired:
            self._delete(sorted(new, key=_deletion_rank)[: len(new) - desired])
        # Scale down the old template without going under minimum availability.
        min_available = desired - unavailable
        new_unready = sum(1 for p in new if not pod_ready(p))
        cleanup_budget = len(active) - min_available - new_unready
        old_unready = [p for p in old if not pod_ready(p)]
        cleaned = old_unready[: max(cleanup_budget, 0)]
        self._delete(cleaned)
        remaining_old = [p for p in old if p not in cleaned]
        available = sum(1 for p in new if pod_ready(p)) + sum(
            1 for p in remaining_old if pod_ready(p)
        )
        removable = available - min_available
        if removable > 0:
            ready_old = sorted((p for p in remaining_old if pod_ready(p)), key=_deletion_rank)
            self._delete(ready_old[:removable])

    def _scale(
        self,
        deployment: dict[str, Any],
        pods: list[dict[str, Any]],
        desired: int,
        current_hash: str,
    ) -> None:
        if len(pods) < desired:
            for _ in range(desired - len(pods)):
                self._create_pod(deployment, current_hash)
        elif len(pods) > desired:
            self._delete(sorted(pods, key=_deletion_rank)[: len(pods) - desired])

    def _create_pod(self, deployment: dict[str, Any], current_hash: str) -> None:
        meta = deployment["metadata"]
        template = clone(deployment["spec"]["template"])
        template_meta = template.get("metadata") or {}
        labels = dict(template_meta.get("labels") or {})
        labels["pod-template-hash"] = current_hash
        pod_meta: dict[str, Any] = {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = dict(template_meta["annotations"])
        pod = self.registry.create(
            kinds.PODS, meta["namespace"], {"metadata": pod_meta, "spec": template["spec"]}
        )
        logger.info("event=pod_created deployment=%s pod=%s", meta["name"], pod["metadata"]["name"])

    def _delete(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            try:
                self.registry.delete(kinds.PODS, namespace, name, {})
            except ApiError:
                continue

    def _update_status(
        self, deployment: dict[str, Any], desired: int, current_hash: str, failure: str | None
    ) -> None:
        meta = deployment["metadata"]
        pods = [
            p for p in self._owned_pods(deployment) if not p["metadata"].get("deletionTimestamp")
        ]
        new = [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get("pod-template-hash") == current_hash
        ]
        ready = sum(1 for p in pods if pod_ready(p))
        min_ready_s = int(deployment["spec"].get("minReadySeconds") or 0)
        now = time.time()
        available = 0
        for pod in pods:
            since = _ready_since(pod)
            if since is not None and now - since >= min_ready_s:
                available += 1
        rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = resolve_percent(rolling.get("maxUnavailable", 0), desired, round_up=False)
        old_status = deployment.get("status") or {}
        status: dict[str, Any] = {"observedGeneration": meta.get("generation", 1)}
        counts = {
            "replicas": len(pods),
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, max(desired, len(pods)) - available),
        }
        status.update({key: value for key, value in counts.items() if value})

        conditions = {c["type"]: c for c in old_status.get("conditions") or []}
        rs_name = f"{meta['name']}-{current_hash}"
        if available >= desired - max_unavailable:
            available_condition = (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            available_condition = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        progress_key = (len(new), sum(1 for p in new if pod_ready(p)), len(pods))
        last_key, last_progress = self._progress.get(meta["uid"], ((-1, -1, -1), now))
        progressed = progress_key != last_key
        if progressed:
            last_progress = now
        self._progress[meta["uid"]] = (progress_key, last_progress)
        deadline = int(deployment["spec"].get("progressDeadlineSeconds") or 600)
        complete = len(new) == desired and len(pods) == desired and available >= desired
        if complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif now - last_progress > deadline:
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        elif "Progressing" not in conditions:
            progressing = ("True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        wanted = [
            ("Available", available_condition, False),
            ("Progressing", progressing, progressed),
        ]
        if failure:
            wanted.append(("ReplicaFailure", ("True", "FailedCreate", failure), False))
        status["conditions"] = [
            _condition(kind, values, conditions.get(kind), touched)
            for kind, values, touched in wanted
        ]
        self.registry.write_status(kinds.DEPLOYMENTS, meta["namespace"], meta["name"], status)


def _condition(
    kind: str, values: tuple[str, str, str], old: dict[str, Any] | None, touched: bool
) -> dict[str, Any]:
    status, reason, message = values
    now = now_time()
    unchanged = (
        old is not None and (old.get("status"), old.get("reason"), old.get("message")) == values
    )
    transition = (
        old["lastTransitionTime"] if old is not None and old.get("status") == status else now
    )
    update = old["lastUpdateTime"] if unchanged and not touched and old is not None else now
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }
