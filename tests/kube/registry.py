"""What kube-apiserver does between the HTTP request and etcd.

Per verb: check the body against the URL, fill defaults and server-owned fields, keep
status (or spec) on writes to the object (or its /status), validate, enforce optimistic
concurrency on `metadata.resourceVersion`, and store. Deletion is graceful for pods,
honours finalizers and preconditions, and hands dependents to the garbage collector
according to `propagationPolicy`. The `/scale` subresource of Deployments lives here
too, since it is a view of the Deployment's own fields.

Controllers, the scheduler and the kubelet write through `write()` / `write_status()`,
which skip the request checks but keep the revision and watch semantics.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from tests.kube import patch as patches
from tests.kube import resources as kinds
from tests.kube import validation
from tests.kube.meta import (
    clone,
    generate_name,
    new_uid,
    normalise_micro_time,
    now_time,
    object_key,
    time_after,
)
from tests.kube.resources import ResourceType
from tests.kube.selectors import (
    from_label_selector_object,
    parse_field_selector,
    parse_label_selector,
)
from tests.kube.status import (
    STALE_OBJECT,
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
    success,
    unsupported_media_type,
)
from tests.kube.store import Store

FOREGROUND_FINALIZER = "foregroundDeletion"
_SERVER_OWNED_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._next_cluster_ip = 10

    # -- reads -------------------------------------------------------------------------

    def get(self, resource: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource.plural, resource.group, name)
        return obj

    def list(
        self,
        resource: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, resource.fields)
        revision = self.store.revision
        after: tuple[str, str] | None = None
        if continue_token:
            revision, after = _decode_continue(continue_token)
            if revision < self.store.floor:
                raise expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
        items = []
        for obj in self.store.items(resource, namespace):
            if after is not None and object_key(obj) <= after:
                continue
            if labels.matches(obj["metadata"].get("labels")) and fields.matches(
                obj, resource.fields
            ):
                items.append(obj)
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if limit and len(items) > limit:
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            metadata["continue"] = _encode_continue(revision, object_key(items[-1]))
        # Items of a list carry no kind/apiVersion on a real cluster; clients must not need them.
        listed = [
            {k: v for k, v in clone(obj).items() if k not in ("kind", "apiVersion")}
            for obj in items
        ]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": listed,
        }

    # -- create ------------------------------------------------------------------------

    def create(self, resource: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        obj = self._check_body(resource, body, namespace, None)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(meta["generateName"])
        if resource.namespaced:
            self._require_namespace(namespace)
        resource.defaulter(obj)
        self._prepare_create(resource, obj)
        self._validate(resource, obj, None)
        if (
            self.store.peek(resource, namespace if resource.namespaced else "", meta["name"])
            is not None
        ):
            raise already_exists(resource.plural, resource.group, meta["name"])
        return self.store.create(resource, obj)

    def _require_namespace(self, namespace: str) -> None:
        found = self.store.peek(kinds.NAMESPACES, "", namespace)
        if found is None:
            raise not_found("namespaces", "", namespace)
        if (found.get("status") or {}).get("phase") == "Terminating":
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _prepare_create(self, resource: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(key, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_time()
        if resource.has_generation:
            meta["generation"] = 1
        if resource is kinds.DEPLOYMENTS:
            obj["status"] = {}
        elif resource is kinds.PODS:
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj["spec"])}
        elif resource is kinds.SERVICES:
            self._allocate_cluster_ip(obj["spec"])
            obj["status"] = {"loadBalancer": {}}
        elif resource is kinds.NAMESPACES:
            obj["status"] = {"phase": "Active"}
        self._normalise(resource, obj)

    def _allocate_cluster_ip(self, spec: dict[str, Any]) -> None:
        if spec.get("clusterIP") in (None, ""):
            self._next_cluster_ip += 1
            n = self._next_cluster_ip
            spec["clusterIP"] = f"10.96.{n // 256}.{n % 256}"
        spec["clusterIPs"] = [spec["clusterIP"]]
        if spec["clusterIP"] != "None":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")

    def _normalise(self, resource: ResourceType, obj: dict[str, Any]) -> None:
        if resource is kinds.SECRETS:
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) if string_data else obj.get("data")
            for key, value in string_data.items():
                assert data is not None
                data[key] = base64.b64encode(str(value).encode()).decode()
        if resource is kinds.LEASES:
            spec = obj.get("spec") or {}
            for key in ("acquireTime", "renewTime"):
                if key in spec:
                    spec[key] = normalise_micro_time(spec[key])

    # -- update ------------------------------------------------------------------------

    def replace(
        self, resource: ResourceType, namespace: str, name: str, body: Any, subresource: str = ""
    ) -> dict[str, Any]:
        obj = self._check_body(resource, body, namespace, name)
        old = self.get(resource, namespace, name)
        return self._update(resource, obj, old, subresource)

    def patch(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        raw: bytes,
        content_type: str,
        subresource: str = "",
    ) -> dict[str, Any]:
        old = self.get(resource, namespace, name)
        patched = _apply_patch(old, raw, content_type)
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        patched.setdefault("metadata", {})
        # Fields that identify the object cannot be patched away.
        patched["metadata"]["name"] = name
        if resource.namespaced:
            patched["metadata"]["namespace"] = namespace
        patched["kind"], patched["apiVersion"] = resource.kind, resource.api_version
        return self._update(resource, patched, old, subresource)

    def _update(
        self, resource: ResourceType, obj: dict[str, Any], old: dict[str, Any], subresource: str
    ) -> dict[str, Any]:
        meta, old_meta = obj["metadata"], old["metadata"]
        name = old_meta["name"]
        sent = meta.get("resourceVersion")
        if sent and sent != old_meta["resourceVersion"]:
            raise conflict(resource.plural, resource.group, name, STALE_OBJECT)
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise conflict(
                resource.plural,
                resource.group,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old_meta['uid']}",
            )
        for key in _SERVER_OWNED_METADATA:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        if resource.has_status:
            if subresource == "status":
                _copy_field(old, obj, "spec")
                meta["labels"] = old_meta.get("labels")
                meta["annotations"] = old_meta.get("annotations")
                _drop_none(meta, "labels", "annotations")
            else:
                _copy_field(old, obj, "status")
        if subresource != "status":
            resource.defaulter(obj)
        if resource is kinds.SERVICES:
            spec, old_spec = obj.setdefault("spec", {}), old.get("spec") or {}
            if not spec.get("clusterIP") and old_spec.get("clusterIP"):
                spec["clusterIP"], spec["clusterIPs"] = (
                    old_spec["clusterIP"],
                    old_spec.get("clusterIPs"),
                )
        self._normalise(resource, obj)
        if resource.has_generation and obj.get("spec") != old.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        self._validate(resource, obj, old)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if _same(obj, old):
            return old  # a no-op write is not a write: no new revision, no watch event
        updated = self.store.update(resource, obj)
        return self._finish_deletion_if_done(resource, updated)

    def _finish_deletion_if_done(
        self, resource: ResourceType, obj: dict[str, Any]
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and resource is not kinds.PODS
        ):
            namespace, name = object_key(obj)
            return self.store.delete(resource, namespace, name)
        return obj

    def _validate(
        self, resource: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        errors = resource.validator(obj, old)
        if errors:
            raise invalid(resource.kind, resource.group, obj["metadata"].get("name", ""), errors)

    # -- delete ------------------------------------------------------------------------

    def delete(
        self, resource: ResourceType, namespace: str, name: str, options: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        obj = self.get(resource, namespace, name)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise conflict(
                resource.plural,
                resource.group,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != meta["resourceVersion"]
        ):
            raise conflict(
                resource.plural,
                resource.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy")
        if policy is None:
            policy = "Orphan" if options.get("orphanDependents") else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                [
                    FieldError(
                        "NotSupported",
                        "propagationPolicy",
                        '"Background", "Foreground", "Orphan"',
                        policy,
                    )
                ],
            )

        if resource is kinds.PODS:
            return self._delete_pod(obj, options)
        if policy == "Orphan":
            self._orphan_dependents(meta["uid"])
        if policy == "Foreground":
            finalizers = meta.setdefault("finalizers", [])
            if FOREGROUND_FINALIZER not in finalizers:
                finalizers.append(FOREGROUND_FINALIZER)
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_time()
                meta["deletionGracePeriodSeconds"] = 0
                if resource.has_generation:
                    meta["generation"] = int(meta.get("generation", 1)) + 1
                obj = self.store.update(resource, obj)
            return (202 if policy == "Foreground" else 200), obj
        removed = self.store.delete(resource, namespace, name)
        if resource.returns_deleted_object:
            return 200, removed
        return 200, success(resource.plural, resource.group, name, meta["uid"])

    def _delete_pod(
        self, pod: dict[str, Any], options: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        meta = pod["metadata"]
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = max(int(grace), 0)
        if (
            grace == 0
            or not pod["spec"].get("nodeName")
            or pod["status"].get("phase") in ("Succeeded", "Failed")
        ):
            namespace, name = object_key(pod)
            return 200, self.store.delete(kinds.PODS, namespace, name)
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and current <= grace:
            return 200, pod
        # The kubelet stops the containers, then removes the pod.
        meta["deletionTimestamp"] = time_after(grace)
        meta["deletionGracePeriodSeconds"] = grace
        return 200, self.store.update(kinds.PODS, pod)

    def _orphan_dependents(self, owner_uid: str) -> None:
        for resource in kinds.ALL:
            for dependent in list(self.store.items(resource)):
                references = dependent["metadata"].get("ownerReferences") or []
                kept = [ref for ref in references if ref.get("uid") != owner_uid]
                if len(kept) != len(references):
                    updated = clone(dependent)
                    updated["metadata"]["ownerReferences"] = kept or None
                    _drop_none(updated["metadata"], "ownerReferences")
                    self.store.update(resource, updated)

    # -- scale -------------------------------------------------------------------------

    def get_scale(self, namespace: str, name: str) -> dict[str, Any]:
        return scale_of(self.get(kinds.DEPLOYMENTS, namespace, name))

    def replace_scale(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        deployment = self.get(kinds.DEPLOYMENTS, namespace, name)
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a Scale object")
        if body.get("apiVersion") not in (None, "autoscaling/v1") or body.get("kind") not in (
            None,
            "Scale",
        ):
            raise bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version (autoscaling/v1)"
            )
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        sent = meta.get("resourceVersion")
        if sent and sent != deployment["metadata"]["resourceVersion"]:
            raise conflict("deployments", "apps", name, STALE_OBJECT)
        errors = validation.scale(body)
        if errors:
            raise invalid("Scale", "autoscaling", name, errors)
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if deployment["spec"].get("replicas") != replicas:
            deployment["spec"]["replicas"] = replicas
            deployment["metadata"]["generation"] = (
                int(deployment["metadata"].get("generation", 1)) + 1
            )
            deployment = self.store.update(kinds.DEPLOYMENTS, deployment)
        return scale_of(deployment)

    def patch_scale(
        self, namespace: str, name: str, raw: bytes, content_type: str
    ) -> dict[str, Any]:
        current = self.get_scale(namespace, name)
        patched = _apply_patch(current, raw, content_type)
        return self.replace_scale(namespace, name, patched)

    # -- in-process writers (controllers, scheduler, kubelet) ---------------------------

    def write(self, resource: ResourceType, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Store `obj` as is if it still exists and changed; None if it is gone."""
        namespace, name = object_key(obj)
        old = self.store.peek(resource, namespace, name)
        if old is None:
            return None
        candidate = clone(obj)
        candidate["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _same(candidate, old):
            return clone(old)
        updated = self.store.update(resource, candidate)
        return self._finish_deletion_if_done(resource, updated)

    def write_status(
        self, resource: ResourceType, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        old = self.store.peek(resource, namespace, name)
        if old is None:
            return None
        if old.get("status") == status:
            return clone(old)
        updated = clone(old)
        updated["status"] = clone(status)
        return self.store.update(resource, updated)

    def remove(self, resource: ResourceType, namespace: str, name: str) -> None:
        """Take an object out for good (the kubelet after a pod stopped, the GC)."""
        if self.store.peek(resource, namespace, name) is not None:
            self.store.delete(resource, namespace, name)

    # -- helpers -----------------------------------------------------------------------

    def _check_body(
        self, resource: ResourceType, body: Any, namespace: str, name: str | None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {resource.kind} object")
        obj = clone(body)
        if obj.get("apiVersion") not in (None, resource.api_version):
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API version ({resource.api_version})"
            )
        if obj.get("kind") not in (None, resource.kind):
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({resource.kind})"
            )
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if name is not None and meta.get("name") != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if resource.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj


def scale_of(deployment: dict[str, Any]) -> dict[str, Any]:
    meta = deployment["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": deployment["spec"].get("replicas", 0)},
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": from_label_selector_object(deployment["spec"].get("selector")).render(),
        },
    }


def _apply_patch(target: dict[str, Any], raw: bytes, content_type: str) -> Any:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in patches.SUPPORTED:
        raise unsupported_media_type(media_type)
    try:
        body = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as error:
        raise bad_request(f"error decoding patch: {error}") from None
    try:
        if media_type == patches.JSON_PATCH:
            return patches.json_patch(target, body)
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        if media_type == patches.MERGE_PATCH:
            return patches.merge_patch(target, body)
        return patches.strategic_merge_patch(target, body)
    except patches.PatchError as error:
        raise ApiError(422, "Invalid", str(error)) from None


def _copy_field(source: dict[str, Any], target: dict[str, Any], key: str) -> None:
    if key in source:
        target[key] = clone(source[key])
    else:
        target.pop(key, None)


def _drop_none(mapping: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if mapping.get(key) is None:
            mapping.pop(key, None)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def _qos_class(spec: Mapping[str, Any]) -> str:
    containers = list(spec.get("containers") or [])
    requests_seen = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        requests_seen = requests_seen or bool(requests) or bool(limits)
        for resource in ("cpu", "memory"):
            if (
                resource not in limits
                or requests.get(resource, limits[resource]) != limits[resource]
            ):
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _encode_continue(revision: int, after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"rv": revision, "after": list(after)})).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(decoded["rv"]), (str(decoded["after"][0]), str(decoded["after"][1]))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError, orjson.JSONDecodeError):
        raise bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        ) from None
