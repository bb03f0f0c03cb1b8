"""One backend for the router: replica URLs to the static backend, the rest to the machine's.

A version either runs an entry script (the local or the Kubernetes backend starts its
replicas) or lists the URLs of replicas someone else runs (`StaticBackend` probes them).
`MixedBackend` sends each deployment to the one its template calls for and remembers
which one owns each key, so every later call (scale, status, logs, delete) goes there.

A version may change form in an update. Then the new owner deploys and the old one keeps
serving until the new one has a replica in rotation (or wants none), and is deleted
after: the same handover a rollout within one backend makes, so switching loses no
request. A new deployment that never gets ready leaves the old replicas serving until
the next change.

`SharedMixedBackend` adds what a Kubernetes router needs to follow Deployments other
routers write (`adopt`, `track`, `untrack`). Static deployments are no one's to share:
each router probes the URLs itself, so a router following another's change deploys them
(after `untrack_shared`, so that a router that only follows deletes nothing shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentStatus,
    ReplicaBackend,
    ReplicaLog,
    ReplicaTemplate,
)
from autoscaler.backends.static import StaticBackend

logger = logging.getLogger("mlfe.autoscaler.mixed")

# How often a handover looks whether the new owner has a replica in rotation.
HANDOVER_POLL = 0.1


@runtime_checkable
class _Recycles(Protocol):
    def recycle(self, key: DeploymentKey, replica_id: str) -> bool: ...


@runtime_checkable
class _Logs(Protocol):
    async def logs(self, key: DeploymentKey, tail: int = 100) -> tuple[ReplicaLog, ...]: ...


@runtime_checkable
class _Starts(Protocol):
    async def start(self) -> None: ...


@runtime_checkable
class _Shared(Protocol):
    async def adopt(self, key: DeploymentKey, template: ReplicaTemplate) -> bool: ...

    async def track(self, key: DeploymentKey, *, wait: float = 0.0) -> None: ...

    def untrack(self, key: DeploymentKey) -> None: ...


@dataclass(eq=False)
class _Handover:
    """The backend that served a key before it changed form, retiring."""

    previous: ReplicaBackend
    task: asyncio.Task[None]


class MixedBackend:
    """Deployments with replica urls go to `static`, every other one to `default`."""

    def __init__(self, default: ReplicaBackend, static: StaticBackend) -> None:
        self.default = default
        self.static = static
        self._owners: dict[DeploymentKey, ReplicaBackend] = {}
        self._handovers: dict[DeploymentKey, _Handover] = {}

    # -- the ReplicaBackend interface ----------------------------------------------------

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int, warm: int
    ) -> None:
        target: ReplicaBackend = self.static if template.urls else self.default
        # Switching back before the handover finished: it is not retiring any more.
        returning = await self._cancel_handover(key, of=target)
        try:
            await target.deploy(key, template, replicas, warm)
        except BaseException:
            if returning:
                self._hand_over(key, target)  # it still runs what it ran: retire it
            raise
        self._take_over(key, target)

    async def scale(self, key: DeploymentKey, replicas: int) -> None:
        await self._owner(key).scale(key, replicas)

    async def delete(self, key: DeploymentKey) -> None:
        """Delete the deployment from its owner, and from the one it is leaving if any."""
        owner = self._owner(key)
        handover = self._handovers.pop(key, None)
        self._owners.pop(key, None)
        if handover is not None:
            await _cancel(handover.task)
            with contextlib.suppress(LookupError):
                await handover.previous.delete(key)
        await owner.delete(key)

    def status(self, key: DeploymentKey) -> DeploymentStatus:
        return self._owner(key).status(key)

    def ready_count(self, key: DeploymentKey) -> int:
        return self._owner(key).ready_count(key)

    async def close(self) -> None:
        for handover in self._handovers.values():
            await _cancel(handover.task)
        self._handovers.clear()
        self._owners.clear()
        try:
            await self.static.close()
        finally:
            await self.default.close()

    # -- what router/services.py and router/serve*.py use beyond it --------------------

    async def start(self) -> None:
        """Start the default backend's watches, if it has any (Kubernetes)."""
        if isinstance(self.default, _Starts):
            await self.default.start()

    def recycle(self, key: DeploymentKey, replica_id: str) -> bool:
        """Replace a stuck replica, if its owner starts replicas (a static one cannot)."""
        owner = self._owner(key)
        return isinstance(owner, _Recycles) and owner.recycle(key, replica_id)

    async def logs(self, key: DeploymentKey, tail: int = 100) -> tuple[ReplicaLog, ...]:
        owner = self._owner(key)
        return await owner.logs(key, tail) if isinstance(owner, _Logs) else ()

    # -- owners and handovers --------------------------------------------------------------

    def _owner(self, key: DeploymentKey) -> ReplicaBackend:
        # A key this backend never deployed is the default's to know (or to refuse).
        return self._owners.get(key, self.default)

    def _take_over(self, key: DeploymentKey, owner: ReplicaBackend) -> None:
        """`owner` has `key` now; the previous owner, if another, retires once it serves."""
        previous = self._owners.get(key)
        self._owners[key] = owner
        if previous is not None and previous is not owner:
            logger.info(
                "event=handover deployment=%s from=%s to=%s",
                key,
                type(previous).__name__,
                type(owner).__name__,
            )
            self._hand_over(key, previous)

    def _hand_over(self, key: DeploymentKey, previous: ReplicaBackend) -> None:
        task = asyncio.create_task(self._retire(key, previous), name=f"handover {key}")
        self._handovers[key] = _Handover(previous, task)

    async def _retire(self, key: DeploymentKey, previous: ReplicaBackend) -> None:
        while True:
            try:
                status = self._owner(key).status(key)
            except LookupError:
                break
            if status.ready > 0 or status.desired == 0:
                break
            await asyncio.sleep(HANDOVER_POLL)
        # Forgotten first: from here on this is a deletion, not a handover to cancel.
        self._handovers.pop(key, None)
        try:
            await previous.delete(key)
        except LookupError:
            pass
        except Exception:
            logger.exception("event=handover-error deployment=%s", key)
        else:
            logger.info("event=handed-over deployment=%s", key)

    async def _cancel_handover(self, key: DeploymentKey, *, of: ReplicaBackend) -> bool:
        """Stop retiring `of` from `key`; whether it was being retired."""
        handover = self._handovers.get(key)
        if handover is None or handover.previous is not of:
            return False
        del self._handovers[key]
        await _cancel(handover.task)
        return True


class SharedMixedBackend(MixedBackend):
    """`MixedBackend` over a backend whose deployments other routers share (Kubernetes)."""

    def __init__(self, default: ReplicaBackend, static: StaticBackend) -> None:
        if not isinstance(default, _Shared):
            raise TypeError(f"{type(default).__name__} cannot follow shared deployments")
        super().__init__(default, static)
        self._shared: _Shared = default

    async def adopt(self, key: DeploymentKey, template: ReplicaTemplate) -> bool:
        """Follow the running deployment if it runs `template`; never for replica urls,
        which each router probes itself (False: deploy them)."""
        if template.urls or not await self._shared.adopt(key, template):
            return False
        self._take_over(key, self.default)
        return True

    async def track(self, key: DeploymentKey, *, wait: float = 0.0) -> None:
        """Follow the shared deployment as it is; replica urls this router probed for the
        key (the version listed them before) leave once it serves."""
        await self._cancel_handover(key, of=self.default)
        await self._shared.track(key, wait=wait)
        self._take_over(key, self.default)

    def untrack(self, key: DeploymentKey) -> None:
        """Stop following `key` (another router deletes it): its shared deployment and the
        replica urls this router probes alike."""
        self.untrack_shared(key)
        if self._owners.pop(key, None) is self.static:
            self.static.untrack(key)

    def untrack_shared(self, key: DeploymentKey) -> None:
        """Stop following the shared deployment of `key`, deleting nothing: the version
        lists replica urls now, and the router that changed it deletes the Deployment.
        Replica urls this router probes for the key, if any, stay."""
        handover = self._handovers.pop(key, None)
        if handover is not None:
            handover.task.cancel()
        involved = (self._owners.pop(key, None), handover.previous if handover else None)
        if self.static in involved:
            self._owners[key] = self.static
        self._shared.untrack(key)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    # wait() rather than await: the task's cancellation is not ours to re-raise.
    await asyncio.wait({task})
