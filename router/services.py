"""The control plane's core: stored service records in, running replicas and routes out.

`ServiceManager` is the one place that turns a management request into a store change and
a stored record into what runs: the registry's routes (auth, traffic) and the backend's
replicas (through the control loop). Every change is written to the store first, in one
transaction, then published to the registry, then handed to the backend, so a crash at
any point leaves the store saying what should run and a restart makes it so.

A change that starts or replaces replicas is an *operation*: it runs in the background
until the backend says the versions it touched settled (Healthy, Unhealthy, Failed or
Unschedulable), and until then any other change to that service gets 409. Key rotation
and tokens are not operations; they only touch the store and the routes.

A version created next to serving ones gets no share of the traffic until one of its
replicas has been in rotation, so adding a version never sends requests to a queue that
has nobody to serve it; the data plane routes its share to the default meanwhile.

On Kubernetes several routers share one store and one set of Deployments. The router
that takes a management request writes the store and the Deployments; the others learn
of the change from a watch on the store (`service_changed_elsewhere`) and follow it
without writing anything: routes, tracked Deployments, autoscaler bounds. Replicas
outlive routers there, so a restart adopts the Deployments that run the stored
template as they are, at the cluster's replica count. Store calls run in worker threads:
the cluster store waits on the API server, and one code path serves both stores (measured
here: a SQLite change ~0.5 ms with its fsync, more on a slow disk; the hop ~0.1 ms).

A version whose inferenceConfig lists replica urls runs nothing of ours: it has exactly
those replicas, and the backend (MixedBackend) health-checks them. Every router probes
them itself, also one that only follows another's change.

The requests and refusals are in `router.service_requests`, the version rules and what
runs a version in `router.versions`, the JSON views and derived states in
`router.service_views`: this module is the orchestration only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, runtime_checkable

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentStatus,
    ReplicaBackend,
    ReplicaLog,
    ReplicaTemplate,
)
from autoscaler.backends.kube_manifests import PodOptions
from autoscaler.loop import Autoscale, ControlLoop, FixedReplicas
from router.auth import generate_key, issue_token
from router.config import (
    ConfigError,
    parse_deployment_config,
    validate_service_name,
    validate_version_name,
)
from router.registry import Registry, ServiceSpec
from router.service_requests import (
    AuthRequest,
    Busy,
    InvalidRequest,
    KeyType,
    NewService,
    NewVersion,
    UnknownService,
    VersionChanges,
)
from router.service_views import (
    ServiceState,
    StateCollector,
    VersionHealth,
    iso_time,
    service_view,
    state_of,
    version_error,
    worst,
)
from router.store import Conflict, NotFound, ServiceRecord, Store, StoreError, VersionRecord
from router.versions import (
    MAX_VERSIONS,
    Rollout,
    apply_source,
    check_auth,
    check_no_other_control,
    check_versions,
    from_urls,
    given_keys,
    merged_deployment,
    normalized_deployment,
    pod_options_for,
    rollout_for,
    scaling_for,
    template_for,
    valid_percentile,
    version_record,
    version_spec,
)

logger = logging.getLogger("mlfe.services")

# How long a router following another's change waits for the Deployment to show up.
FOLLOW_WAIT = 10.0
# Retries (seconds, doubling) of catching up with a change the shared store did not tell.
SYNC_RETRY = 1.0
MAX_SYNC_RETRY = 30.0
DEFAULT_TOKEN_LIFETIME = 3600.0
MAX_LOG_TAIL = 10_000


@runtime_checkable
class SupportsRecycle(Protocol):
    """A backend that can replace one stuck replica (LocalBackend can)."""

    def recycle(self, key: DeploymentKey, replica_id: str) -> bool: ...


@runtime_checkable
class SharedBackend(Protocol):
    """A backend whose replicas outlive this router and which other routers use too
    (KubernetesBackend): it can follow a deployment without writing it."""

    async def adopt(self, key: DeploymentKey, template: ReplicaTemplate) -> bool:
        """Follow the deployment if it runs `template` already; False: deploy it."""
        ...

    async def track(self, key: DeploymentKey, *, wait: float = 0.0) -> None:
        """Follow the deployment as it is, whatever it runs."""
        ...

    def untrack(self, key: DeploymentKey) -> None:
        """Stop following a deployment someone else deletes."""
        ...


@runtime_checkable
class SharedWithUrls(SharedBackend, Protocol):
    """A shared backend that also serves replica urls (SharedMixedBackend)."""

    def untrack_shared(self, key: DeploymentKey) -> None:
        """Stop following the shared deployment of `key` without deleting anything."""
        ...


@runtime_checkable
class SupportsLogs(Protocol):
    """A backend that can show its replicas' logs (all of mlfe's can)."""

    async def logs(self, key: DeploymentKey, tail: int = 100) -> tuple[ReplicaLog, ...]: ...


P = ParamSpec("P")
R = TypeVar("R")


def _one_change_at_a_time(
    method: Callable[Concatenate[ServiceManager, P], Awaitable[R]],
) -> Callable[Concatenate[ServiceManager, P], Awaitable[R]]:
    """Run a change with the manager's change lock held: its store call and what follows
    from it happen before another change, or a change from another router, looks."""

    @functools.wraps(method)
    async def serialized(self: ServiceManager, *args: P.args, **kwargs: P.kwargs) -> R:
        async with self._changing:
            return await method(self, *args, **kwargs)

    return serialized


# -- live state ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Operation:
    kind: str
    versions: tuple[str, ...]
    started_at: float
    # Versions not handed to the backend yet: the backend still shows what ran before.
    deploying: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    working: bool = True  # its deploys (or deletes) are still being made
    finished: bool = False
    outcome: ServiceState | None = None
    error: str | None = None


@dataclass(eq=False)
class _Live:
    """A service as this router runs it: its record plus what is not in the store."""

    record: ServiceRecord
    # Versions that have had a replica in rotation (or were restored): they get their
    # configured traffic. The others get 0 % until then.
    serving: set[str] = field(default_factory=set)
    # Versions deleted from the record whose replicas are still draining.
    retiring: dict[str, VersionRecord] = field(default_factory=dict)
    # Why the backend refused to deploy a version, by version.
    errors: dict[str, str] = field(default_factory=dict)
    operation: _Operation | None = None
    deleting: bool = False
    routing_default: str | None = None


class ServiceManager:
    """Services: stored, published to the registry, deployed through the control loop."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        control_loop: ControlLoop,
        backend: ReplicaBackend,
        *,
        public_url: str,
        clock: Callable[[], float] = time.time,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        settle_interval: float = 0.1,
        persist_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._registry = registry
        self._loop = control_loop
        self._backend = backend
        self.public_url = public_url.rstrip("/")
        self._clock = clock
        self._token_lifetime = token_lifetime
        self._settle_interval = settle_interval
        self._persist_interval = persist_interval
        self._services: dict[str, _Live] = {}
        # Replica counts as last written to the store, so unchanged ones cost nothing.
        self._saved_counts: dict[tuple[str, str], int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._persist_task: asyncio.Task[None] | None = None
        self._changing = asyncio.Lock()
        self._closed = False
        # Changes told before restore() lists the store are in what it lists.
        self._following = False
        # Services a store watch said changed: being caught up with, and again after that.
        self._syncing: set[str] = set()
        self._sync_again: set[str] = set()
        if isinstance(backend, SupportsRecycle):
            registry.on_replica_timeout = self._recycle
        registry.metrics.registry.register(StateCollector(self.states))

    # -- lifetime ---------------------------------------------------------------------

    async def restore(self) -> None:
        """Publish every stored service and start its replicas, at the stored counts;
        with a backend whose replicas outlive the router, take over those that run the
        stored template as they are.

        Also starts writing replica counts back to the store as the autoscaler changes
        them. Call once, on start.
        """
        async with self._changing:
            self._following = True
            # Read once here, so routes never wait on the store for it.
            await self._store_call(self._store.signing_secret)
            self._saved_counts = dict(await self._store_call(self._store.all_desired_replicas))
            for record in await self._store_call(self._store.list_services):
                live = _Live(record, serving={v.name for v in record.versions})
                self._services[record.name] = live
                self._publish(live)
                counts = {
                    v.name: self._saved_counts.get((record.name, v.name)) for v in record.versions
                }
                self._start_operation(
                    live,
                    "restore",
                    tuple(v.name for v in record.versions),
                    functools.partial(self._restore_all, live, record.versions, counts),
                )
                logger.info(
                    "event=service-restored service=%s versions=%d",
                    record.name,
                    len(record.versions),
                )
        if self._persist_task is None:
            self._persist_task = asyncio.create_task(self._persist_counts(), name="persist counts")

    async def _restore_all(
        self, live: _Live, versions: Iterable[VersionRecord], counts: Mapping[str, int | None]
    ) -> None:
        for version in versions:
            if not await self._adopt(live, version):
                await self._deploy(live, version, restore_count=counts.get(version.name))

    async def _adopt(self, live: _Live, version: VersionRecord) -> bool:
        """Take over a version's running replicas as they are, if the backend keeps
        replicas across restarts and runs this version's template: no rollout, no
        reset of the count the autoscaler reached."""
        backend = self._backend
        if not isinstance(backend, SharedBackend):
            return False
        key = DeploymentKey(live.record.name, version.name)
        scaling, _ = scaling_for(version.deployment)
        try:
            if not await backend.adopt(key, template_for(key.service, version)):
                return False
            # A numReplicas change may have been stored but not applied (a crash).
            fixed = scaling.replicas if isinstance(scaling, FixedReplicas) else None
            if fixed is not None and self._backend.status(key).desired != fixed:
                await self._backend.scale(key, fixed)
            await self._loop.follow(key, scaling)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("event=adopt-failed deployment=%s error=%r", key, str(error))
            return False
        self._deployed(live, version.name)
        return True

    async def close(self) -> None:
        """Stop background work (operations, count persistence); the replicas stay, the
        backend's owner closes it. Counts are saved one last time."""
        self._closed = True
        tasks = [t for t in (self._persist_task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._persist_task = None
        await self._save_counts()

    # -- following other routers ------------------------------------------------------

    def service_changed_elsewhere(self, name: str) -> None:
        """A watch on the shared store saw service `name` change (perhaps by this router's
        own hand): catch up with it in the background. Events that come meanwhile are
        folded into one more round."""
        if self._closed or not self._following:
            return
        if name in self._syncing:
            self._sync_again.add(name)
            return
        self._syncing.add(name)
        self._spawn(self._sync_rounds(name), f"sync {name}")

    async def _sync_rounds(self, name: str) -> None:
        delay = SYNC_RETRY
        try:
            while True:
                self._sync_again.discard(name)
                try:
                    await self._sync(name)
                    delay = SYNC_RETRY
                except StoreError as error:
                    # Unreachable for now: no later event may come to say it again.
                    logger.warning(
                        "event=sync-error service=%s retry_in=%.0fs error=%s", name, delay, error
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_SYNC_RETRY)
                    self._sync_again.add(name)
                if name not in self._sync_again:
                    return
        finally:
            self._syncing.discard(name)
            self._sync_again.discard(name)

    @_one_change_at_a_time
    async def _sync(self, name: str) -> None:
        record = await self._store_call(self._store.get_service, name)
        live = self._services.get(name)
        if live is not None and live.deleting:
            return  # this router deletes it: _tear_down looks again once it is gone
        if record is None:
            if live is not None:
                await self._forget(live)
        elif live is None:
            self._follow_new(record)
        elif record.created_at != live.record.created_at:
            await self._forget(live)  # deleted and created anew elsewhere
            self._follow_new(record)
        elif record.revision > live.record.revision:
            await self._follow_change(live, record)

    def _follow_new(self, record: ServiceRecord) -> None:
        live = _Live(record, serving={v.name for v in record.versions})
        self._services[record.name] = live
        self._publish(live)
        self._start_operation(
            live,
            "follow",
            tuple(v.name for v in record.versions),
            functools.partial(self._follow_all, live, record.versions),
        )
        logger.info("event=service-followed service=%s revision=%d", record.name, record.revision)

    async def _follow_change(self, live: _Live, record: ServiceRecord) -> None:
        """What the router that made the change did, without its writes: routes, the
        versions to follow anew, new autoscaler settings."""
        old, live.record = live.record, record
        name = record.name
        follow = []
        for version in record.versions:
            before = old.version(version.name)
            how = "roll" if before is None else rollout_for(before, version)
            key = DeploymentKey(name, version.name)
            scaling, _ = scaling_for(version.deployment)
            if how == "roll":
                follow.append(version)
            elif how == "scale" and isinstance(scaling, Autoscale) and self._loop.controls(key):
                self._loop.reconfigure(key, scaling.config)
        for version in old.versions:
            if record.version(version.name) is None:
                live.serving.discard(version.name)
                live.errors.pop(version.name, None)
                self._saved_counts.pop((name, version.name), None)
                await self._unfollow(DeploymentKey(name, version.name))
        self._publish(live)
        if follow:
            self._start_operation(
                live,
                "follow",
                tuple(v.name for v in follow),
                functools.partial(self._follow_all, live, follow),
            )
        logger.info(
            "event=service-followed service=%s revision=%d redeploy=%s",
            name,
            record.revision,
            ",".join(v.name for v in follow) or "none",
        )

    async def _follow_all(self, live: _Live, versions: Iterable[VersionRecord]) -> None:
        for version in versions:
            await self._follow(live, version)

    async def _follow(self, live: _Live, version: VersionRecord) -> None:
        """Follow a version's replicas and control their count, deploying nothing."""
        key = DeploymentKey(live.record.name, version.name)
        if version.inference.replica_urls:
            # Replica urls are no one's to share: every router probes them itself. What
            # the version ran before is the writing router's to delete.
            if isinstance(self._backend, SharedWithUrls):
                self._backend.untrack_shared(key)
            await self._deploy(live, version)
            return
        scaling, _ = scaling_for(version.deployment)
        try:
            if isinstance(self._backend, SharedBackend):
                await self._backend.track(key, wait=FOLLOW_WAIT)
            await self._loop.follow(key, scaling)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            live.errors[version.name] = f"cannot follow its replicas: {error}"
            logger.error("event=follow-failed deployment=%s error=%r", key, str(error))
        self._deployed(live, version.name)

    async def _unfollow(self, key: DeploymentKey) -> None:
        await self._loop.release(key)
        if isinstance(self._backend, SharedBackend):
            self._backend.untrack(key)

    async def _forget(self, live: _Live) -> None:
        """Another router deleted the service (and deletes its replicas)."""
        name = live.record.name
        live.deleting = True
        operation = live.operation
        if operation is not None and operation.task is not None:
            operation.task.cancel()
            await asyncio.wait({operation.task})
        for version in [v.name for v in live.record.versions] + list(live.retiring):
            self._saved_counts.pop((name, version), None)
            await self._unfollow(DeploymentKey(name, version))
        self._registry.remove_service(name)
        if self._services.get(name) is live:
            del self._services[name]
        logger.info("event=service-forgotten service=%s", name)

    # -- reading ----------------------------------------------------------------------

    def list_views(self) -> list[dict[str, Any]]:
        return [self._view(live) for _, live in sorted(self._services.items()) if not live.deleting]

    def view(self, name: str) -> dict[str, Any]:
        return self._view(self._live(name))

    def states(self) -> dict[str, ServiceState]:
        """Every service's derived state, by name."""
        return {view["name"]: view["state"] for view in self.list_views()}

    def keys(self, name: str) -> dict[str, str]:
        record = self._live(name).record
        return {"primaryKey": record.primary_key, "secondaryKey": record.secondary_key}

    def token(self, name: str) -> dict[str, str]:
        """A fresh access token for a service in token auth mode."""
        live = self._live(name)
        if live.record.auth_mode != "token":
            raise InvalidRequest(
                f"service {name!r} uses {live.record.auth_mode} auth, not token auth: tokens are"
                " issued only for services deployed with tokenAuthEnabled true"
            )
        issued = issue_token(
            self._store.signing_secret(), name, lifetime=self._token_lifetime, now=self._clock()
        )
        logger.info("event=token-issued service=%s expires=%s", name, iso_time(issued.expires_at))
        return {
            "accessToken": issued.token,
            "tokenType": "Bearer",
            "refreshAfter": iso_time(issued.refresh_after),
            "expiryOn": iso_time(issued.expires_at),
        }

    def pod_options(self, key: DeploymentKey) -> PodOptions:
        """The Kubernetes backend's `pod_options`: what the version's deploymentconfig.json
        asks of its pods (resources, liveness probe)."""
        live = self._services.get(key.service)
        version = None
        if live is not None:
            version = live.record.version(key.version) or live.retiring.get(key.version)
        return PodOptions() if version is None else pod_options_for(version.deployment)

    async def logs(self, name: str, version: str | None = None, tail: int = 100) -> dict[str, Any]:
        """The last `tail` lines of each replica's log of one version (default: the default),
        as the backend keeps them (files beside the local replicas, the pods' logs)."""
        live = self._live(name)
        if not 1 <= tail <= MAX_LOG_TAIL:
            raise InvalidRequest(f"tail must be between 1 and {MAX_LOG_TAIL}, got {tail}")
        if version is None:
            default = live.record.default_version
            version = default.name if default else live.record.versions[0].name
        elif live.record.version(version) is None:
            raise UnknownService(f"service {name!r} has no version {version!r}")
        found: tuple[ReplicaLog, ...] = ()
        if isinstance(self._backend, SupportsLogs):
            # LookupError: not deployed (its deploy failed; the view says why).
            with contextlib.suppress(LookupError):
                found = await self._backend.logs(DeploymentKey(name, version), tail)
        replicas = [{"id": r.id, "state": r.state, "log": r.log} for r in found]
        return {"version": version, "replicas": replicas}

    # -- services ---------------------------------------------------------------------

    @_one_change_at_a_time
    async def create_service(self, request: NewService) -> dict[str, Any]:
        name = validate_service_name(request.name)
        self._check_free(name)
        deployment = request.deployment
        version_name = deployment.version_name or name
        validate_version_name(version_name, "deploymentConfig.versionName")
        auth_mode = deployment.auth_mode
        version = version_record(
            version_name,
            deployment,
            request.source,
            auth_mode,
            traffic=deployment.traffic_percentile or 0.0,
            is_default=True,
        )
        version = from_urls(version)
        record = ServiceRecord(
            name=name,
            auth_mode=auth_mode,
            primary_key=deployment.primary_key or generate_key(),
            secondary_key=deployment.secondary_key or generate_key(),
            versions=(version,),
        )
        check_versions(record.versions)
        record = await self._write(self._store.create_service, record)
        live = _Live(record, serving={version.name})
        self._services[name] = live
        self._publish(live)
        self._start_operation(live, "create", (version.name,), lambda: self._deploy(live, version))
        logger.info(
            "event=service-created service=%s version=%s auth=%s", name, version.name, auth_mode
        )
        return self._view(live)

    @_one_change_at_a_time
    async def update_service(self, name: str, changes: VersionChanges) -> dict[str, Any]:
        """Azure's service.update: changes to the default version; auth and keys in the
        deploymentConfig change the service's."""
        live = self._live(name)
        self._check_idle(live)
        record = live.record
        default = record.default_version
        assert default is not None  # the version rules keep exactly one
        auth_mode, primary, secondary = record.auth_mode, record.primary_key, record.secondary_key
        new_version = default
        if changes.deployment_changes is not None:
            merged = merged_deployment(default.deployment, changes.deployment_changes)
            auth_mode = merged.auth_mode
            primary = merged.primary_key or primary
            secondary = merged.secondary_key or secondary
            new_version = replace(new_version, deployment=merged)
        new_version = from_urls(apply_source(new_version, changes), given_keys(changes))
        new_version = replace(
            new_version,
            deployment=normalized_deployment(new_version.deployment, auth_mode),
            description=new_version.deployment.description,
        )
        versions = tuple(
            new_version
            if v.name == default.name
            else replace(v, deployment=normalized_deployment(v.deployment, auth_mode))
            for v in record.versions
        )
        updated = replace(
            record,
            auth_mode=auth_mode,
            primary_key=primary,
            secondary_key=secondary,
            versions=versions,
        )
        view, _ = await self._change(live, updated, "update", changed=default)
        return view

    @_one_change_at_a_time
    async def regenerate_key(
        self, name: str, key_type: KeyType, value: str | None = None
    ) -> dict[str, str]:
        """A new primary or secondary key, in force in the data plane once this returns."""
        live = self._live(name)
        if value is not None:
            try:
                parse_deployment_config({"keys": {"primaryKey": value}})
            except ConfigError:
                raise InvalidRequest(
                    "keyValue must be 1 to 256 visible ASCII characters without spaces"
                ) from None
        new_key = value if value is not None else generate_key()
        if key_type == "Primary":
            updated = replace(live.record, primary_key=new_key)
        elif key_type == "Secondary":
            updated = replace(live.record, secondary_key=new_key)
        else:
            raise InvalidRequest(f"keyType must be Primary or Secondary, got {key_type!r}")
        live.record = await self._write(self._store.update_service, updated)
        self._publish(live)
        logger.info("event=key-regenerated service=%s key=%s", name, key_type)
        return self.keys(name)

    @_one_change_at_a_time
    async def delete_service(self, name: str) -> None:
        """Forget a service; its replicas drain and stop in the background.

        Allowed while an operation is in progress (it is cancelled): deleting is how a
        user gets out of a deployment that will not settle.
        """
        live = self._live(name)
        await self._write(self._store.delete_service, name)
        live.deleting = True
        # Taken before the cancellation, which may forget a retiring version.
        versions = [v.name for v in live.record.versions] + list(live.retiring)
        operation = live.operation
        if operation is not None and operation.task is not None:
            operation.task.cancel()
        for version in versions:
            self._saved_counts.pop((name, version), None)
        self._spawn(self._tear_down(live, versions), f"delete {name}")
        logger.info("event=service-deleted service=%s", name)

    async def _tear_down(self, live: _Live, versions: list[str]) -> None:
        name = live.record.name
        operation = live.operation
        if operation is not None and operation.task is not None:
            await asyncio.wait({operation.task})
        try:
            # Replicas drain while the routes still know them, so requests in flight finish.
            await asyncio.gather(*(self._delete_deployment(name, v) for v in versions))
        finally:
            self._registry.remove_service(name)
            if self._services.get(name) is live:
                del self._services[name]
            logger.info("event=service-removed service=%s", name)
            if isinstance(self._backend, SharedBackend):
                # Another router may have created it anew while it was being torn down.
                self.service_changed_elsewhere(name)

    # -- versions ---------------------------------------------------------------------

    @_one_change_at_a_time
    async def create_version(self, name: str, request: NewVersion) -> dict[str, Any]:
        live = self._live(name)
        self._check_idle(live)
        version_name = validate_version_name(request.name)
        record = live.record
        if record.version(version_name) is not None or version_name in live.retiring:
            raise Busy(f"service {name!r} has a version {version_name!r} already")
        if len(record.versions) >= MAX_VERSIONS:
            raise InvalidRequest(
                f"service {name!r} has {len(record.versions)} versions, the most allowed:"
                " delete one first"
            )
        check_auth(record, request.auth)
        traffic = request.traffic_percentile
        if traffic is None:
            traffic = request.deployment.traffic_percentile or 0.0
        version = version_record(
            version_name,
            request.deployment,
            request.source,
            record.auth_mode,
            traffic=traffic,
            is_default=request.is_default,
            is_control=request.is_control,
        )
        version = from_urls(version)
        if request.is_control:
            check_no_other_control(record.versions, version_name)
        others = record.versions
        if request.is_default:
            others = tuple(replace(v, is_default=False) for v in others)
        updated = replace(record, versions=(*others, version))
        view, _ = await self._change(live, updated, "create-version", created=version)
        return view

    @_one_change_at_a_time
    async def update_version(
        self, name: str, version_name: str, changes: VersionChanges
    ) -> tuple[dict[str, Any], bool]:
        """Apply a PATCH; returns the view and whether replicas change (an operation)."""
        live = self._live(name)
        self._check_idle(live)
        record = live.record
        current = record.version(version_name)
        if current is None:
            raise UnknownService(f"service {name!r} has no version {version_name!r}")
        new = current
        if changes.traffic_percentile is not None:
            new = replace(new, traffic_percentile=valid_percentile(changes.traffic_percentile))
        if changes.is_control is True:
            check_no_other_control(record.versions, version_name)
        if changes.is_control is not None:
            new = replace(new, is_control=changes.is_control)
        if changes.is_default is False and current.is_default:
            raise InvalidRequest(
                f"version {version_name!r} is the default: make another version the default"
                " instead (isDefault true on it)"
            )
        if changes.is_default:
            new = replace(new, is_default=True)
        if changes.deployment_changes is not None:
            merged = merged_deployment(current.deployment, changes.deployment_changes)
            check_auth(
                record,
                AuthRequest(merged.auth_mode, merged.primary_key, merged.secondary_key),
            )
            new = replace(
                new,
                deployment=normalized_deployment(merged, record.auth_mode),
                description=merged.description,
            )
        new = from_urls(apply_source(new, changes), given_keys(changes))
        versions = tuple(
            new
            if v.name == version_name
            else (replace(v, is_default=False) if changes.is_default else v)
            for v in record.versions
        )
        updated = replace(record, versions=versions)
        return await self._change(live, updated, "update-version", changed=current)

    @_one_change_at_a_time
    async def delete_version(self, name: str, version_name: str) -> dict[str, Any]:
        live = self._live(name)
        self._check_idle(live)
        record = live.record
        version = record.version(version_name)
        if version is None:
            raise UnknownService(f"service {name!r} has no version {version_name!r}")
        if len(record.versions) == 1:
            raise InvalidRequest(
                f"version {version_name!r} is the last version of {name!r}: delete the service"
                " instead"
            )
        if version.is_default:
            raise InvalidRequest(
                f"version {version_name!r} is the default: set another default first"
            )
        updated = replace(record, versions=tuple(v for v in record.versions if v is not version))
        live.record = await self._write(self._store.update_service, updated)
        live.retiring[version_name] = version
        self._saved_counts.pop((name, version_name), None)
        self._publish(live)  # at 0 %: it drains, still known to the routes
        self._start_operation(live, "delete-version", (), lambda: self._retire(live, version_name))
        logger.info("event=version-deleted service=%s version=%s", name, version_name)
        return self._view(live)

    async def _retire(self, live: _Live, version: str) -> None:
        try:
            await self._delete_deployment(live.record.name, version)
        finally:
            live.retiring.pop(version, None)
            live.errors.pop(version, None)
            live.serving.discard(version)
            if not live.deleting:
                self._publish(live)

    # -- applying changes ---------------------------------------------------------------

    async def _change(
        self,
        live: _Live,
        updated: ServiceRecord,
        kind: str,
        *,
        changed: VersionRecord | None = None,
        created: VersionRecord | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store `updated`, publish it, and start an operation if the replicas of the
        `created` version, or of the `changed` one (as it was before), must change.
        Returns the view and whether an operation started."""
        check_versions(updated.versions)
        live.record = await self._write(self._store.update_service, updated)
        self._publish(live)
        plan: tuple[VersionRecord, Rollout] | None = None
        if created is not None:
            plan = (created, "roll")
        elif changed is not None:
            new = live.record.version(changed.name)
            assert new is not None
            how = rollout_for(changed, new)
            if how != "none":
                plan = (new, how)
        if plan is not None:
            version, how = plan
            self._start_operation(
                live, kind, (version.name,), functools.partial(self._apply, live, version, how)
            )
        logger.info(
            "event=service-changed service=%s change=%s redeploy=%s",
            live.record.name,
            kind,
            plan[0].name if plan else "none",
        )
        return self._view(live), plan is not None

    async def _apply(self, live: _Live, version: VersionRecord, how: Rollout) -> None:
        if how == "scale" and await self._rescale(live, version):
            return
        await self._deploy(live, version)

    async def _rescale(self, live: _Live, version: VersionRecord) -> bool:
        """New scaling settings for the running replicas, without restarting them; False
        if the version needs a full deploy (e.g. it is not running)."""
        key = DeploymentKey(live.record.name, version.name)
        scaling, _ = scaling_for(version.deployment)
        try:
            if isinstance(scaling, Autoscale):
                if not self._loop.controls(key):
                    return False
                self._loop.reconfigure(key, scaling.config)
            else:
                self._backend.status(key)  # LookupError if it is not deployed
                await self._backend.scale(key, scaling.replicas)
        except LookupError:
            return False
        self._deployed(live, version.name)
        return True

    async def _deploy(
        self, live: _Live, version: VersionRecord, *, restore_count: int | None = None
    ) -> None:
        """Deploy (or roll) one version through the control loop. A backend refusal is
        recorded as the version's error (it shows as Failed), not raised."""
        service = live.record.name
        key = DeploymentKey(service, version.name)
        try:
            template = template_for(service, version)
            scaling, warm = scaling_for(version.deployment)
            await self._loop.deploy(key, template, scaling, warm=warm, initial=restore_count)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            live.errors[version.name] = f"the backend could not deploy it: {error}"
            logger.error(
                "event=deploy-failed deployment=%s error=%r", key, str(error).partition("\n")[0]
            )
        self._deployed(live, version.name)

    def _deployed(self, live: _Live, version: str) -> None:
        """The backend has the version now: its own status tells its state from here."""
        if live.operation is not None:
            live.operation.deploying.discard(version)

    async def _delete_deployment(self, service: str, version: str) -> None:
        with contextlib.suppress(LookupError):  # never deployed: its deploy failed
            await self._loop.delete(DeploymentKey(service, version))

    def _start_operation(
        self,
        live: _Live,
        kind: str,
        versions: tuple[str, ...],
        work: Callable[[], Awaitable[None]],
    ) -> None:
        previous = live.operation
        if previous is not None and previous.task is not None:
            previous.task.cancel()  # finished already; its task may not have noticed yet
        operation = _Operation(kind, versions, time.monotonic(), deploying=set(versions))
        live.operation = operation
        for version in versions:
            # A new attempt: the last one's refusal no longer describes the version.
            live.errors.pop(version, None)
        operation.task = self._spawn(
            self._run_operation(live, operation, work), f"{kind} {live.record.name}"
        )

    async def _run_operation(
        self, live: _Live, operation: _Operation, work: Callable[[], Awaitable[None]]
    ) -> None:
        name = live.record.name
        logger.info(
            "event=operation-started service=%s operation=%s versions=%s",
            name,
            operation.kind,
            ",".join(operation.versions) or "-",
        )
        try:
            await work()
            operation.working = False
            while not self._settle(live, operation):
                await asyncio.sleep(self._settle_interval)
        except asyncio.CancelledError:
            if not operation.finished:
                logger.info(
                    "event=operation-cancelled service=%s operation=%s", name, operation.kind
                )
            raise
        except Exception as error:
            logger.exception("event=operation-error service=%s operation=%s", name, operation.kind)
            self._finish(live, operation, [], f"{operation.kind} failed: {error}")

    def _settle(self, live: _Live, operation: _Operation) -> bool:
        """Finish `operation` if the versions it deployed have settled; True once finished.

        Whoever looks first notices (the operation's task, or a request reading the
        state), so a settled state is never shown while changes still get 409.
        """
        if operation.finished:
            return True
        if operation.working:
            return False
        settled = [
            (v, *self._version_status(live, v))
            for v in operation.versions
            if live.record.version(v) is not None
        ]
        if any(state == "Transitioning" for _, state, _ in settled):
            return False
        for version, _, status in settled:
            if status is not None and status.ready > 0 and version not in live.serving:
                live.serving.add(version)
                self._publish(live)
                logger.info(
                    "event=version-serving service=%s version=%s", live.record.name, version
                )
        self._finish(live, operation, settled)
        return True

    def _finish(
        self,
        live: _Live,
        operation: _Operation,
        settled: list[tuple[str, ServiceState, DeploymentStatus | None]],
        error: str | None = None,
    ) -> None:
        states = [state for _, state, _ in settled]
        operation.outcome = "Failed" if error else worst(states)
        failures = [
            f"version {v}: {version_error(live.errors.get(v), state, status)}"
            for v, state, status in settled
            if state == "Failed"
        ]
        operation.error = error or (failures[0] if failures else None)
        operation.finished = True
        logger.info(
            "event=operation-settled service=%s operation=%s outcome=%s seconds=%.1f",
            live.record.name,
            operation.kind,
            operation.outcome,
            time.monotonic() - operation.started_at,
        )

    def _spawn(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _publish(self, live: _Live) -> None:
        """Hand the registry the routes for `live`: versions not serving yet and versions
        being retired get no share of the traffic."""
        record = live.record
        names = [v.name for v in record.versions]
        default = record.default_version
        configured = default.name if default else names[0]
        routing = configured
        if configured not in live.serving:
            candidates = [live.routing_default, *names]
            routing = next((c for c in candidates if c in names and c in live.serving), configured)
        live.routing_default = routing
        specs = [
            version_spec(v, v.traffic_percentile if v.name in live.serving else 0.0)
            for v in record.versions
        ]
        specs += [version_spec(v, 0.0) for v in live.retiring.values()]
        if routing != configured:
            # The routing default takes the configured default's share too.
            specs = [
                replace(s, traffic_percentile=0.0) if s.name == configured else s for s in specs
            ]
        self._registry.set_service(
            ServiceSpec(
                name=record.name,
                versions=tuple(specs),
                default_version=routing,
                auth_mode=record.auth_mode,
                primary_key=record.primary_key,
                secondary_key=record.secondary_key,
                token_secret=self._store.signing_secret() if record.auth_mode == "token" else b"",
            )
        )

    async def _write(self, change: Callable[..., R], *args: Any) -> R:
        """Run one store change; the store's refusals become the API's."""
        try:
            return await self._store_call(change, *args)
        except Conflict as error:
            raise Busy(str(error)) from None
        except NotFound as error:
            raise UnknownService(str(error)) from None
        except ValueError as error:
            raise InvalidRequest(str(error)) from None

    @staticmethod
    async def _store_call(method: Callable[..., R], *args: Any) -> R:
        """A store call, off the event loop: the cluster store waits on the API server."""
        return await asyncio.to_thread(method, *args)

    # -- replica counts -----------------------------------------------------------------

    async def _persist_counts(self) -> None:
        while True:
            await asyncio.sleep(self._persist_interval)
            try:
                await self._save_counts()
            except Exception:
                logger.exception("event=count-save-error")

    async def _save_counts(self) -> None:
        """Write the autoscaler's current counts that differ from what the store has.

        Only a loop that acts knows them: with several routers, the leader saves them.
        """
        if not self._loop.acting:
            return
        changed = [
            ((name, version.name), count)
            for name, live in list(self._services.items())
            if not live.deleting
            for version in live.record.versions
            if (count := self._loop.desired(DeploymentKey(name, version.name))) is not None
            and self._saved_counts.get((name, version.name)) != count
        ]
        for key, count in changed:
            try:
                await self._store_call(self._store.set_desired_replicas, *key, count)
            except (NotFound, StoreError) as error:
                logger.warning("event=count-not-saved deployment=%s/%s error=%s", *key, error)
                continue
            self._saved_counts[key] = count
            logger.info("event=count-saved deployment=%s/%s replicas=%d", *key, count)

    # -- the data plane's 504s ----------------------------------------------------------

    def _recycle(self, service: str, version: str, replica_id: str) -> None:
        backend = self._backend
        if isinstance(backend, SupportsRecycle):
            backend.recycle(DeploymentKey(service, version), replica_id)

    # -- views --------------------------------------------------------------------------

    def _live(self, name: str) -> _Live:
        live = self._services.get(name)
        if live is None or live.deleting:
            raise UnknownService(f"no service {name!r}")
        return live

    def _check_free(self, name: str) -> None:
        live = self._services.get(name)
        if live is None:
            return
        if live.deleting:
            raise Busy(f"service {name!r} is being deleted: try again when it is gone")
        raise Busy(f"service {name!r} already exists")

    def _busy(self, live: _Live) -> bool:
        """Whether an operation on the service is in progress."""
        operation = live.operation
        if operation is None or operation.task is None or operation.task.done():
            return False
        return not self._settle(live, operation)

    def _check_idle(self, live: _Live) -> None:
        operation = live.operation
        if operation is not None and self._busy(live):
            raise Busy(
                f"service {live.record.name!r} is Transitioning ({operation.kind} in progress):"
                " try again when it has settled"
            )

    def _version_status(
        self, live: _Live, version: str
    ) -> tuple[ServiceState, DeploymentStatus | None]:
        operation = live.operation
        try:
            status: DeploymentStatus | None = self._backend.status(
                DeploymentKey(live.record.name, version)
            )
        except LookupError:
            status = None
        if operation is not None and not operation.finished and version in operation.deploying:
            # What runs now is the previous deployment, about to be replaced.
            return "Transitioning", status
        if version in live.errors or status is None:
            return "Failed", None
        return state_of(status), status

    def _view(self, live: _Live) -> dict[str, Any]:
        busy = self._busy(live)  # first: a settling operation may change the routes
        record = live.record
        route = self._registry.routes.get(record.name)
        effective = dict(route.traffic.weights) if route is not None else {}
        health = {}
        for version in record.versions:
            state, status = self._version_status(live, version.name)
            error = version_error(live.errors.get(version.name), state, status)
            health[version.name] = VersionHealth(state, status, error)
        return service_view(record, health, effective, busy=busy, public_url=self.public_url)
