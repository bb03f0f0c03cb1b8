"""The resource types this API server serves, and what differs between them.

Anything not listed here answers 404, as a cluster without that API would; verbs a type
does not list answer 405 MethodNotAllowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from tests.kube import defaults, validation
from tests.kube.selectors import (
    COMMON_FIELDS,
    EVENT_FIELDS,
    NAMESPACE_FIELDS,
    POD_FIELDS,
    SECRET_FIELDS,
    FieldGetter,
)
from tests.kube.status import FieldError

Defaulter = Callable[[MutableMapping[str, Any]], None]
Validator = Callable[[Mapping[str, Any], Mapping[str, Any] | None], list[FieldError]]

ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
READ_VERBS = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    defaulter: Defaulter
    validator: Validator
    fields: Mapping[str, FieldGetter]
    subresources: frozenset[str] = frozenset()
    # With a status subresource, writes to the object keep the stored status and
    # writes to /status keep the stored spec.
    has_status: bool = False
    # Pods and Services answer DELETE with the object; the rest with a Status.
    returns_deleted_object: bool = False
    # metadata.generation counts spec changes (observedGeneration is compared with it).
    has_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


NAMESPACES = ResourceType(
    "",
    "v1",
    "namespaces",
    "Namespace",
    False,
    frozenset({"get", "list", "watch", "create"}),
    defaults.namespace,
    validation.namespace,
    NAMESPACE_FIELDS,
    has_status=True,
)
CONFIGMAPS = ResourceType(
    "",
    "v1",
    "configmaps",
    "ConfigMap",
    True,
    ALL_VERBS,
    defaults.none,
    validation.configmap,
    COMMON_FIELDS,
)
SECRETS = ResourceType(
    "",
    "v1",
    "secrets",
    "Secret",
    True,
    ALL_VERBS,
    defaults.secret,
    validation.secret,
    SECRET_FIELDS,
)
SERVICES = ResourceType(
    "",
    "v1",
    "services",
    "Service",
    True,
    ALL_VERBS,
    defaults.service,
    validation.service,
    COMMON_FIELDS,
    frozenset({"status"}),
    has_status=True,
    returns_deleted_object=True,
)
PODS = ResourceType(
    "",
    "v1",
    "pods",
    "Pod",
    True,
    ALL_VERBS,
    defaults.pod,
    validation.pod,
    POD_FIELDS,
    frozenset({"status", "log"}),
    has_status=True,
    returns_deleted_object=True,
)
EVENTS = ResourceType(
    "", "v1", "events", "Event", True, ALL_VERBS, defaults.none, validation.event, EVENT_FIELDS
)
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "Deployment",
    True,
    ALL_VERBS,
    defaults.deployment,
    validation.deployment,
    COMMON_FIELDS,
    frozenset({"status", "scale"}),
    has_status=True,
    has_generation=True,
)
ENDPOINTSLICES = ResourceType(
    "discovery.k8s.io",
    "v1",
    "endpointslices",
    "EndpointSlice",
    True,
    READ_VERBS,
    defaults.none,
    validation.endpointslice,
    COMMON_FIELDS,
)
LEASES = ResourceType(
    "coordination.k8s.io",
    "v1",
    "leases",
    "Lease",
    True,
    ALL_VERBS,
    defaults.none,
    validation.lease,
    COMMON_FIELDS,
)

ALL = (NAMESPACES, CONFIGMAPS, SECRETS, SERVICES, PODS, EVENTS, DEPLOYMENTS, ENDPOINTSLICES, LEASES)
BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in ALL}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in ALL}
