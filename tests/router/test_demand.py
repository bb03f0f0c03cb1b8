"""Demand across router pods: per-reader meters, the internal endpoint, and the leader's sum.

The meters and the endpoint run on a real registry and a real socket; the cluster sum
runs against the in-repo API server with stand-in router pods (a script serving fixed
numbers, one of them hanging) found through the router Service's EndpointSlices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from kubernetes import client
from starlette.applications import Starlette

from autoscaler.backends.base import DeploymentKey
from autoscaler.backends.kube_api import Json, api_call
from router.demand import ClusterDemandSource, DemandMeters, demand_route
from router.dispatch import Replica
from router.metrics import RouterMetrics
from router.registry import Registry, ServiceSpec, VersionSpec
from router.server import uvicorn_server
from router.upstream import UpstreamPool
from scoring_runtime.listen import bind_tcp
from tests.kube import Cluster, start_cluster

NAMESPACE = "default"
ROUTER = Path(__file__).parent / "scripts" / "demand_router.py"
ADMIN_KEY = "an-admin-key-for-tests"


def registry_with(*services: str) -> Registry:
    registry = Registry(RouterMetrics())
    for name in services:
        version = VersionSpec("v1", slots_per_replica=4)
        registry.set_service(ServiceSpec(name, (version,), "v1", auth_mode="none"))
        # A replica nobody connects to: its slots are what the demand counts.
        registry.add_replica(name, "v1", "r1", "127.0.0.1:9")
    return registry


def hold(registry: Registry, service: str, count: int) -> list[Replica[UpstreamPool]]:
    """Take `count` slots, as requests in flight do."""
    pool = registry.deployment(service, "v1").pool
    held = [replica for _ in range(count) if (replica := pool.try_acquire()) is not None]
    assert len(held) == count
    return held


async def test_every_reader_averages_over_its_own_window() -> None:
    registry = registry_with("svc")
    pool = registry.deployment("svc", "v1").pool
    meters = DemandMeters(registry)
    slots = hold(registry, "svc", 2)

    started = time.monotonic()
    assert meters.read("leader") == {("svc", "v1"): 2.0}  # a first read: the level now
    await asyncio.sleep(0.2)
    dropped = time.monotonic()
    for replica in slots:
        pool.release(replica)
    await asyncio.sleep(0.1)
    # Someone else reads in between: the leader's window must not be cut short.
    assert meters.read("operator") == {("svc", "v1"): 0.0}
    await asyncio.sleep(0.1)
    ended = time.monotonic()
    average = meters.read("leader")[("svc", "v1")]
    expected = 2 * (dropped - started) / (ended - started)
    assert average == pytest.approx(expected, abs=0.1)
    assert meters.read("operator") == {("svc", "v1"): 0.0}

    # The same through the per-deployment source a control loop reads.
    source = meters.source("loop")
    key = DeploymentKey("svc", "v1")
    hold(registry, "svc", 3)
    assert source.read_demand(key) == 3.0
    await asyncio.sleep(0.05)
    assert source.read_demand(key) == pytest.approx(3.0)
    assert source.read_demand(DeploymentKey("svc", "nope")) == 0.0


async def test_meters_and_the_pools_own_reader_share_one_account() -> None:
    registry = registry_with("svc")
    pool = registry.deployment("svc", "v1").pool
    meters = DemandMeters(registry)
    pool.read_demand()
    assert meters.read("leader") == {("svc", "v1"): 0.0}
    slots = hold(registry, "svc", 2)
    await asyncio.sleep(0.1)
    for replica in slots:
        pool.release(replica)
    await asyncio.sleep(0.1)
    # Both saw the same half-busy window; neither read cut the other's short.
    leader = meters.read("leader")[("svc", "v1")]
    local = pool.read_demand()
    assert leader == pytest.approx(1.0, abs=0.25)
    assert local == pytest.approx(leader, rel=0.05)

    # A deployment that goes away and comes back is measured afresh.
    registry.remove_service("svc")
    assert meters.read("leader") == {}
    registry.set_service(
        ServiceSpec("svc", (VersionSpec("v1", slots_per_replica=4),), "v1", auth_mode="none")
    )
    registry.add_replica("svc", "v1", "r1", "127.0.0.1:9")
    hold(registry, "svc", 1)
    assert meters.read("leader") == {("svc", "v1"): 1.0}


@pytest.fixture
async def demand_url() -> AsyncIterator[tuple[str, Registry]]:
    registry = registry_with("svc", "other")
    site = Starlette(routes=[demand_route(DemandMeters(registry), admin_key=ADMIN_KEY)])
    server = uvicorn_server(site)
    sock = bind_tcp("127.0.0.1", 0)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/internal/demand", registry
    server.should_exit = True
    await serving


async def test_the_internal_endpoint_answers_json_to_the_admin_key_only(
    demand_url: tuple[str, Registry],
) -> None:
    url, registry = demand_url
    hold(registry, "svc", 3)
    async with httpx.AsyncClient(timeout=5) as http:
        refused = await http.get(url)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "message" in refused.json()
        wrong = await http.get(url, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401

        auth = {"authorization": f"Bearer {ADMIN_KEY}"}
        answer = await http.get(url, params={"reader": "router-0"}, headers=auth)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"svc/v1": 3.0, "other/v1": 0.0}
        bad = await http.get(url, params={"reader": "x" * 200}, headers=auth)
        assert bad.status_code == 400 and "reader" in bad.json()["message"]


# -- the leader's sum over router pods ---------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster() as running:
        yield running


def router_pods(name: str, replicas: int, env: dict[str, str]) -> Json:
    labels = {"app.kubernetes.io/name": "mlfe-router", "test/group": name}
    variables: list[Json] = [{"name": k, "value": v} for k, v in env.items()]
    variables.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "router",
                            "image": "mlfe-router:test",
                            "command": ["python", str(ROUTER)],
                            "args": ["--host", "$(POD_IP)", "--port", "8080"],
                            "env": variables,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
        },
    }


@pytest.fixture
def routers(cluster: Cluster) -> Iterator[client.ApiClient]:
    api = cluster.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    api_call(
        core.create_namespaced_service,
        NAMESPACE,
        {
            "metadata": {"name": "mlfe-router"},
            "spec": {
                "selector": {"app.kubernetes.io/name": "mlfe-router"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    demand = orjson.dumps({"svc/v1": 1.5, "other/v2": 0.5}).decode()
    api_call(
        apps.create_namespaced_deployment, NAMESPACE, router_pods("busy", 2, {"DEMAND": demand})
    )
    api_call(
        apps.create_namespaced_deployment, NAMESPACE, router_pods("hung", 1, {"MODE": "silent"})
    )
    yield api
    apps.delete_namespaced_deployment("busy", NAMESPACE)
    apps.delete_namespaced_deployment("hung", NAMESPACE)
    core.delete_namespaced_service("mlfe-router", NAMESPACE)
    cluster.wait_for(lambda: not cluster.pod_processes(), timeout_s=30)
    api.close()


async def test_the_leader_sums_every_router_pod_and_a_silent_one_counts_zero(
    routers: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    leading = True
    source = ClusterDemandSource(
        routers,
        NAMESPACE,
        identity="router-leader",
        period=0.2,
        # Long enough for a busy pod on a loaded machine; only the hung pod takes all of it.
        timeout=1.0,
        should_poll=lambda: leading,
    )
    caplog.set_level(logging.INFO, logger="mlfe.router.demand")
    await source.start()
    try:
        deadline = time.monotonic() + 30
        while len(source.router_addresses()) < 3:
            assert time.monotonic() < deadline, "router pods did not become ready"
            await asyncio.sleep(0.05)
        assert all(a.endswith(":8080") for a in source.router_addresses().values())

        totals = await source.poll()
        await source.poll()
        assert totals == {DeploymentKey("svc", "v1"): 3.0, DeploymentKey("other", "v2"): 1.0}
        await asyncio.sleep(0.5)  # the background rounds agree
        assert source.read_demand(DeploymentKey("svc", "v1")) == 3.0
        assert source.read_demand(DeploymentKey("missing", "v1")) == 0.0
        unanswered = [r for r in caplog.records if "demand-unanswered" in r.getMessage()]
        assert len(unanswered) == 1 and "hung-" in unanswered[0].getMessage()

        leading = False  # a follower keeps no numbers to act on later
        deadline = time.monotonic() + 10  # once the round under way (up to the timeout) ends
        while source.totals:
            assert time.monotonic() < deadline, "a follower kept its totals"
            await asyncio.sleep(0.05)
    finally:
        await source.close()
