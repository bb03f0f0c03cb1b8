"""The validation kube-apiserver applies to the kinds this double serves.

Only checks a client could trip over are here (names, labels, configmap keys and size,
selectors matching template labels, ports, volume mounts, immutable fields), with the
messages apimachinery uses, so a manifest or backend that would be rejected by a real
cluster is rejected here too.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from tests.kube import quantity
from tests.kube.selectors import from_label_selector_object
from tests.kube.status import ApiError, FieldError

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

DNS1123_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_LABEL_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
CONFIG_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
MAX_CONFIG_SIZE = 1024 * 1024
MAX_ANNOTATIONS_SIZE = 256 * 1024


def dns1123_label(value: str, path: str) -> list[FieldError]:
    errors = []
    if len(value) > 63:
        errors.append(FieldError("Invalid", path, "must be no more than 63 characters", value))
    if not _DNS1123_LABEL.match(value):
        errors.append(FieldError("Invalid", path, DNS1123_LABEL_MESSAGE, value))
    return errors


def dns1123_subdomain(value: str, path: str) -> list[FieldError]:
    errors = []
    if len(value) > 253:
        errors.append(FieldError("Invalid", path, "must be no more than 253 characters", value))
    if not _DNS1123_SUBDOMAIN.match(value):
        errors.append(FieldError("Invalid", path, DNS1123_SUBDOMAIN_MESSAGE, value))
    return errors


def dns1035_label(value: str, path: str) -> list[FieldError]:
    errors = []
    if len(value) > 63:
        errors.append(FieldError("Invalid", path, "must be no more than 63 characters", value))
    if not _DNS1035_LABEL.match(value):
        errors.append(FieldError("Invalid", path, DNS1035_LABEL_MESSAGE, value))
    return errors


def qualified_name(key: str, path: str) -> list[FieldError]:
    """A label or annotation key: optional DNS-subdomain prefix, then a name of ≤ 63."""
    prefix, _, name = key.rpartition("/")
    errors = []
    if prefix:
        errors += [
            FieldError("Invalid", path, f"prefix part {e.detail}", key)
            for e in dns1123_subdomain(prefix, path)
        ]
    if not name:
        errors.append(FieldError("Invalid", path, "name part must be non-empty", key))
    elif len(name) > 63:
        errors.append(
            FieldError("Invalid", path, "name part must be no more than 63 characters", key)
        )
    elif not _QUALIFIED_NAME.match(name):
        errors.append(
            FieldError(
                "Invalid",
                path,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                key,
            )
        )
    return errors


def labels(values: Any, path: str) -> list[FieldError]:
    if values is None:
        return []
    if not isinstance(values, Mapping):
        return [FieldError("Invalid", path, "must be a map of strings", values)]
    errors = []
    for key, value in values.items():
        errors += qualified_name(key, path)
        if not isinstance(value, str):
            errors.append(FieldError("Invalid", f"{path}", "label values must be strings", value))
        elif len(value) > 63:
            errors.append(FieldError("Invalid", path, "must be no more than 63 characters", value))
        elif not _LABEL_VALUE.match(value):
            errors.append(
                FieldError(
                    "Invalid",
                    path,
                    "a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                    "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                    value,
                )
            )
    return errors


def metadata(obj: Mapping[str, Any], name_rule: str) -> list[FieldError]:
    meta = obj.get("metadata") or {}
    errors: list[FieldError] = []
    name = meta.get("name")
    if not name:
        errors.append(FieldError("Required", "metadata.name", "name or generateName is required"))
    else:
        rule = {"label": dns1123_label, "subdomain": dns1123_subdomain, "dns1035": dns1035_label}
        if name_rule in rule:
            errors += rule[name_rule](name, "metadata.name")
        elif "/" in name or name in (".", ".."):
            errors.append(FieldError("Invalid", "metadata.name", "may not contain '/'", name))
    errors += labels(meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        errors.append(
            FieldError("Invalid", "metadata.annotations", "must be a map of strings", annotations)
        )
    else:
        for key in annotations:
            errors += qualified_name(key, "metadata.annotations")
        size = sum(len(k) + len(str(v)) for k, v in annotations.items())
        if size > MAX_ANNOTATIONS_SIZE:
            errors.append(
                FieldError(
                    "TooLong",
                    "metadata.annotations",
                    f"must have at most {MAX_ANNOTATIONS_SIZE} bytes",
                )
            )
    return errors


def _config_keys(data: Mapping[str, Any] | None, path: str) -> list[FieldError]:
    errors = []
    for key in data or {}:
        if len(key) > 253:
            errors.append(
                FieldError("Invalid", f"{path}[{key}]", "must be no more than 253 characters", key)
            )
        if not _CONFIG_KEY.match(key):
            errors.append(FieldError("Invalid", f"{path}[{key}]", CONFIG_KEY_MESSAGE, key))
    return errors


def configmap(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    errors += _config_keys(data, "data") + _config_keys(binary, "binaryData")
    for key in set(data) & set(binary):
        errors.append(
            FieldError("Invalid", f"data[{key}]", "duplicate of key present in binaryData", key)
        )
    for key, value in data.items():
        if not isinstance(value, str):
            errors.append(FieldError("Invalid", f"data[{key}]", "must be a string", value))
    size = sum(len(k) + len(str(v).encode()) for k, v in data.items())
    size += sum(len(k) + len(_decode(v) or b"") for k, v in binary.items())
    if size > MAX_CONFIG_SIZE:
        errors.append(FieldError("TooLong", "", f"must have at most {MAX_CONFIG_SIZE} bytes"))
    errors += _immutable_data(obj, old)
    return errors


def _decode(value: Any) -> bytes | None:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return None


def secret(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    data = obj.get("data") or {}
    errors += _config_keys(data, "data")
    size = 0
    for key, value in data.items():
        decoded = _decode(value)
        if decoded is None:
            errors.append(
                FieldError(
                    "Invalid", f"data[{key}]", "illegal base64 data", "<secret contents redacted>"
                )
            )
        else:
            size += len(decoded)
    if size > MAX_CONFIG_SIZE:
        errors.append(FieldError("TooLong", "data", f"must have at most {MAX_CONFIG_SIZE} bytes"))
    if old is not None and old.get("type") != obj.get("type"):
        errors.append(FieldError("Invalid", "type", "field is immutable", obj.get("type")))
    errors += _immutable_data(obj, old)
    return errors


def _immutable_data(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    if old is None or not old.get("immutable"):
        return []
    errors = []
    for field in ("data", "binaryData", "stringData"):
        if (obj.get(field) or {}) != (old.get(field) or {}):
            errors.append(
                FieldError("Forbidden", field, "field is immutable when `immutable` is set")
            )
    if not obj.get("immutable"):
        errors.append(
            FieldError("Forbidden", "immutable", "field is immutable when `immutable` is set")
        )
    return errors


def namespace(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    return metadata(obj, "label")


def lease(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errors.append(
            FieldError("Invalid", "spec.leaseDurationSeconds", "must be greater than 0", duration)
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        errors.append(
            FieldError(
                "Invalid",
                "spec.leaseTransitions",
                "must be greater than or equal to 0",
                transitions,
            )
        )
    return errors


def event(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    involved = obj.get("involvedObject") or {}
    meta = obj.get("metadata") or {}
    if involved.get("namespace") and involved.get("namespace") != meta.get("namespace"):
        errors.append(
            FieldError(
                "Invalid",
                "involvedObject.namespace",
                "does not match event.namespace",
                involved.get("namespace"),
            )
        )
    return errors


def endpointslice(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
        errors.append(
            FieldError(
                "NotSupported",
                "addressType",
                'supported values: "FQDN", "IPv4", "IPv6"',
                obj.get("addressType"),
            )
        )
    return errors


def service(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "dns1035")
    spec = obj.get("spec") or {}
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and spec.get("type", "ClusterIP") != "ExternalName":
        errors.append(FieldError("Required", "spec.ports", ""))
    names: set[str] = set()
    for index, port in enumerate(ports):
        path = f"spec.ports[{index}]"
        name = port.get("name") or ""
        if len(ports) > 1 and not name:
            errors.append(FieldError("Required", f"{path}.name", ""))
        if name:
            errors += dns1123_label(name, f"{path}.name")
            if name in names:
                errors.append(FieldError("Duplicate", f"{path}.name", "", name))
            names.add(name)
        errors += _port_number(port.get("port"), f"{path}.port")
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errors.append(
                FieldError(
                    "NotSupported",
                    f"{path}.protocol",
                    'supported values: "SCTP", "TCP", "UDP"',
                    port.get("protocol"),
                )
            )
        target = port.get("targetPort")
        if isinstance(target, int):
            errors += _port_number(target, f"{path}.targetPort")
        elif isinstance(target, str) and not _iana_service_name(target):
            errors.append(
                FieldError("Invalid", f"{path}.targetPort", "must be an IANA_SVC_NAME", target)
            )
    errors += labels(spec.get("selector"), "spec.selector")
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") != old_ip:
            errors.append(
                FieldError("Invalid", "spec.clusterIP", "field is immutable", spec.get("clusterIP"))
            )
    return errors


def _iana_service_name(name: str) -> bool:
    return (
        len(name) <= 15
        and bool(_IANA_SVC_NAME.match(name))
        and "--" not in name
        and any(c.isalpha() for c in name)
    )


def _port_number(value: Any, path: str) -> list[FieldError]:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        return [FieldError("Invalid", path, "must be between 1 and 65535, inclusive", value)]
    return []


def pod(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    errors += pod_spec(obj.get("spec") or {}, "spec")
    if old is not None:
        errors += _pod_spec_update(obj.get("spec") or {}, old.get("spec") or {})
    return errors


def _pod_spec_update(spec: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    """Pods are immutable but for a few fields (images, activeDeadlineSeconds, tolerations)."""

    def mutable_stripped(s: Mapping[str, Any]) -> dict[str, Any]:
        stripped = dict(s)
        stripped.pop("activeDeadlineSeconds", None)
        stripped.pop("tolerations", None)
        stripped["containers"] = [
            {k: v for k, v in c.items() if k != "image"} for c in s.get("containers") or []
        ]
        return stripped

    if mutable_stripped(spec) != mutable_stripped(old):
        return [
            FieldError(
                "Forbidden",
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                "`spec.tolerations` (only additions to existing tolerations),"
                "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            )
        ]
    return []


def pod_spec(spec: Mapping[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    volumes: set[str] = set()
    for index, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name") or ""
        vpath = f"{path}.volumes[{index}].name"
        if not name:
            errors.append(FieldError("Required", vpath, ""))
        else:
            errors += dns1123_label(name, vpath)
            if name in volumes:
                errors.append(FieldError("Duplicate", vpath, "", name))
            volumes.add(name)
        errors += _volume_source(volume, f"{path}.volumes[{index}]")
    containers = spec.get("containers") or []
    if not containers:
        errors.append(FieldError("Required", f"{path}.containers", ""))
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            errors += _container(container, f"{path}.{group}[{index}]", volumes, names)
    restart = spec.get("restartPolicy", "Always")
    if restart not in ("Always", "OnFailure", "Never"):
        errors.append(
            FieldError(
                "NotSupported",
                f"{path}.restartPolicy",
                'supported values: "Always", "OnFailure", "Never"',
                restart,
            )
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace < 0):
        errors.append(
            FieldError(
                "Invalid",
                f"{path}.terminationGracePeriodSeconds",
                "must be greater than or equal to 0",
                grace,
            )
        )
    return errors


def _volume_source(volume: Mapping[str, Any], path: str) -> list[FieldError]:
    sources = [key for key in volume if key != "name"]
    if not sources:
        return [FieldError("Required", path, "must specify a volume type")]
    if len(sources) > 1:
        return [
            FieldError(
                "Forbidden", f"{path}.{sources[1]}", "may not specify more than 1 volume type"
            )
        ]
    errors = []
    source = volume[sources[0]] or {}
    if sources[0] == "configMap" and not source.get("name"):
        errors.append(FieldError("Required", f"{path}.configMap.name", ""))
    if sources[0] == "secret" and not source.get("secretName"):
        errors.append(FieldError("Required", f"{path}.secret.secretName", ""))
    if sources[0] == "persistentVolumeClaim" and not source.get("claimName"):
        errors.append(FieldError("Required", f"{path}.persistentVolumeClaim.claimName", ""))
    if sources[0] == "hostPath" and not source.get("path"):
        errors.append(FieldError("Required", f"{path}.hostPath.path", ""))
    for index, item in enumerate(source.get("items") or []):
        item_path = item.get("path") or ""
        if not item.get("key"):
            errors.append(FieldError("Required", f"{path}.{sources[0]}.items[{index}].key", ""))
        if not item_path:
            errors.append(FieldError("Required", f"{path}.{sources[0]}.items[{index}].path", ""))
        elif item_path.startswith("/") or ".." in item_path.split("/"):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.{sources[0]}.items[{index}].path",
                    "must be a relative path without '..'",
                    item_path,
                )
            )
    return errors


def _container(
    container: Mapping[str, Any], path: str, volumes: set[str], names: set[str]
) -> list[FieldError]:
    errors: list[FieldError] = []
    name = container.get("name") or ""
    if not name:
        errors.append(FieldError("Required", f"{path}.name", ""))
    else:
        errors += dns1123_label(name, f"{path}.name")
        if name in names:
            errors.append(FieldError("Duplicate", f"{path}.name", "", name))
        names.add(name)
    if not container.get("image"):
        errors.append(FieldError("Required", f"{path}.image", ""))
    port_names: set[str] = set()
    for index, port in enumerate(container.get("ports") or []):
        ppath = f"{path}.ports[{index}]"
        errors += _port_number(port.get("containerPort"), f"{ppath}.containerPort")
        port_name = port.get("name")
        if port_name:
            if not _iana_service_name(port_name):
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{ppath}.name",
                        "must be no more than 15 characters and an IANA_SVC_NAME",
                        port_name,
                    )
                )
            if port_name in port_names:
                errors.append(FieldError("Duplicate", f"{ppath}.name", "", port_name))
            port_names.add(port_name)
    for index, variable in enumerate(container.get("env") or []):
        env_name = variable.get("name") or ""
        if not _ENV_NAME.match(env_name):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.env[{index}].name",
                    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
                    env_name,
                )
            )
        if "value" in variable and "valueFrom" in variable:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.env[{index}].valueFrom",
                    "may not be specified when `value` is not empty",
                    "",
                )
            )
    mount_paths: set[str] = set()
    for index, mount in enumerate(container.get("volumeMounts") or []):
        mpath = f"{path}.volumeMounts[{index}]"
        if mount.get("name") not in volumes:
            errors.append(FieldError("NotFound", f"{mpath}.name", "", mount.get("name")))
        mount_path = mount.get("mountPath") or ""
        if not mount_path:
            errors.append(FieldError("Required", f"{mpath}.mountPath", ""))
        elif mount_path in mount_paths:
            errors.append(FieldError("Invalid", f"{mpath}.mountPath", "must be unique", mount_path))
        mount_paths.add(mount_path)
    errors += _resources(container.get("resources") or {}, f"{path}.resources")
    for probe_field in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_field)
        if probe:
            errors += _probe(probe, f"{path}.{probe_field}", port_names)
    return errors


def _resources(resources: Mapping[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    parsed: dict[str, dict[str, Any]] = {}
    for section in ("requests", "limits"):
        for resource, value in (resources.get(section) or {}).items():
            rpath = f"{path}.{section}[{resource}]"
            try:
                amount, _ = quantity.parse(value)
            except quantity.QuantityError as error:
                errors.append(FieldError("Invalid", rpath, str(error), value))
                continue
            if amount < 0:
                errors.append(
                    FieldError("Invalid", rpath, "must be greater than or equal to 0", value)
                )
            parsed.setdefault(section, {})[resource] = amount
    for resource, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(resource)
        if limit is not None and request > limit:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.requests",
                    f"must be less than or equal to {resource} limit of {resources['limits'][resource]}",
                    resources["requests"][resource],
                )
            )
    return errors


def _probe(probe: Mapping[str, Any], path: str, port_names: set[str]) -> list[FieldError]:
    errors: list[FieldError] = []
    handlers = [key for key in ("httpGet", "tcpSocket", "exec", "grpc") if key in probe]
    if len(handlers) != 1:
        errors.append(FieldError("Required", path, "must specify a handler type"))
    for key in ("periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        value = probe.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            errors.append(
                FieldError("Invalid", f"{path}.{key}", "must be greater than or equal to 1", value)
            )
    delay = probe.get("initialDelaySeconds")
    if delay is not None and (not isinstance(delay, int) or delay < 0):
        errors.append(
            FieldError(
                "Invalid",
                f"{path}.initialDelaySeconds",
                "must be greater than or equal to 0",
                delay,
            )
        )
    for handler in ("httpGet", "tcpSocket"):
        if handler in probe:
            port = (probe[handler] or {}).get("port")
            if isinstance(port, str) and not port.isdigit() and not _iana_service_name(port):
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{path}.{handler}.port",
                        "must contain at least one letter or number (a-z, 0-9)",
                        port,
                    )
                )
            elif port is None:
                errors.append(FieldError("Required", f"{path}.{handler}.port", ""))
    return errors


def deployment(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    errors = metadata(obj, "subdomain")
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        errors.append(
            FieldError("Invalid", "spec.replicas", "must be greater than or equal to 0", replicas)
        )
    selector = spec.get("selector")
    template = spec.get("template") or {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(
            FieldError(
                "Invalid",
                "spec.selector",
                "empty selector is invalid for deployment",
                selector or {},
            )
        )
    else:
        errors += labels(selector.get("matchLabels"), "spec.selector.matchLabels")
        try:
            matches = from_label_selector_object(selector).matches(template_labels)
        except ApiError:
            matches = False
        if not matches:
            errors.append(
                FieldError(
                    "Invalid",
                    "spec.template.metadata.labels",
                    "`selector` does not match template `labels`",
                    template_labels,
                )
            )
    errors += labels(template_labels, "spec.template.metadata.labels")
    template_spec = template.get("spec") or {}
    errors += pod_spec(template_spec, "spec.template.spec")
    if template_spec.get("restartPolicy", "Always") != "Always":
        errors.append(
            FieldError(
                "NotSupported",
                "spec.template.spec.restartPolicy",
                'supported values: "Always"',
                template_spec.get("restartPolicy"),
            )
        )
    strategy = spec.get("strategy") or {}
    if strategy.get("type") not in ("RollingUpdate", "Recreate"):
        errors.append(
            FieldError(
                "NotSupported",
                "spec.strategy.type",
                'supported values: "Recreate", "RollingUpdate"',
                strategy.get("type"),
            )
        )
    rolling = strategy.get("rollingUpdate") or {}
    if strategy.get("type") == "Recreate" and strategy.get("rollingUpdate"):
        errors.append(
            FieldError(
                "Forbidden",
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
        )
    if strategy.get("type") == "RollingUpdate":
        surge = rolling.get("maxSurge")
        unavailable = rolling.get("maxUnavailable")
        if _is_zero(surge) and _is_zero(unavailable):
            errors.append(
                FieldError(
                    "Invalid",
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "may not be 0 when `maxSurge` is 0",
                    unavailable,
                )
            )
    if old is not None:
        old_selector = (old.get("spec") or {}).get("selector")
        if selector != old_selector:
            errors.append(FieldError("Invalid", "spec.selector", "field is immutable", selector))
    return errors


def _is_zero(value: Any) -> bool:
    return value in (0, "0", "0%")


def scale(obj: Mapping[str, Any]) -> list[FieldError]:
    replicas = (obj.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return [
            FieldError("Invalid", "spec.replicas", "must be greater than or equal to 0", replicas)
        ]
    return []
