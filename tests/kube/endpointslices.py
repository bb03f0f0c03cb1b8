"""The EndpointSlice controller: one slice per Service (per port mapping) of its pods.

Slices are labelled `kubernetes.io/service-name` and
`endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
Service, and list every selected pod that has an IP, with `conditions.ready` (Ready and
not terminating), `serving` (Ready) and `terminating`. A Service without pods keeps one
placeholder slice whose endpoints and ports are null, as the real controller leaves it.
"""

from __future__ import annotations

import logging
from typing import Any

from tests.kube import resources as kinds
from tests.kube.controllers import Controller
from tests.kube.deployments import pod_ready
from tests.kube.meta import clone
from tests.kube.selectors import from_label_selector_object

logger = logging.getLogger("tests.kube")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"

PortMapping = tuple[tuple[str, int, str], ...]  # (name, port, protocol) per service port


class EndpointSliceController(Controller):
    name = "endpointslice-controller"
    watches = (kinds.SERVICES, kinds.PODS, kinds.ENDPOINTSLICES)

    def reconcile(self) -> None:
        for service in list(self.store.items(kinds.SERVICES)):
            selector = (service.get("spec") or {}).get("selector")
            if selector and not service["metadata"].get("deletionTimestamp"):
                self._sync(service, selector)

    def _sync(self, service: dict[str, Any], selector: dict[str, str]) -> None:
        meta = service["metadata"]
        namespace = meta["namespace"]
        matcher = from_label_selector_object({"matchLabels": selector})
        publish_not_ready = bool(service["spec"].get("publishNotReadyAddresses"))
        groups: dict[PortMapping, list[dict[str, Any]]] = {}
        for pod in self.store.items(kinds.PODS, namespace):
            status = pod.get("status") or {}
            if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
                continue
            if not matcher.matches(pod["metadata"].get("labels")):
                continue
            mapping = _port_mapping(service, pod)
            if mapping is None:
                continue
            groups.setdefault(mapping, []).append(_endpoint(pod, publish_not_ready))

        existing = [
            s
            for s in self.store.items(kinds.ENDPOINTSLICES, namespace)
            if (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == meta["name"]
            and (s["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        ]
        desired: list[tuple[PortMapping | None, list[dict[str, Any]] | None]] = [
            (mapping, sorted(endpoints, key=lambda e: e["addresses"][0]))
            for mapping, endpoints in sorted(groups.items())
        ]
        if not desired:
            desired = [(None, None)]  # the placeholder
        unused = list(existing)
        for mapping, endpoints in desired:
            ports = (
                [{"name": n, "port": p, "protocol": proto} for n, p, proto in mapping]
                if mapping is not None
                else None
            )
            match = next(
                (s for s in unused if s.get("ports") == ports), unused[0] if unused else None
            )
            if match is not None:
                unused.remove(match)
                updated = clone(match)
                updated["endpoints"], updated["ports"] = endpoints, ports
                updated["metadata"]["labels"] = _labels(service)
                self.registry.write(kinds.ENDPOINTSLICES, updated)
            else:
                self._create(service, endpoints, ports)
        for stale in unused:
            self.registry.remove(kinds.ENDPOINTSLICES, namespace, stale["metadata"]["name"])

    def _create(
        self,
        service: dict[str, Any],
        endpoints: list[dict[str, Any]] | None,
        ports: list[dict[str, Any]] | None,
    ) -> None:
        meta = service["metadata"]
        body = {
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": _labels(service),
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        created = self.registry.create(kinds.ENDPOINTSLICES, meta["namespace"], body)
        logger.info(
            "event=endpointslice_created service=%s slice=%s",
            meta["name"],
            created["metadata"]["name"],
        )


def _labels(service: dict[str, Any]) -> dict[str, str]:
    labels = dict(service["metadata"].get("labels") or {})
    labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    if service["spec"].get("clusterIP") == "None":
        labels["service.kubernetes.io/headless"] = ""
    return labels


def _port_mapping(service: dict[str, Any], pod: dict[str, Any]) -> PortMapping | None:
    """Resolve each service port's targetPort on this pod; None if a named port is missing."""
    resolved = []
    for port in service["spec"].get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and not target.isdigit():
            number = _named_port(pod, target)
            if number is None:
                return None
        else:
            number = int(target)
        resolved.append((port.get("name") or "", number, port.get("protocol", "TCP")))
    return tuple(resolved)


def _named_port(pod: dict[str, Any], name: str) -> int | None:
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def _endpoint(pod: dict[str, Any], publish_not_ready: bool) -> dict[str, Any]:
    meta = pod["metadata"]
    terminating = bool(meta.get("deletionTimestamp"))
    serving = pod_ready(pod)
    endpoint: dict[str, Any] = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {
            "ready": publish_not_ready or (serving and not terminating),
            "serving": publish_not_ready or serving,
            "terminating": terminating,
        },
        "targetRef": {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        },
    }
    if pod["spec"].get("nodeName"):
        endpoint["nodeName"] = pod["spec"]["nodeName"]
    return endpoint
