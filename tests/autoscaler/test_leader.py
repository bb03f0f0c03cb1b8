"""Leader election on a coordination.k8s.io/v1 Lease, against the in-repo API server.

Two electors stand for two router pods. Short durations keep the handovers quick; the
assertions are about order and safety (never two leaders, a crashed leader's Lease is
honoured until it expires), with generous upper bounds only where a test must end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from kubernetes import client

from autoscaler.leader import RBAC_RULES, LeaderElector
from tests.kube import Cluster, start_cluster

LEASE = "mlfe-autoscaler"
LEASE_DURATION = 2
RENEW_DEADLINE = 1.5
RETRY_PERIOD = 0.1


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster() as running:
        yield running


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    api_client = cluster.api_client()
    yield api_client
    # Each test starts without a Lease.
    coordination = client.CoordinationV1Api(api_client)
    try:
        coordination.delete_namespaced_lease(LEASE, "default")
    except client.ApiException as error:
        assert error.status == 404
    api_client.close()


class Watcher:
    """Records, on the event loop, when each elector started or stopped leading."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    def callbacks(self, name: str) -> dict[str, Callable[[], None]]:
        return {
            "on_started_leading": lambda: self.events.append((time.monotonic(), name, "start")),
            "on_stopped_leading": lambda: self.events.append((time.monotonic(), name, "stop")),
        }


def elector(
    api: client.ApiClient, identity: str, watcher: Watcher, **durations: float
) -> LeaderElector:
    settings = {
        "lease_duration": LEASE_DURATION,
        "renew_deadline": RENEW_DEADLINE,
        "retry_period": RETRY_PERIOD,
        **durations,
    }
    return LeaderElector(
        api,
        "default",
        LEASE,
        identity,
        **settings,  # type: ignore[arg-type]
        **watcher.callbacks(identity),
    )


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def read_lease(api: client.ApiClient) -> client.V1Lease:
    return client.CoordinationV1Api(api).read_namespaced_lease(LEASE, "default")


async def test_one_of_two_electors_leads_and_the_lease_names_it(api: client.ApiClient) -> None:
    watcher = Watcher()
    first, second = elector(api, "router-a", watcher), elector(api, "router-b", watcher)
    await first.start()
    await second.start()
    try:
        await wait_until(lambda: first.is_leader or second.is_leader, timeout=10)
        # Several renewal rounds later, still exactly one leader, and the same one.
        leader = first if first.is_leader else second
        for _ in range(10):
            await asyncio.sleep(RETRY_PERIOD)
            assert [first.is_leader, second.is_leader].count(True) == 1
            assert leader.is_leader
        lease = read_lease(api)
        assert lease.spec.holder_identity == leader.identity
        assert lease.spec.lease_duration_seconds == LEASE_DURATION
        assert (first.holder, second.holder) == (leader.identity, leader.identity)
    finally:
        await first.close()
        await second.close()


async def test_a_leader_that_stops_renewing_is_replaced_once_its_lease_expires(
    api: client.ApiClient,
) -> None:
    watcher = Watcher()
    first = elector(api, "router-a", watcher)
    await first.start()
    await wait_until(lambda: first.is_leader, timeout=10)
    second = elector(api, "router-b", watcher)
    await second.start()
    try:
        await asyncio.sleep(5 * RETRY_PERIOD)
        assert not second.is_leader, "a valid Lease must not be taken over"

        # The leader dies: no release, no more renewals.
        last_renewal = first.last_renewal
        await first.close(release=False)
        await wait_until(lambda: second.is_leader, timeout=LEASE_DURATION + 5)

        took_over_at = next(
            t for t, who, what in watcher.events if (who, what) == ("router-b", "start")
        )
        # Safety: not before the dead leader's Lease expired (measured from its last renewal).
        assert took_over_at - last_renewal >= LEASE_DURATION
        lease = read_lease(api)
        assert lease.spec.holder_identity == "router-b"
        assert lease.spec.lease_transitions == 1
    finally:
        await second.close()


async def test_release_on_close_hands_over_without_waiting_for_expiry(
    api: client.ApiClient, cluster: Cluster
) -> None:
    cluster.call(cluster.apiserver.usage.clear)
    watcher = Watcher()
    # A long Lease: a handover faster than it proves the release did the work.
    slow = {"lease_duration": 30, "renew_deadline": 20}
    first = elector(api, "router-a", watcher, **slow)
    await first.start()
    await wait_until(lambda: first.is_leader, timeout=10)
    second = elector(api, "router-b", watcher, **slow)
    await second.start()
    try:
        await asyncio.sleep(5 * RETRY_PERIOD)
        assert not second.is_leader
        released_at = time.monotonic()
        await first.close()
        assert not first.is_leader
        await wait_until(lambda: second.is_leader, timeout=20)
        took_over_at = next(
            t for t, who, what in watcher.events if (who, what) == ("router-b", "start")
        )
        assert took_over_at - released_at < 30, "the handover waited for the Lease to expire"
        assert [e[1:] for e in watcher.events] == [
            ("router-a", "start"),
            ("router-a", "stop"),
            ("router-b", "start"),
        ]
        # Create, read, renew/take over/release: exactly the verbs RBAC_RULES grant.
        granted = {(verb, r.group, r.resource) for r in RBAC_RULES for verb in r.verbs}
        assert cluster.api_usage() == granted
    finally:
        await second.close()


async def test_a_leader_cut_off_from_the_api_server_stops_acting(
    api: client.ApiClient, cluster: Cluster
) -> None:
    watcher = Watcher()
    only = elector(api, "router-a", watcher)
    await only.start()
    try:
        await wait_until(lambda: only.is_leader, timeout=10)
        # The API server is down for longer than the renew deadline.
        await cluster.restart_apiserver_async(downtime_s=RENEW_DEADLINE + 1)
        assert ("router-a", "stop") in [e[1:] for e in watcher.events]
        # Back up: nobody else holds the Lease, so it leads again.
        await wait_until(lambda: only.is_leader, timeout=10)
    finally:
        await only.close()


def test_durations_must_leave_room_for_a_handover(api: client.ApiClient) -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(api, "default", LEASE, "x", lease_duration=5, renew_deadline=5)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(api, "default", LEASE, "")
