"""Replicas as pods: one apps/v1 Deployment per version, found through EndpointSlices.

`deploy()` writes three objects per version: a ConfigMap with the source files (unless the
image carries them), a headless Service whose EndpointSlices list the pods, and the
Deployment itself. `scale()` goes through the scale subresource, so it never races a
template change. Nothing is polled: three watches (Deployments, Pods, EndpointSlices)
keep a local copy of the cluster, from which `status()` answers synchronously and the
router's `ReplicaSink` learns which pod addresses take traffic.

The `kubernetes` client is synchronous, so every API call runs in a worker thread and
each watch in a thread of its own (`Informer`, client-go's Reflector in miniature):
list, then watch from the list's resourceVersion; after a disconnect, watch again from
the last resourceVersion seen (bookmarks included); on 410 Gone, list again and report
the difference. Events reach the event loop in order through `call_soon_threadsafe`.
What the sink is told is derived from the current EndpointSlices and compared with what
it was told before, so a re-list or a replayed event never tells it anything twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import os
import random
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentState,
    DeploymentStatus,
    ReplicaSink,
    ReplicaTemplate,
)

logger = logging.getLogger("mlfe.autoscaler.kubernetes")

Json = dict[str, Any]

DEFAULT_IMAGE = "mlfe-runtime:latest"
CONTAINER = "replica"
PORT = 5001
PORT_NAME = "http"
SOURCE_MOUNT = "/var/mlfe/src"
MODELS_MOUNT = "/var/mlfe/models"
# The runtime's exit code when loading the entry script or running init() failed.
INIT_FAILED = 3
LOG_TAIL_LINES = 20
# A ConfigMap holds at most 1 MiB; leave room for its metadata.
MAX_SOURCE_BYTES = 1_000_000
SKIPPED_SOURCE = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache"})
MAX_NAME = 63  # DNS-1035 label: Service and Deployment names
# Draining replicas of a deleted deployment get their scoring timeout plus this to finish.
DRAIN_MARGIN = 1.0
# Reasons a container never starts, as the kubelet reports them in state.waiting.
START_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# Retries of a read-modify-write that lost an optimistic-concurrency race.
CONFLICT_RETRIES = 5

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

# (connect, read) seconds for one API call; watches read for longer (see Informer).
REQUEST_TIMEOUT = (5.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ApiPermission:
    """One RBAC rule a module needs: deploy/kubernetes/role.yaml grants exactly these."""

    group: str  # "" for the core API group
    resource: str  # "deployments/scale" for a subresource
    verbs: tuple[str, ...]


RBAC_RULES: tuple[ApiPermission, ...] = (
    ApiPermission("apps", "deployments", ("create", "delete", "get", "list", "update", "watch")),
    ApiPermission("apps", "deployments/scale", ("patch",)),
    ApiPermission("", "services", ("create", "delete")),
    ApiPermission("", "configmaps", ("create", "delete", "list")),
    ApiPermission("", "pods", ("delete", "list", "watch")),
    ApiPermission("", "pods/log", ("get",)),
    ApiPermission("discovery.k8s.io", "endpointslices", ("list", "watch")),
)


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


def _labels(key: DeploymentKey) -> dict[str, str]:
    return {
        LABEL_NAME: REPLICA_APP,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVICE: key.service,
        LABEL_VERSION: key.version,
    }


def _selector(key: DeploymentKey) -> dict[str, str]:
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
    labels = _labels(key)
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
            "selector": {"matchLabels": _selector(key)},
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
            "selector": _selector(key),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
            "publishNotReadyAddresses": False,
        },
    }
    return Manifests(deployment, service, source_map, template_hash)


# -- API calls -----------------------------------------------------------------------------

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def connect(
    kubeconfig: str | os.PathLike[str] | None = None, namespace: str | None = None
) -> tuple[client.ApiClient, str]:
    """An API client and the namespace to work in.

    Inside a pod (no `kubeconfig` given, KUBERNETES_SERVICE_HOST set): the pod's service
    account and namespace. Otherwise a kubeconfig file ($KUBECONFIG or ~/.kube/config when
    None) and its current context's namespace. `namespace` overrides either.
    """
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        kube_config.load_incluster_config(client_configuration=configuration)
        found = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return client.ApiClient(configuration), namespace or found
    path = os.fspath(kubeconfig) if kubeconfig is not None else None
    api_client = kube_config.new_client_from_config(config_file=path)
    if namespace is None:
        _, active = kube_config.list_kube_config_contexts(config_file=path)
        namespace = (active.get("context") or {}).get("namespace") or "default"
    return api_client, namespace


def api_call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
    """Call a client method and return the server's JSON as it sent it (camelCase).

    The client's models are skipped: the code reads the API's own field names, and a
    field the client does not know yet is not lost. ApiException on a non-2xx answer.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    response = method(*args, _preload_content=False, **kwargs)
    try:
        data = response.data
    finally:
        response.release_conn()
    return orjson.loads(data) if data else {}


def api_text(method: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Like `api_call` for an answer that is text (a pod's log)."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    response = method(*args, _preload_content=False, **kwargs)
    try:
        return bytes(response.data).decode("utf-8", errors="replace")
    finally:
        response.release_conn()


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, ApiException) and error.status in codes


def api_error(error: BaseException) -> str:
    """The Status message of a failed call, for logs and user-facing errors."""
    if isinstance(error, ApiException):
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            body = orjson.loads(error.body or b"")
            if isinstance(body, dict) and body.get("message"):
                return f"{error.status} {body['message']}"
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


# -- watching --------------------------------------------------------------------------------

Change = Callable[[str, Json | None, Json | None], None]


class _Gone(Exception):
    """The watch's resourceVersion is older than the server keeps: list again."""


class Informer:
    """A local copy of one kind of object in a namespace, kept current by a watch.

    `objects` (by name) and the `on_change(name, old, new)` callbacks live on the event
    loop; `new` is None for a deletion, `old` None for a new object. A thread lists,
    then watches from the list's resourceVersion; a dropped connection is watched again
    from the last resourceVersion seen, bookmarks included, so no change is missed; a
    410 Gone means that version is compacted away, so it lists again and the loop side
    reports the difference between what it had and what the list holds.
    """

    def __init__(
        self,
        list_objects: Callable[..., Any],
        namespace: str,
        *,
        label_selector: str | None = None,
        on_change: Change | None = None,
        watch_timeout: int = 300,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
        name: str = "",
    ) -> None:
        self.list_objects = list_objects
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.name = name or getattr(list_objects, "__name__", "objects")
        self.objects: dict[str, Json] = {}
        self.lists = 0  # full lists applied: 1 + re-lists after 410 Gone
        self.watches = 0  # watch requests made
        self._handlers: list[Change] = [on_change] if on_change is not None else []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._response: Any = None  # the live watch response, shut down by stop()
        self._response_lock = threading.Lock()
        self._synced: asyncio.Future[None] | None = None
        self._resource_version: str | None = None

    def add_handler(self, on_change: Change) -> None:
        self._handlers.append(on_change)

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start watching; call on the event loop. `synced()` tells when the first list is in."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._synced = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.name}", daemon=True)
        self._thread.start()

    async def synced(self) -> None:
        """Resolves once the first list has been applied to `objects`."""
        assert self._synced is not None, "start() the informer first"
        await asyncio.shield(self._synced)

    async def stop(self) -> None:
        self._stopping.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the thread's read at once
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.retry_delay
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._list()
                self._watch()
                delay = self.retry_delay
            except _Gone:
                logger.info("event=watch-expired kind=%s action=relist", self.name)
                self._resource_version = None
            except Exception as error:
                if self._stopping.is_set():
                    break
                if is_status(error, 410):
                    logger.info("event=watch-expired kind=%s action=relist", self.name)
                    self._resource_version = None
                    continue
                # One cut connection is routine (load balancers, API server restarts);
                # failing again is worth a warning.
                log = logger.info if delay == self.retry_delay else logger.warning
                log(
                    "event=watch-error kind=%s retry_in=%.1fs error=%r",
                    self.name,
                    delay,
                    api_error(error),
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, self.max_retry_delay)

    def _list(self) -> None:
        body = api_call(self.list_objects, self.namespace, label_selector=self.label_selector)
        items = body.get("items") or []
        self._resource_version = body["metadata"]["resourceVersion"]
        self._deliver(self._apply_list, items)

    def _watch(self) -> None:
        # Server-side timeouts vary a little, so many watchers do not reconnect together.
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.2))
        self.watches += 1
        response = self.list_objects(
            self.namespace,
            label_selector=self.label_selector,
            watch=True,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            # A silent connection longer than this is dead: reconnect.
            _request_timeout=(REQUEST_TIMEOUT[0], timeout + 30),
        )
        with self._response_lock:
            self._response = response
        try:
            if self._stopping.is_set():
                return
            for line in iter_resp_lines(response):
                if self._stopping.is_set():
                    return
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._deliver(self._apply_event, kind, obj)
                if version:
                    self._resource_version = version
        finally:
            with self._response_lock:
                self._response = None
            with contextlib.suppress(Exception):
                response.close()
                response.release_conn()

    def _deliver(self, apply: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(apply, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stopping.set()

    # -- the event loop side ---------------------------------------------------------------

    def _apply_list(self, items: list[Json]) -> None:
        self.lists += 1
        fresh = {item["metadata"]["name"]: item for item in items}
        for name in [n for n in self.objects if n not in fresh]:
            self._set(name, None)
        for name, item in fresh.items():
            old = self.objects.get(name)
            if old is None or _version(old) != _version(item):
                self._set(name, item)
        if self._synced is not None and not self._synced.done():
            self._synced.set_result(None)

    def _apply_event(self, kind: str, obj: Json) -> None:
        name = obj["metadata"]["name"]
        self._set(name, None if kind == "DELETED" else obj)

    def _set(self, name: str, new: Json | None) -> None:
        old = self.objects.pop(name, None)
        if new is not None:
            self.objects[name] = new
        elif old is None:
            return
        for handler in self._handlers:
            try:
                handler(name, old, new)
            except Exception:
                logger.exception("event=watch-handler-error kind=%s name=%s", self.name, name)


def _version(obj: Json) -> str | None:
    metadata = obj.get("metadata")
    return metadata.get("resourceVersion") if isinstance(metadata, dict) else None


# -- endpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One pod as an EndpointSlice lists it."""

    pod: str
    address: str  # "ip:port"
    ready: bool
    serving: bool


def slice_endpoints(endpoint_slice: Json, port_name: str | None = PORT_NAME) -> list[Endpoint]:
    """The pod endpoints of an EndpointSlice, with the port named `port_name`."""
    if endpoint_slice.get("addressType") not in (None, "IPv4", "IPv6"):
        return []
    port = None
    for entry in endpoint_slice.get("ports") or []:
        if port_name is None or entry.get("name") == port_name:
            port = entry.get("port")
            break
    if port is None:
        return []
    found = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        target = endpoint.get("targetRef") or {}
        if not addresses or target.get("kind", "Pod") != "Pod" or not target.get("name"):
            continue
        conditions = endpoint.get("conditions") or {}
        # Unknown (null) readiness means ready, as the EndpointSlice API defines it.
        ready = conditions.get("ready") is not False
        serving = conditions.get("serving", ready) is not False
        if conditions.get("terminating") is True:
            ready = False
        ip = addresses[0]
        host = f"[{ip}]" if ":" in ip else ip
        found.append(Endpoint(target["name"], f"{host}:{port}", ready, serving))
    return found


# -- the backend -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Told:
    """What the sink knows about one replica."""

    address: str
    draining: bool = False


@dataclass(frozen=True)
class ReplicaLog:
    """One pod and the last lines of its log, for the management API."""

    id: str
    state: str
    log: str


@dataclass(eq=False)
class _Tracked:
    key: DeploymentKey
    name: str
    desired: int
    template_hash: str | None = None
    generation: int = 0  # the Deployment's metadata.generation our last write produced
    scoring_timeout: float = 60.0
    seen: bool = False  # the Deployment exists (we wrote it, or the watch showed it)
    writing: bool = False  # a deploy() is writing: events until it returns are older
    settled: bool = False  # the current template has had `desired` replicas in rotation
    told: dict[str, _Told] = field(default_factory=dict)
    recycled: set[str] = field(default_factory=set)  # pods being replaced: never back
    # The last lines of each failing pod's crashed run: pod -> (restart count, lines).
    log_tails: dict[str, tuple[int, str]] = field(default_factory=dict)
    fetching: set[str] = field(default_factory=set)


class KubernetesBackend:
    """Runs each version as a Deployment and feeds the router the ready pod addresses."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        sink: ReplicaSink,
        *,
        image: str = DEFAULT_IMAGE,
        models_volume: ModelsVolume | None = None,
        pod_options: Callable[[DeploymentKey], PodOptions] | None = None,
        image_pull_policy: str | None = None,
        watch_timeout: int = 300,
    ) -> None:
        self.namespace = namespace
        self.sink = sink
        self.image = image
        self.models_volume = models_volume
        # The deployment configuration's resources and probe settings are not part of the
        # replica template; the router resolves them per version.
        self.pod_options = pod_options or (lambda key: PodOptions())
        self.image_pull_policy = image_pull_policy
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        discovery = client.DiscoveryV1Api(api_client)
        self.deployments = Informer(
            self._apps.list_namespaced_deployment,
            namespace,
            label_selector=REPLICA_SELECTOR,
            on_change=self._deployment_changed,
            watch_timeout=watch_timeout,
            name="deployments",
        )
        self.pods = Informer(
            self._core.list_namespaced_pod,
            namespace,
            label_selector=REPLICA_SELECTOR,
            on_change=self._pod_changed,
            watch_timeout=watch_timeout,
            name="pods",
        )
        self.endpoint_slices = Informer(
            discovery.list_namespaced_endpoint_slice,
            namespace,
            label_selector=LABEL_SERVICE_NAME,
            on_change=self._slice_changed,
            watch_timeout=watch_timeout,
            name="endpointslices",
        )
        self._informers = (self.deployments, self.pods, self.endpoint_slices)
        self._tracked: dict[DeploymentKey, _Tracked] = {}
        self._by_name: dict[str, _Tracked] = {}
        self._slices_by_service: dict[str, dict[str, Json]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- lifetime --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the watches and wait for their first lists (deploy() starts them too)."""
        self._start_watching()
        await asyncio.gather(*(informer.synced() for informer in self._informers))

    def _start_watching(self) -> None:
        for informer in self._informers:
            informer.start()

    async def close(self) -> None:
        """Stop watching. The pods keep running: they belong to the cluster, not to us."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(i.stop() for i in self._informers if i.started))
        for tracked in list(self._tracked.values()):
            for pod in list(tracked.told):
                self._forget(tracked, pod)
        self._tracked.clear()
        self._by_name.clear()

    # -- the ReplicaBackend interface ----------------------------------------------------

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int, warm: int
    ) -> None:
        if replicas < 0 or warm < 0:
            raise ValueError(f"{key}: replica counts must not be negative")
        if self._closing:
            raise RuntimeError("the Kubernetes backend is closed")
        options = self.pod_options(key)
        manifests = await asyncio.to_thread(
            build_manifests,
            key,
            template,
            replicas,
            namespace=self.namespace,
            image=self.image,
            options=options,
            models_volume=self.models_volume,
            image_pull_policy=self.image_pull_policy,
        )
        self._start_watching()
        tracked = self._track(key)
        tracked.desired = replicas
        tracked.template_hash = manifests.template_hash
        tracked.scoring_timeout = template.scoring_timeout
        tracked.settled = False
        tracked.writing = True
        try:
            written = await asyncio.to_thread(self._apply, manifests)
        finally:
            tracked.writing = False
        tracked.generation = int(written.get("metadata", {}).get("generation") or 0)
        tracked.seen = True
        logger.info(
            "event=deploy deployment=%s name=%s template=%s replicas=%d",
            key,
            tracked.name,
            manifests.template_hash,
            replicas,
        )
        if warm:
            logger.info("event=warm-ignored deployment=%s warm=%d", key, warm)
        self._refresh(tracked)

    async def track(self, key: DeploymentKey) -> None:
        """Report the replicas of an existing Deployment without writing anything:
        for a router that restarts next to a running cluster, or one that is not the
        leader and must not fight the leader's replica counts."""
        self._start_watching()
        await self.deployments.synced()
        tracked = self._track(key)
        self._adopt(tracked, self.deployments.objects.get(tracked.name))
        self._sync_endpoints(tracked)
        self._refresh(tracked)

    async def scale(self, key: DeploymentKey, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"{key}: replica count must not be negative, got {replicas}")
        tracked = self._get(key)
        try:
            await asyncio.to_thread(
                api_call,
                self._apps.patch_namespaced_deployment_scale,
                tracked.name,
                self.namespace,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"no Deployment {tracked.name} for {key}") from None
            raise
        tracked.desired = replicas
        logger.info("event=scale deployment=%s replicas=%d", key, replicas)
        self._refresh(tracked)

    async def delete(self, key: DeploymentKey) -> None:
        """Drain the replicas in rotation, then delete the version's objects."""
        tracked = self._tracked.pop(key, None)
        name = deployment_name(key)
        self._by_name.pop(name, None)
        if tracked is not None:
            drains = [
                _notify(self.sink.replica_draining, key, pod)
                for pod, told in tracked.told.items()
                if not told.draining
            ]
            waiting = [asyncio.ensure_future(d) for d in drains if d is not None]
            if waiting:
                await asyncio.wait(waiting, timeout=tracked.scoring_timeout + DRAIN_MARGIN)
        await asyncio.to_thread(self._delete_objects, key, name)
        if tracked is not None:
            for pod in list(tracked.told):
                self._forget(tracked, pod)
        logger.info("event=deleted deployment=%s name=%s", key, name)

    def status(self, key: DeploymentKey) -> DeploymentStatus:
        tracked = self._get(key)
        ready = sum(1 for told in tracked.told.values() if not told.draining)
        current = self._current_pods(tracked)
        starting = sum(1 for pod in current if not _pod_ready(pod))
        failure = next((m for pod in current if (m := self._failure(tracked, pod))), None)
        if failure is not None:
            state, message = DeploymentState.FAILED, failure
        elif (blocked := next((m for m in map(_unschedulable, current) if m), None)) is not None:
            state, message = DeploymentState.UNSCHEDULABLE, blocked
        elif not tracked.settled:
            state, message = DeploymentState.TRANSITIONING, ""
        elif tracked.desired > 0 and ready == 0:
            state, message = DeploymentState.UNHEALTHY, "no replica is ready"
        else:
            state, message = DeploymentState.HEALTHY, ""
        return DeploymentStatus(state, ready, starting, 0, tracked.desired, message)

    def ready_count(self, key: DeploymentKey) -> int:
        return sum(1 for told in self._get(key).told.values() if not told.draining)

    # -- beyond the interface --------------------------------------------------------------

    def recycle(self, key: DeploymentKey, replica_id: str) -> bool:
        """Replace a stuck replica: no new work for it, then delete its pod (the
        Deployment starts another). False if it is unknown or already on its way out."""
        tracked = self._tracked.get(key)
        told = tracked.told.get(replica_id) if tracked else None
        if tracked is None or told is None or told.draining:
            return False
        logger.info("event=recycle deployment=%s replica=%s", key, replica_id)
        told.draining = True
        tracked.recycled.add(replica_id)
        _notify(self.sink.replica_draining, key, replica_id)
        self._spawn(
            asyncio.to_thread(
                self._ignore_missing, self._core.delete_namespaced_pod, replica_id, self.namespace
            )
        )
        return True

    async def logs(self, key: DeploymentKey, tail: int = 100) -> tuple[ReplicaLog, ...]:
        """The last `tail` lines of every pod of the version, newest pods first; for a pod
        whose replica crashed, the lines of the run that crashed."""
        self._get(key)
        pods = sorted(
            (p for p in self.pods.objects.values() if _pod_key(p) == key),
            key=lambda p: p["metadata"].get("creationTimestamp") or "",
            reverse=True,
        )
        found = []
        for pod in pods:
            name = pod["metadata"]["name"]
            crashed = _pod_problem(pod) is not None
            try:
                text = await asyncio.to_thread(self._read_log, name, tail, crashed)
            except ApiException as error:
                text = f"(no log: {api_error(error)})"
            found.append(ReplicaLog(name, _pod_state(pod), text))
        return tuple(found)

    # -- writing ---------------------------------------------------------------------------

    def _apply(self, manifests: Manifests) -> Json:
        """Create or replace the version's objects (in a worker thread)."""
        if manifests.source is not None:
            try:
                api_call(self._core.create_namespaced_config_map, self.namespace, manifests.source)
            except ApiException as error:
                if error.status != 409:  # the same content exists already: its name is its hash
                    raise
        try:
            api_call(self._core.create_namespaced_service, self.namespace, manifests.service)
        except ApiException as error:
            if error.status != 409:  # a Service's spec follows from its name alone
                raise
        written, previous = self._apply_deployment(manifests.deployment)
        if manifests.source is not None:
            keep = {manifests.source["metadata"]["name"], *_source_maps(previous)}
            self._prune_sources(manifests.deployment["metadata"]["labels"], keep)
        return written

    def _apply_deployment(self, body: Json) -> tuple[Json, Json | None]:
        """(the Deployment as written, the one it replaced), with optimistic concurrency."""
        name = body["metadata"]["name"]
        try:
            return api_call(self._apps.create_namespaced_deployment, self.namespace, body), None
        except ApiException as error:
            if error.status != 409:
                raise
        for _ in range(CONFLICT_RETRIES):
            current = api_call(self._apps.read_namespaced_deployment, name, self.namespace)
            replacement = {
                **body,
                "metadata": {
                    **body["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
            }
            try:
                written = api_call(
                    self._apps.replace_namespaced_deployment, name, self.namespace, replacement
                )
            except ApiException as error:
                if error.status == 409:
                    continue  # changed between our read and write (a scale, a status update)
                raise
            return written, current
        raise RuntimeError(f"Deployment {name} kept changing while it was being replaced")

    def _prune_sources(self, labels: Mapping[str, str], keep: set[str]) -> None:
        """Delete source ConfigMaps of the version that neither the new nor the previous
        template mounts (pods of the previous one may still be running)."""
        selector = ",".join(
            f"{k}={v}" for k, v in (*_selector_items(labels), (LABEL_KIND, "source"))
        )
        listed = api_call(
            self._core.list_namespaced_config_map, self.namespace, label_selector=selector
        )
        for item in listed.get("items") or []:
            name = item["metadata"]["name"]
            if name not in keep:
                self._ignore_missing(self._core.delete_namespaced_config_map, name, self.namespace)

    def _delete_objects(self, key: DeploymentKey, name: str) -> None:
        # Background propagation: the Deployment goes now, its pods follow (and drain).
        self._ignore_missing(
            self._apps.delete_namespaced_deployment,
            name,
            self.namespace,
            propagation_policy="Background",
        )
        self._ignore_missing(self._core.delete_namespaced_service, name, self.namespace)
        self._prune_sources(_labels(key), keep=set())

    @staticmethod
    def _ignore_missing(method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            api_call(method, *args, **kwargs)
        except ApiException as error:
            if error.status != 404:
                raise

    # -- following the cluster -------------------------------------------------------------

    def _track(self, key: DeploymentKey) -> _Tracked:
        tracked = self._tracked.get(key)
        if tracked is None:
            name = deployment_name(key)
            tracked = _Tracked(key, name, desired=0)
            self._tracked[key] = tracked
            self._by_name[name] = tracked
        return tracked

    def _get(self, key: DeploymentKey) -> _Tracked:
        try:
            return self._tracked[key]
        except KeyError:
            raise LookupError(f"no Kubernetes deployment {key}") from None

    def _deployment_changed(self, name: str, old: Json | None, new: Json | None) -> None:
        tracked = self._by_name.get(name)
        if tracked is not None and new is not None:
            self._adopt(tracked, new)
            self._refresh(tracked)

    def _adopt(self, tracked: _Tracked, deployment: Json | None) -> None:
        """Take the replica count and template from the cluster's Deployment when it is at
        least as new as our last write (another router may have scaled or redeployed)."""
        if deployment is None or tracked.writing:
            return
        tracked.seen = True
        metadata = deployment.get("metadata") or {}
        generation = int(metadata.get("generation") or 0)
        if generation and generation < tracked.generation:
            return  # an event from before our own write
        replicas = (deployment.get("spec") or {}).get("replicas")
        if isinstance(replicas, int):
            tracked.desired = replicas
        template_hash = (metadata.get("annotations") or {}).get(LABEL_TEMPLATE)
        if template_hash and (generation or tracked.template_hash is None):
            if template_hash != tracked.template_hash:
                tracked.settled = False
            tracked.template_hash = template_hash

    def _pod_changed(self, name: str, old: Json | None, new: Json | None) -> None:
        key = _pod_key(new or old or {})
        tracked = self._tracked.get(key) if key is not None else None
        if tracked is not None:
            self._refresh(tracked)

    def _slice_changed(self, name: str, old: Json | None, new: Json | None) -> None:
        service = _service_name(new or old or {})
        if service is None:
            return
        slices = self._slices_by_service.setdefault(service, {})
        if new is None:
            slices.pop(name, None)
            if not slices:
                del self._slices_by_service[service]
        else:
            slices[name] = new
        tracked = self._by_name.get(service)
        if tracked is not None:
            self._sync_endpoints(tracked)
            self._refresh(tracked)

    def _sync_endpoints(self, tracked: _Tracked) -> None:
        """Tell the sink the difference between the EndpointSlices and what it knows."""
        wanted: dict[str, Endpoint] = {}
        for endpoint_slice in self._slices_by_service.get(tracked.name, {}).values():
            for endpoint in slice_endpoints(endpoint_slice):
                seen = wanted.get(endpoint.pod)
                # A pod listed twice (slices being rebalanced) is ready if either says so.
                if seen is None or (endpoint.ready and not seen.ready):
                    wanted[endpoint.pod] = endpoint
        key = tracked.key
        for pod in [p for p in tracked.told if p not in wanted]:
            self._forget(tracked, pod)
        tracked.recycled &= wanted.keys()
        for pod, endpoint in wanted.items():
            told = tracked.told.get(pod)
            if endpoint.ready and pod not in tracked.recycled:
                if told is not None and (told.draining or told.address != endpoint.address):
                    self._forget(tracked, pod)  # back in rotation: the pool starts afresh
                    told = None
                if told is None:
                    tracked.told[pod] = _Told(endpoint.address)
                    logger.info(
                        "event=replica-ready deployment=%s replica=%s address=%s",
                        key,
                        pod,
                        endpoint.address,
                    )
                    _notify(self.sink.replica_ready, key, pod, endpoint.address)
            elif told is not None and not told.draining:
                told.draining = True
                logger.info("event=replica-draining deployment=%s replica=%s", key, pod)
                _notify(self.sink.replica_draining, key, pod)

    def _forget(self, tracked: _Tracked, pod: str) -> None:
        if tracked.told.pop(pod, None) is not None:
            logger.info("event=replica-removed deployment=%s replica=%s", tracked.key, pod)
            _notify(self.sink.replica_removed, tracked.key, pod)

    def _refresh(self, tracked: _Tracked) -> None:
        """Re-derive what follows from the cached objects: settled, log tails to fetch."""
        current = self._current_pods(tracked)
        if tracked.seen and not tracked.settled:
            in_rotation = {p for p, told in tracked.told.items() if not told.draining}
            ready_current = sum(1 for pod in current if pod["metadata"]["name"] in in_rotation)
            if ready_current >= tracked.desired:
                tracked.settled = True
                logger.info("event=settled deployment=%s replicas=%d", tracked.key, ready_current)
        failing = [pod for pod in current if _pod_problem(pod) is not None]
        names = {pod["metadata"]["name"] for pod in failing}
        for gone in [name for name in tracked.log_tails if name not in names]:
            del tracked.log_tails[gone]
        for pod in failing:
            self._fetch_log_tail(tracked, pod)

    def _current_pods(self, tracked: _Tracked) -> list[Json]:
        """Live pods of the version's current template."""
        found = []
        for pod in self.pods.objects.values():
            metadata = pod["metadata"]
            if _pod_key(pod) != tracked.key or metadata.get("deletionTimestamp"):
                continue
            labels = metadata.get("labels") or {}
            if tracked.template_hash and labels.get(LABEL_TEMPLATE) != tracked.template_hash:
                continue
            found.append(pod)
        return found

    def _failure(self, tracked: _Tracked, pod: Json) -> str | None:
        problem = _pod_problem(pod)
        if problem is None:
            return None
        _, tail = tracked.log_tails.get(pod["metadata"]["name"], (0, ""))
        return (
            f"{problem}; last lines of pod {pod['metadata']['name']}:\n{tail}" if tail else problem
        )

    def _fetch_log_tail(self, tracked: _Tracked, pod: Json) -> None:
        """Fetch the last lines of a failing pod's crashed run, once per crash."""
        name, restarts = _log_key(pod)
        known = tracked.log_tails.get(name)
        if (known is not None and known[0] == restarts) or name in tracked.fetching:
            return
        if self._closing:
            return
        tracked.fetching.add(name)
        logger.warning(
            "event=replica-failed deployment=%s replica=%s restarts=%d message=%r",
            tracked.key,
            name,
            restarts,
            _pod_problem(pod),
        )

        async def fetch() -> None:
            try:
                tail = await asyncio.to_thread(self._read_log, name, LOG_TAIL_LINES, True)
                tracked.log_tails[name] = (restarts, tail.rstrip())
            except Exception as error:
                logger.warning("event=log-tail-error pod=%s error=%r", name, api_error(error))
            finally:
                tracked.fetching.discard(name)

        self._spawn(fetch())

    def _read_log(self, pod: str, tail: int, crashed: bool) -> str:
        """A pod's last lines; for a crashed replica, its previous run's (the one that
        crashed) when there is one, as `kubectl logs --previous` shows them."""
        read = self._core.read_namespaced_pod_log
        if crashed:
            try:
                text = api_text(
                    read, pod, self.namespace, container=CONTAINER, tail_lines=tail, previous=True
                )
                if text.strip():
                    return text
            except ApiException as error:
                if error.status not in (400, 404):  # no previous run (yet)
                    raise
        return api_text(read, pod, self.namespace, container=CONTAINER, tail_lines=tail)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# -- reading pods ----------------------------------------------------------------------------


def _selector_items(labels: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    return ((k, labels[k]) for k in (LABEL_SERVICE, LABEL_VERSION))


def _service_name(endpoint_slice: Json) -> str | None:
    labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_SERVICE_NAME)


def _pod_key(pod: Json) -> DeploymentKey | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    service, version = labels.get(LABEL_SERVICE), labels.get(LABEL_VERSION)
    return DeploymentKey(service, version) if service and version else None


def _source_maps(deployment: Json | None) -> list[str]:
    if deployment is None:
        return []
    spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return [v["configMap"]["name"] for v in spec.get("volumes") or [] if "configMap" in v]


def _container_status(pod: Json) -> Json:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return dict(status)
    return {}


def _pod_ready(pod: Json) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _log_key(pod: Json) -> tuple[str, int]:
    return pod["metadata"]["name"], int(_container_status(pod).get("restartCount") or 0)


def _pod_problem(pod: Json) -> str | None:
    """Why a pod's replica cannot run, if it cannot (init failure, crash loop, bad image)."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return f"replica {name} failed: {status.get('reason') or ''} {status.get('message') or ''}".rstrip()
    container = _container_status(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    if not container.get("ready") and INIT_FAILED in (
        terminated.get("exitCode"),
        last.get("exitCode"),
    ):
        return (
            f"replica {name} failed to start: loading the entry script or init() raised"
            f" (exit code {INIT_FAILED})"
        )
    reason = waiting.get("reason")
    if reason == "CrashLoopBackOff":
        code = terminated.get("exitCode", last.get("exitCode"))
        restarts = container.get("restartCount") or 0
        return (
            f"replica {name} is crash-looping (restarted {restarts} times, last exit code {code})"
        )
    if reason in START_FAILURES:
        return f"replica {name} cannot start: {reason}: {waiting.get('message') or ''}".rstrip(": ")
    return None


def _unschedulable(pod: Json) -> str | None:
    """The scheduler's reason a Pending pod has no node (the FailedScheduling message)."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            message = condition.get("message") or "no node can run it"
            return f"replica {pod['metadata']['name']} cannot be scheduled: {message}"
    return None


def _pod_state(pod: Json) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    if _pod_problem(pod) is not None:
        return "Failed"
    if _unschedulable(pod) is not None:
        return "Unschedulable"
    return "Ready" if _pod_ready(pod) else "Starting"


def _notify(method: Callable[..., object], *args: object) -> Awaitable[None] | None:
    """Tell the sink; a sink error is logged, never allowed to break the bookkeeping."""
    try:
        return method(*args)  # type: ignore[return-value]
    except Exception:
        logger.exception("event=sink-error call=%s", getattr(method, "__name__", method))
        return None
