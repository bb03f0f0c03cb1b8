"""The defaults kube-apiserver fills in, so objects read back as they would on a cluster.

A client that compares the spec it sent with the spec it reads (to decide whether an
update is needed) sees the same extra fields here as on a real cluster: probe timeouts,
`imagePullPolicy`, `terminationGracePeriodSeconds`, the rolling-update strategy,
canonical quantities, and so on.
"""

from __future__ import annotations

import contextlib
from collections.abc import MutableMapping
from typing import Any

from tests.kube import quantity


def _probe(probe: MutableMapping[str, Any]) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if "httpGet" in probe and isinstance(probe["httpGet"], MutableMapping):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _container(container: MutableMapping[str, Any]) -> None:
    image = str(container.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    untagged_or_latest = ":" not in tag or tag.endswith(":latest")
    if "@" not in image:
        container.setdefault("imagePullPolicy", "Always" if untagged_or_latest else "IfNotPresent")
    else:
        container.setdefault("imagePullPolicy", "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for variable in container.get("env") or []:
        field_ref = (variable.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            field_ref.setdefault("apiVersion", "v1")
    for probe_field in ("readinessProbe", "livenessProbe", "startupProbe"):
        if isinstance(container.get(probe_field), MutableMapping):
            _probe(container[probe_field])
    resources = container["resources"]
    for section in ("requests", "limits"):
        values = resources.get(section)
        if isinstance(values, MutableMapping):
            for name, value in list(values.items()):
                # An unparsable quantity is left for validation to report.
                with contextlib.suppress(quantity.QuantityError):
                    values[name] = quantity.canonical(value)
    limits = resources.get("limits")
    if isinstance(limits, MutableMapping) and limits:
        # Limits without requests: the request defaults to the limit.
        requests = resources.setdefault("requests", {})
        for name, value in limits.items():
            requests.setdefault(name, value)


def pod_spec(spec: MutableMapping[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, MutableMapping):
                _container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), MutableMapping):
                volume[source].setdefault("defaultMode", 420)
        if isinstance(volume.get("hostPath"), MutableMapping):
            volume["hostPath"].setdefault("type", "")


def pod(obj: MutableMapping[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault(
        "tolerations",
        [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    )


def deployment(obj: MutableMapping[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def service(obj: MutableMapping[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def secret(obj: MutableMapping[str, Any]) -> None:
    obj.setdefault("type", "Opaque")


def namespace(obj: MutableMapping[str, Any]) -> None:
    meta = obj.setdefault("metadata", {})
    labels = meta.get("labels") or {}
    labels["kubernetes.io/metadata.name"] = meta.get("name", "")
    meta["labels"] = labels
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})


def none(obj: MutableMapping[str, Any]) -> None:
    pass
