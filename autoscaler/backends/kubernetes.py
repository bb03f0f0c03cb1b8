"""Replicas as pods: one apps/v1 Deployment per version, found through EndpointSlices.

`deploy()` writes the objects `kube_manifests.build_manifests` makes of a version: a
ConfigMap with the source files (unless the image carries them), a headless Service whose
EndpointSlices list the pods, and the Deployment itself. `scale()` goes through the scale
subresource, so it never races a template change. Nothing is polled: three watches
(`kube_watch.Informer` on Deployments, Pods, EndpointSlices) keep a local copy of the
cluster, from which `status()` answers synchronously and the router's `ReplicaSink`
learns which pod addresses take traffic.

The `kubernetes` client is synchronous, so every API call runs in a worker thread and
each watch in a thread of its own. What the sink is told is derived from the current
EndpointSlices and compared with what it was told before, so a re-list or a replayed
event never tells it anything twice. Several routers may follow one Deployment: the one
that deploys writes it, the others `track()` it and only read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentState,
    DeploymentStatus,
    ReplicaLog,
    ReplicaSink,
    ReplicaTemplate,
    notify_sink,
)
from autoscaler.backends.kube_api import (
    CONFLICT_RETRIES,
    MERGE_PATCH,
    ApiPermission,
    Json,
    api_call,
    api_error,
    api_text,
)
from autoscaler.backends.kube_manifests import (
    CONTAINER,
    DEFAULT_IMAGE,
    LABEL_KIND,
    LABEL_SERVICE,
    LABEL_SERVICE_NAME,
    LABEL_TEMPLATE,
    LABEL_VERSION,
    REPLICA_SELECTOR,
    Manifests,
    ModelsVolume,
    PodOptions,
    build_manifests,
    deployment_name,
    replica_labels,
)
from autoscaler.backends.kube_watch import Endpoint, Informer, slice_endpoints

logger = logging.getLogger("mlfe.autoscaler.kubernetes")

# The runtime's exit code when loading the entry script or running init() failed.
INIT_FAILED = 3
LOG_TAIL_LINES = 20
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

RBAC_RULES: tuple[ApiPermission, ...] = (
    ApiPermission("apps", "deployments", ("create", "delete", "get", "list", "update", "watch")),
    ApiPermission("apps", "deployments/scale", ("patch",)),
    ApiPermission("", "services", ("create", "delete")),
    ApiPermission("", "configmaps", ("create", "delete", "list")),
    ApiPermission("", "pods", ("delete", "list", "watch")),
    ApiPermission("", "pods/log", ("get",)),
    ApiPermission("discovery.k8s.io", "endpointslices", ("list", "watch")),
)


@dataclass(eq=False)
class _Told:
    """What the sink knows about one replica."""

    address: str
    draining: bool = False


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
        manifests = await self._manifests(key, template, replicas)
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

    async def track(self, key: DeploymentKey, *, wait: float = 0.0) -> None:
        """Report the replicas of an existing Deployment without writing anything:
        for a router that restarts next to a running cluster, or one that follows
        what another router deployed and must not fight over replica counts.

        With `wait`, give the watch that long to show a Deployment another router is
        creating right now, so its replica count is known when this returns.
        """
        self._start_watching()
        await self.deployments.synced()
        tracked = self._track(key)
        deadline = asyncio.get_running_loop().time() + wait
        while tracked.name not in self.deployments.objects:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        self._adopt(tracked, self.deployments.objects.get(tracked.name))
        self._sync_endpoints(tracked)
        self._refresh(tracked)

    async def adopt(self, key: DeploymentKey, template: ReplicaTemplate) -> bool:
        """Track the version's Deployment if the cluster runs `template` already (a
        router restarting next to running replicas): True then, and nothing is written.
        False if it must be deployed (missing, or another template)."""
        manifests = await self._manifests(key, template, 0)
        self._start_watching()
        await self.deployments.synced()
        existing = self.deployments.objects.get(deployment_name(key))
        annotations = ((existing or {}).get("metadata") or {}).get("annotations") or {}
        if existing is None or annotations.get(LABEL_TEMPLATE) != manifests.template_hash:
            return False
        await self.track(key)
        self._get(key).scoring_timeout = template.scoring_timeout
        logger.info("event=adopted deployment=%s name=%s", key, deployment_name(key))
        return True

    def untrack(self, key: DeploymentKey) -> None:
        """Stop following a version another router deletes; its pods leave the sink."""
        tracked = self._tracked.pop(key, None)
        if tracked is None:
            return
        self._by_name.pop(tracked.name, None)
        for pod in list(tracked.told):
            self._forget(tracked, pod)

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
                notify_sink(self.sink.replica_draining, key, pod)
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
        notify_sink(self.sink.replica_draining, key, replica_id)
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

    async def _manifests(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int
    ) -> Manifests:
        # In a worker thread: the source files are read into the ConfigMap.
        return await asyncio.to_thread(
            build_manifests,
            key,
            template,
            replicas,
            namespace=self.namespace,
            image=self.image,
            options=self.pod_options(key),
            models_volume=self.models_volume,
            image_pull_policy=self.image_pull_policy,
        )

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
        self._prune_sources(replica_labels(key), keep=set())

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
                    notify_sink(self.sink.replica_ready, key, pod, endpoint.address)
            elif told is not None and not told.draining:
                told.draining = True
                logger.info("event=replica-draining deployment=%s replica=%s", key, pod)
                notify_sink(self.sink.replica_draining, key, pod)

    def _forget(self, tracked: _Tracked, pod: str) -> None:
        if tracked.told.pop(pod, None) is not None:
            logger.info("event=replica-removed deployment=%s replica=%s", tracked.key, pod)
            notify_sink(self.sink.replica_removed, tracked.key, pod)

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
