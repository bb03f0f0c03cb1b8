"""How the fake kubelet gives a local process what a container would see.

There is no container filesystem, so each volume becomes a local folder (configMap and
secret volumes materialised into the pod's folder, emptyDir created there, hostPath
used as is, a PersistentVolumeClaim mapped to the folder the cluster was given for it),
and paths inside the container are rewritten: an env value or argument that starts
with a mountPath is pointed at the matching local folder.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.kube import resources as kinds
from tests.kube.store import Store


class MountError(Exception):
    """A volume cannot be set up yet (FailedMount); the kubelet retries."""


class ContainerConfigError(Exception):
    """An env source is missing (CreateContainerConfigError); the kubelet retries."""


def mount_volumes(
    pod: dict[str, Any], store: Store, pod_dir: Path, volume_claims: Mapping[str, str]
) -> dict[str, Path]:
    namespace = pod["metadata"]["namespace"]
    paths: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        local = pod_dir / "volumes" / name
        if "configMap" in volume:
            source = volume["configMap"]
            configmap = store.peek(kinds.CONFIGMAPS, namespace, source["name"])
            if configmap is None:
                if source.get("optional"):
                    local.mkdir(parents=True, exist_ok=True)
                    paths[name] = local
                    continue
                raise MountError(
                    f'MountVolume.SetUp failed for volume "{name}" : configmap "{source["name"]}" not found'
                )
            files = {k: v.encode() for k, v in (configmap.get("data") or {}).items()}
            files.update(
                {k: base64.b64decode(v) for k, v in (configmap.get("binaryData") or {}).items()}
            )
            _materialise(local, files, source, name, "configmap", source["name"])
        elif "secret" in volume:
            source = volume["secret"]
            secret = store.peek(kinds.SECRETS, namespace, source["secretName"])
            if secret is None:
                if source.get("optional"):
                    local.mkdir(parents=True, exist_ok=True)
                    paths[name] = local
                    continue
                raise MountError(
                    f'MountVolume.SetUp failed for volume "{name}" : secret "{source["secretName"]}" not found'
                )
            files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            _materialise(local, files, source, name, "secret", source["secretName"])
        elif "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in volume:
            local = Path(volume["hostPath"]["path"])
            kind = volume["hostPath"].get("type", "")
            if kind == "DirectoryOrCreate":
                local.mkdir(parents=True, exist_ok=True)
            elif kind == "Directory" and not local.is_dir():
                raise MountError(
                    f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {local} is not a directory'
                )
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in volume_claims:
                raise MountError(
                    f'MountVolume.SetUp failed for volume "{name}" : persistentvolumeclaim "{claim}" not found'
                )
            local = Path(volume_claims[claim])
        else:
            kind = next((key for key in volume if key != "name"), "unknown")
            raise MountError(
                f'MountVolume.SetUp failed for volume "{name}" : volume type {kind} is not supported by the mlfe test kubelet'
            )
        paths[name] = local
    return paths


def _materialise(
    folder: Path,
    files: Mapping[str, bytes],
    source: Mapping[str, Any],
    volume: str,
    kind: str,
    object_name: str,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    default_mode = int(source.get("defaultMode", 0o644))
    items = source.get("items")
    if items is None:
        items = [{"key": key, "path": key} for key in files]
    for item in items:
        if item["key"] not in files:
            if source.get("optional"):
                continue
            raise MountError(
                f'MountVolume.SetUp failed for volume "{volume}" : {kind} references non-existent {kind} key: {item["key"]} in {object_name}'
            )
        target = folder / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[item["key"]])
        os.chmod(target, int(item.get("mode", default_mode)))


def container_mounts(
    container: Mapping[str, Any], volume_paths: Mapping[str, Path]
) -> list[tuple[str, Path]]:
    """(mountPath, local folder) pairs, longest mountPath first so nested mounts win."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        local = volume_paths[mount["name"]]
        if mount.get("subPath"):
            local = local / mount["subPath"]
        mounts.append((mount["mountPath"].rstrip("/") or "/", local))
    return sorted(mounts, key=lambda pair: len(pair[0]), reverse=True)


def rewrite_path(value: str, mounts: list[tuple[str, Path]]) -> str:
    for mount_path, local in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path) :]
    return value


_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(value: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def resolve_env(container: Mapping[str, Any], pod: dict[str, Any], store: Store) -> dict[str, str]:
    """The container's environment from env / envFrom, as the kubelet builds it."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            configmap = store.peek(kinds.CONFIGMAPS, namespace, ref["name"])
            if configmap is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref["name"]}" not found')
            env.update({prefix + k: v for k, v in (configmap.get("data") or {}).items()})
        if "secretRef" in source:
            ref = source["secretRef"]
            secret = store.peek(kinds.SECRETS, namespace, ref["name"])
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref["name"]}" not found')
            env.update(
                {
                    prefix + k: base64.b64decode(v).decode()
                    for k, v in (secret.get("data") or {}).items()
                }
            )
    for variable in container.get("env") or []:
        name = variable["name"]
        if "valueFrom" in variable:
            value = _value_from(variable["valueFrom"], pod, store, namespace)
            if value is None:
                continue
            env[name] = value
        else:
            env[name] = expand(str(variable.get("value", "")), env)
    return env


def _value_from(
    source: Mapping[str, Any], pod: dict[str, Any], store: Store, namespace: str
) -> str | None:
    if "fieldRef" in source:
        return _field(pod, source["fieldRef"]["fieldPath"])
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        configmap = store.peek(kinds.CONFIGMAPS, namespace, ref["name"])
        if configmap is None or ref["key"] not in (configmap.get("data") or {}):
            if ref.get("optional"):
                return None
            if configmap is None:
                raise ContainerConfigError(f'configmap "{ref["name"]}" not found')
            raise ContainerConfigError(
                f"couldn't find key {ref['key']} in ConfigMap {namespace}/{ref['name']}"
            )
        return str(configmap["data"][ref["key"]])
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        secret = store.peek(kinds.SECRETS, namespace, ref["name"])
        if secret is None or ref["key"] not in (secret.get("data") or {}):
            if ref.get("optional"):
                return None
            if secret is None:
                raise ContainerConfigError(f'secret "{ref["name"]}" not found')
            raise ContainerConfigError(
                f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}"
            )
        return base64.b64decode(secret["data"][ref["key"]]).decode()
    if "resourceFieldRef" in source:
        return "0"
    return None


def _field(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldPath: {path}")
