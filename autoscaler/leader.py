"""Which router runs the autoscaler: a coordination.k8s.io/v1 Lease, as client-go elects.

Every router pod serves traffic; only the holder of the Lease scales deployments. The
holder renews the Lease every `retry_period`; the others try to take it every
`retry_period` and may once it has not changed for `lease_duration` seconds. Expiry is
judged by when *this* process last saw the Lease change, on its own monotonic clock,
never by comparing timestamps written by another machine, so clock skew between nodes
cannot elect two leaders. Every write carries the resourceVersion it read, so of two
candidates racing for an expired Lease exactly one wins.

A leader that cannot renew for `renew_deadline` (< `lease_duration`) stops acting before
anyone else may take over; one that shuts down releases the Lease, so the next holder
takes it on its next try instead of waiting for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.backends.kube_api import ApiPermission, Json, api_call, api_error

logger = logging.getLogger("mlfe.autoscaler.leader")

RBAC_RULES: tuple[ApiPermission, ...] = (
    ApiPermission("coordination.k8s.io", "leases", ("create", "get", "update")),
)
# Tries are spread over [retry_period, retry_period * JITTER], as client-go spreads them.
JITTER = 1.2


def _micro_time(now: datetime.datetime | None = None) -> str:
    """A MicroTime as the API writes it: RFC 3339 with microseconds, UTC."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds, or waits for, one Lease; `is_leader` says whether to act now."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                f"leader election needs 0 < retry_period ({retry_period}) < renew_deadline"
                f" ({renew_deadline}) < lease_duration ({lease_duration})"
            )
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = int(lease_duration)  # leaseDurationSeconds is an integer
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._api = client.CoordinationV1Api(api_client)
        self._leading = False
        self._renewed_at = -float("inf")
        # The Lease as last seen, and when (our clock) it last changed: expiry is judged
        # from these, as client-go's observedRecord / observedTime.
        self._observed: Json | None = None
        self._observed_at = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        """True while this process holds the Lease and renewed it within renew_deadline."""
        return self._leading and self._clock() - self._renewed_at < self.renew_deadline

    @property
    def last_renewal(self) -> float:
        """When (on `clock`) this process last started a successful acquire or renewal."""
        return self._renewed_at

    @property
    def holder(self) -> str | None:
        """The holder as last seen ("" or None when nobody holds the Lease)."""
        return (self._observed or {}).get("holderIdentity")

    async def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=f"leader election {self.name}")

    async def close(self, *, release: bool = True) -> None:
        """Stop taking part; with `release`, hand the Lease over at once if we hold it.

        `release=False` is what a crashed leader amounts to: the others wait for expiry.
        """
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        self._set_leading(False)
        if release:
            # Even if not leading: a try cancelled mid-way may have written the Lease.
            try:
                await asyncio.to_thread(self._release)
            except Exception as error:
                logger.warning(
                    "event=leader-release-error lease=%s identity=%s error=%r",
                    self.name,
                    self.identity,
                    api_error(error),
                )

    # -- the election loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stop.is_set():
            if self._leading:
                await self._try(renewing=True)
            else:
                await self._try(renewing=False)
            await self._pause()

    async def _try(self, *, renewing: bool) -> None:
        # The lease counts from before the write: conservative if the answer is slow.
        started = self._clock()
        try:
            won = await asyncio.to_thread(self._try_acquire_or_renew)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            won = False
            logger.warning(
                "event=leader-election-error lease=%s identity=%s error=%r",
                self.name,
                self.identity,
                api_error(error),
            )
        if won:
            self._renewed_at = started
            if not self._leading:
                self._set_leading(True)
        elif renewing and self._clock() - self._renewed_at >= self.renew_deadline:
            self._set_leading(False)

    async def _pause(self) -> None:
        delay = self.retry_period * (1.0 if self._leading else random.uniform(1.0, JITTER))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        event = "leader-acquired" if leading else "leader-lost"
        logger.info("event=%s lease=%s identity=%s", event, self.name, self.identity)
        callback = self._on_started if leading else self._on_stopped
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.exception("event=leader-callback-error lease=%s", self.name)

    # -- one try (in a worker thread) ----------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any) -> Json:
        # A try must give up well within the renew deadline, to leave time for another.
        timeout = max(0.5, self.renew_deadline / 2)
        return api_call(method, *args, _request_timeout=(timeout, timeout))

    def _try_acquire_or_renew(self) -> bool:
        now = self._clock()
        try:
            lease = self._call(self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(now)
        spec = dict(lease.get("spec") or {})
        if spec != self._observed:
            self._observed, self._observed_at = spec, now
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False  # someone else holds a Lease that has not expired
        stamp = _micro_time()
        renewed: Json = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration,
            "renewTime": stamp,
        }
        if holder == self.identity:
            renewed["acquireTime"] = spec.get("acquireTime") or stamp
            renewed["leaseTransitions"] = spec.get("leaseTransitions") or 0
        else:
            renewed["acquireTime"] = stamp
            renewed["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": renewed}
        try:
            written = self._call(
                self._api.replace_namespaced_lease, self.name, self.namespace, body
            )
        except ApiException as error:
            if error.status == 409:
                return False  # another candidate wrote first
            raise
        self._observed, self._observed_at = dict(written.get("spec") or renewed), now
        return True

    def _create(self, now: float) -> bool:
        stamp = _micro_time()
        spec: Json = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 0,
        }
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            written = self._call(self._api.create_namespaced_lease, self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False  # another candidate created it first
            raise
        self._observed, self._observed_at = dict(written.get("spec") or spec), now
        return True

    def _release(self) -> None:
        """Give the Lease up: an empty holder, which any candidate may take at once."""
        try:
            lease = self._call(self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        stamp = _micro_time()
        released = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": spec.get("leaseTransitions") or 0,
        }
        try:
            self._call(
                self._api.replace_namespaced_lease,
                self.name,
                self.namespace,
                {**lease, "spec": released},
            )
        except ApiException as error:
            if error.status != 409:  # someone took it meanwhile: nothing left to release
                raise
        logger.info("event=leader-released lease=%s identity=%s", self.name, self.identity)
