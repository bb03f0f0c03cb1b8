"""Leader election on a coordination.k8s.io/v1 Lease, against the in-repo API server.

Two electors stand for two router pods. Short durations keep the handovers quick; the
assertions are about order and safety (never two leaders, a crashed leader's Lease is
honoured until it expires), with generous upper bounds only where a test must end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from autoscaler.backends.base import DeploymentKey, ReplicaTemplate
from autoscaler.backends.kube_api import Json, api_call
from autoscaler.backends.kubernetes import KubernetesBackend
from autoscaler.leader import RBAC_RULES, LeaderElector
from autoscaler.loop import Autoscale, ControlLoop
from autoscaler.policy import ScalingConfig
from router.demand import DemandMeters
from router.metrics import RouterMetrics
from router.registry import Registry, ServiceSpec, VersionSpec
from router.replicas import RegistryReplicaSink
from tests.helpers.waiting import eventually
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

    def note(self, name: str, what: str) -> Callable[[], None]:
        return lambda: self.events.append((time.monotonic(), name, what))


def elector(
    api: client.ApiClient,
    identity: str,
    watcher: Watcher,
    *,
    lease_duration: int = LEASE_DURATION,
    renew_deadline: float = RENEW_DEADLINE,
) -> LeaderElector:
    return LeaderElector(
        api,
        "default",
        LEASE,
        identity,
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=RETRY_PERIOD,
        on_started_leading=watcher.note(identity, "start"),
        on_stopped_leading=watcher.note(identity, "stop"),
    )


def leading(candidate: LeaderElector) -> Callable[[], bool]:
    return lambda: candidate.is_leader


def read_lease(api: client.ApiClient) -> Json:
    """The Lease's spec as the API server holds it."""
    lease = api_call(client.CoordinationV1Api(api).read_namespaced_lease, LEASE, "default")
    return dict(lease["spec"])


async def test_one_of_two_electors_leads_and_the_lease_names_it(api: client.ApiClient) -> None:
    watcher = Watcher()
    first, second = elector(api, "router-a", watcher), elector(api, "router-b", watcher)
    await first.start()
    await second.start()
    try:
        await eventually(lambda: first.is_leader or second.is_leader, timeout=10)
        # Several renewal rounds later, still exactly one leader, and the same one.
        leader = first if first.is_leader else second
        for _ in range(10):
            await asyncio.sleep(RETRY_PERIOD)
            assert [first.is_leader, second.is_leader].count(True) == 1
            assert leader.is_leader
        lease = read_lease(api)
        assert lease["holderIdentity"] == leader.identity
        assert lease["leaseDurationSeconds"] == LEASE_DURATION
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
    await eventually(lambda: first.is_leader, timeout=10)
    second = elector(api, "router-b", watcher)
    await second.start()
    try:
        await asyncio.sleep(5 * RETRY_PERIOD)
        assert not second.is_leader, "a valid Lease must not be taken over"

        # The leader dies: no release, no more renewals.
        last_renewal = first.last_renewal
        await first.close(release=False)
        await eventually(lambda: second.is_leader, timeout=LEASE_DURATION + 5)

        took_over_at = next(
            t for t, who, what in watcher.events if (who, what) == ("router-b", "start")
        )
        # Safety: not before the dead leader's Lease expired (measured from its last renewal).
        assert took_over_at - last_renewal >= LEASE_DURATION
        lease = read_lease(api)
        assert lease["holderIdentity"] == "router-b"
        assert lease["leaseTransitions"] == 1
    finally:
        await second.close()


async def test_release_on_close_hands_over_without_waiting_for_expiry(
    api: client.ApiClient, cluster: Cluster
) -> None:
    cluster.call(cluster.apiserver.usage.clear)
    watcher = Watcher()
    # A long Lease: a handover faster than it proves the release did the work.
    first = elector(api, "router-a", watcher, lease_duration=30, renew_deadline=20)
    await first.start()
    await eventually(lambda: first.is_leader, timeout=10)
    second = elector(api, "router-b", watcher, lease_duration=30, renew_deadline=20)
    await second.start()
    try:
        await asyncio.sleep(5 * RETRY_PERIOD)
        assert not second.is_leader
        released_at = time.monotonic()
        await first.close()
        assert not first.is_leader
        await eventually(lambda: second.is_leader, timeout=20)
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
        await eventually(lambda: only.is_leader, timeout=10)
        # The API server is down for longer than the renew deadline.
        await cluster.restart_apiserver_async(downtime_s=RENEW_DEADLINE + 1)
        assert ("router-a", "stop") in [e[1:] for e in watcher.events]
        # Back up: nobody else holds the Lease, so it leads again.
        await eventually(lambda: only.is_leader, timeout=10)
    finally:
        await only.close()


def test_durations_must_leave_room_for_a_handover(api: client.ApiClient) -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(api, "default", LEASE, "x", lease_duration=5, renew_deadline=5)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(api, "default", LEASE, "")


async def test_only_the_leaders_control_loop_scales_and_a_new_leader_takes_over(
    api: client.ApiClient, cluster: Cluster, tmp_path: Path
) -> None:
    """Two router pods, each with its own backend, elector and control loop."""
    key = DeploymentKey("handover", "v1")
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(data): return data\n")
    template = ReplicaTemplate(entry_script=str(tmp_path / "score.py"), source_dir=str(tmp_path))
    scaling = Autoscale(ScalingConfig(min_replicas=1, max_replicas=3), refresh_period=0.2)
    # The replica counts are what this test is about: pods need not run.
    fault = cluster.make_unschedulable({"mlfe.io/service": "handover"})
    watcher = Watcher()
    routers = []
    for identity in ("router-a", "router-b"):
        registry = Registry(RouterMetrics())
        registry.set_service(
            ServiceSpec(
                "handover", (VersionSpec("v1", slots_per_replica=8),), "v1", auth_mode="none"
            )
        )
        # A replica nobody connects to: requests holding its slots are the demand.
        registry.add_replica("handover", "v1", "r1", "127.0.0.1:9")
        backend = KubernetesBackend(api, "default", RegistryReplicaSink(registry))
        leader = elector(api, identity, watcher)
        loop = ControlLoop(
            backend, DemandMeters(registry).source("loop"), should_act=leading(leader)
        )
        routers.append((registry, backend, leader, loop))
    (_, _, leader_a, loop_a), (registry_b, backend_b, leader_b, loop_b) = routers
    apps = client.AppsV1Api(api)

    def replicas() -> int:
        scale = api_call(apps.read_namespaced_deployment_scale, "mlfe-handover-v1", "default")
        return int(scale["spec"]["replicas"])

    try:
        await leader_a.start()
        await eventually(lambda: leader_a.is_leader, timeout=10)
        await leader_b.start()
        await loop_a.deploy(key, template, scaling)
        await loop_b.deploy(key, template, scaling)
        # Only router B has traffic, and B is not the leader: nothing scales.
        pool = registry_b.deployment("handover", "v1").pool
        held = [pool.try_acquire() for _ in range(4)]
        assert all(held)
        await asyncio.sleep(1.0)
        assert replicas() == 1 and not leader_b.is_leader

        # Router A dies: its Lease expires, B leads and acts on its demand.
        await leader_a.close(release=False)
        await loop_a.close()
        await eventually(lambda: leader_b.is_leader, timeout=LEASE_DURATION + 5)
        await eventually(lambda: replicas() == 3, timeout=10)
    finally:
        fault.clear()
        await loop_b.close()
        await leader_b.close()
        await backend_b.delete(key)
        for _, backend, _, _ in routers:
            await backend.close()
