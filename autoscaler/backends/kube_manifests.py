"""The objects one model version is made of on Kubernetes, built from its template (pure).

A Deployment `mlfe-<service>-<version>` running the scoring runtime image, a headless
Service of the same name whose EndpointSlices list the ready pods, and (unless the image
carries the source) an immutable ConfigMap with the source files, named after their
content hash. Nothing here calls the API; `kubernetes.py` sends what this builds.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from autoscaler.backends.base import DeploymentKey, ReplicaTemplate

# Pure on purpose: the router's control plane builds PodOptions without paying for the
# `kubernetes` client's import, so this module does not use it (nor kube_api).
Json = dict[str, Any]

DEFAULT_IMAGE = "mlfe-runtime:latest"
CONTAINER = "replica"
PORT = 5001
PORT_NAME = "http"
SOURCE_MOUNT = "/var/mlfe/src"
MODELS_MOUNT = "/var/mlfe/models"
# A ConfigMap holds at most 1 MiB; leave room for its metadata.
MAX_SOURCE_BYTES = 1_000_000
SKIPPED_SOURCE = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache"})
MAX_NAME = 63  # DNS-1035 label: Service and Deployment names

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SERVICE = "mlfe.io/service"
LABEL_VERSION = "mlfe.io/version"
LABEL_KIND = "mlfe.io/kind"
LABEL_TEMPLATE = "mlfe.io/template"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"  # set on EndpointSlices by Kubernetes
REPLICA_APP = "mlfe-replica"
MANAGED_BY = "mlfe"
REPLICA_SELECTOR = f"{LABEL_NAME}={REPLICA_APP},{LABEL_MANAGED_BY}={MANAGED_BY}"


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelsVolume:
    """Where model files live in the cluster, and where this router sees the same files.

    A model directory given to `deploy()` must lie under `local_root`; the pod gets the
    volume at /var/mlfe/models and AZUREML_MODEL_DIR points at the same relative path.
    """

    local_root: str
    claim_name: str | None = None  # a PersistentVolumeClaim in the namespace
    host_path: str | None = None  # a folder on every node (single-node clusters, tests)

    def __post_init__(self) -> None:
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError("a models volume is either a PersistentVolumeClaim or a hostPath")

    @classmethod
    def host(cls, path: str | os.PathLike[str]) -> ModelsVolume:
        """A hostPath volume; the router sees the node's folder at the same path."""
        text = os.fspath(Path(path).absolute())
        return cls(local_root=text, host_path=text)

    @classmethod
    def claim(cls, name: str, mounted_at: str | os.PathLike[str]) -> ModelsVolume:
        """A PVC, which the router pod mounts at `mounted_at`."""
        return cls(local_root=os.fspath(Path(mounted_at).absolute()), claim_name=name)

    def volume(self) -> Json:
        if self.claim_name is not None:
            source: Json = {
                "persistentVolumeClaim": {"claimName": self.claim_name, "readOnly": True}
            }
        else:
            source = {"hostPath": {"path": self.host_path, "type": "Directory"}}
        return {"name": "models", **source}

    def pod_path(self, local: str) -> str:
        """`local` (a path under `local_root`) as the pod sees it."""
        root = Path(self.local_root)
        path = Path(os.path.normpath(Path(local).absolute()))
        if not path.is_relative_to(root):
            raise ValueError(
                f"model path {local} is outside the models volume ({root}): put the model files"
                " in the volume the replicas mount"
            )
        relative = path.relative_to(root).as_posix()
        return MODELS_MOUNT if relative == "." else f"{MODELS_MOUNT}/{relative}"


@dataclass(frozen=True)
class PodOptions:
    """What a version asks of its pods beyond the replica template:
    `containerResourceRequirements` and `livenessProbeRequirements` from its
    deploymentconfig.json, and whether the image already holds the source."""

    cpu: float = 0.1
    memory_gb: float = 0.5
    cpu_limit: float | None = None
    memory_gb_limit: float | None = None
    gpu: int = 0
    liveness_period_seconds: int = 10
    liveness_initial_delay_seconds: int = 310
    liveness_timeout_seconds: int = 2
    liveness_failure_threshold: int = 3
    # The entry script and source directory are paths inside the image: ship no ConfigMap.
    source_in_image: bool = False


# -- object names and manifests (pure) -------------------------------------------------------


def deployment_name(key: DeploymentKey) -> str:
    """`mlfe-<service>-<version>`, shortened with a hash when over 63 characters."""
    return _dns_label(f"mlfe-{key.service}-{key.version}")


def _dns_label(name: str) -> str:
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def replica_labels(key: DeploymentKey) -> dict[str, str]:
    return {
        LABEL_NAME: REPLICA_APP,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVICE: key.service,
        LABEL_VERSION: key.version,
    }


def replica_selector(key: DeploymentKey) -> dict[str, str]:
    return {LABEL_SERVICE: key.service, LABEL_VERSION: key.version}


def _short_hash(data: object) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]


@dataclass(frozen=True)
class SourceBundle:
    """A source directory as ConfigMap data: files under flat keys, `items` for their paths."""

    data: dict[str, str]
    binary_data: dict[str, str]
    items: tuple[tuple[str, str], ...]  # (key, relative path)

    @property
    def digest(self) -> str:
        return _short_hash([self.data, self.binary_data, self.items])


_KEY_CHARS = re.compile(r"[^-._a-zA-Z0-9]")


def bundle_source(source_dir: str | os.PathLike[str]) -> SourceBundle:
    """Read a source directory into ConfigMap data (caches and VCS folders left out)."""
    root = Path(source_dir)
    files: list[tuple[str, bytes]] = []
    for folder, folders, names in os.walk(root):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_SOURCE)
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(folder) / name
            if not path.is_file():
                continue
            files.append((path.relative_to(root).as_posix(), path.read_bytes()))
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items: list[tuple[str, str]] = []
    size = 0
    for index, (relative, content) in enumerate(files):
        base = _KEY_CHARS.sub("_", PurePosixPath(relative).name).lstrip(".") or "file"
        key = f"{index:04d}.{base}"[:253]
        try:
            data[key] = content.decode("utf-8")
            size += len(content)
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(content).decode("ascii")
            size += len(binary[key])
        items.append((key, relative))
        if size > MAX_SOURCE_BYTES:
            raise ValueError(
                f"source directory {root} holds more than {MAX_SOURCE_BYTES // 1000} kB, more"
                " than a ConfigMap can carry: build the source into the runtime image, or put"
                " large files in the models volume"
            )
    return SourceBundle(data, binary, tuple(items))


def _quantity(number: float) -> str:
    return f"{number:g}"


def _resources(options: PodOptions) -> Json:
    requests = {"cpu": _quantity(options.cpu), "memory": f"{_quantity(options.memory_gb)}Gi"}
    limits: dict[str, str] = {}
    if options.cpu_limit is not None:
        limits["cpu"] = _quantity(options.cpu_limit)
    if options.memory_gb_limit is not None:
        limits["memory"] = f"{_quantity(options.memory_gb_limit)}Gi"
    if options.gpu:
        limits["nvidia.com/gpu"] = str(options.gpu)
    resources: Json = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return resources


@dataclass(frozen=True)
class Manifests:
    """The objects one version is made of, ready to send."""

    deployment: Json
    service: Json
    source: Json | None  # the ConfigMap with the source files
    template_hash: str


def build_manifests(
    key: DeploymentKey,
    template: ReplicaTemplate,
    replicas: int,
    *,
    namespace: str,
    image: str = DEFAULT_IMAGE,
    options: PodOptions | None = None,
    models_volume: ModelsVolume | None = None,
    image_pull_policy: str | None = None,
) -> Manifests:
    """The Deployment, headless Service and source ConfigMap of one version."""
    if template.entry_script is None:
        raise ValueError(f"{key}: the Kubernetes backend runs entry scripts, not replica urls")
    options = options or PodOptions()
    name = deployment_name(key)
    labels = replica_labels(key)
    env: dict[str, str] = dict(template.environment)
    volumes: list[Json] = []
    mounts: list[Json] = []
    # The runtime binds 127.0.0.1 unless told otherwise; in a pod that would hide it
    # from the kubelet's probes and from the routers, which reach it at the pod IP.
    args = ["--host", "0.0.0.0", "--port", str(PORT)]

    source_map: Json | None = None
    if options.source_in_image:
        env["AZUREML_ENTRY_SCRIPT"] = template.entry_script
        env["AZUREML_SOURCE_DIRECTORY"] = template.source_dir or os.path.dirname(
            template.entry_script
        )
    else:
        source_dir = template.source_dir or os.path.dirname(os.path.abspath(template.entry_script))
        entry = Path(os.path.abspath(template.entry_script))
        if not entry.is_relative_to(os.path.abspath(source_dir)):
            raise ValueError(f"{key}: entry script {entry} is outside its source directory")
        bundle = bundle_source(source_dir)
        map_name = f"mlfe-src-{name.removeprefix('mlfe-')}-{bundle.digest}"
        source_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": map_name,
                "namespace": namespace,
                "labels": {**labels, LABEL_KIND: "source"},
            },
            "data": bundle.data,
            "binaryData": bundle.binary_data,
            "immutable": True,  # the name carries its content hash
        }
        volumes.append(
            {
                "name": "source",
                "configMap": {
                    "name": map_name,
                    "items": [{"key": k, "path": p} for k, p in bundle.items],
                },
            }
        )
        mounts.append({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True})
        relative = entry.relative_to(os.path.abspath(source_dir)).as_posix()
        env["AZUREML_ENTRY_SCRIPT"] = f"{SOURCE_MOUNT}/{relative}"
        env["AZUREML_SOURCE_DIRECTORY"] = SOURCE_MOUNT

    if template.model_dir is not None or template.models:
        if models_volume is None:
            raise ValueError(
                f"{key}: model files need a models volume (a PersistentVolumeClaim or a"
                " hostPath) in the Kubernetes backend's settings"
            )
        volumes.append(models_volume.volume())
        mounts.append({"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True})
        if template.model_dir is not None:
            env["AZUREML_MODEL_DIR"] = models_volume.pod_path(template.model_dir)
        for model in template.models:
            path = models_volume.pod_path(model.path)
            args += ["--model", f"{model.name}:{model.version}:{path}"]
    env["SCORING_TIMEOUT_MS"] = str(template.scoring_timeout_ms)
    env["MLFE_MAX_CONCURRENT"] = str(template.slots)

    http_get = {"path": "/", "port": PORT_NAME}
    container: Json = {
        "name": CONTAINER,
        "image": image,
        "command": ["python", "-m", "scoring_runtime"],
        "args": args,
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "volumeMounts": mounts,
        "resources": _resources(options),
        "readinessProbe": {"httpGet": http_get, "periodSeconds": 1, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": http_get,
            "periodSeconds": options.liveness_period_seconds,
            "initialDelaySeconds": options.liveness_initial_delay_seconds,
            "timeoutSeconds": options.liveness_timeout_seconds,
            # Kubernetes accepts only 1 for a liveness probe's successThreshold.
            "successThreshold": 1,
            "failureThreshold": options.liveness_failure_threshold,
        },
    }
    if image_pull_policy is not None:
        container["imagePullPolicy"] = image_pull_policy
    pod_spec: Json = {
        "containers": [container],
        "volumes": volumes,
        # In-flight requests of a replica being removed may run for the scoring timeout.
        "terminationGracePeriodSeconds": math.ceil(template.scoring_timeout) + 5,
        # Replicas have no business with the Kubernetes API or other services' variables.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    template_hash = _short_hash(pod_spec)
    deployment: Json = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {LABEL_TEMPLATE: template_hash},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": replica_selector(key)},
            # New pods serve before old ones go: a rollout never lowers capacity.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {**labels, LABEL_TEMPLATE: template_hash}},
                "spec": pod_spec,
            },
        },
    }
    service: Json = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",  # headless: the router connects to pods, not a virtual IP
            "selector": replica_selector(key),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
            "publishNotReadyAddresses": False,
        },
    }
    return Manifests(deployment, service, source_map, template_hash)
