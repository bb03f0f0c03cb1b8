"""The static backend against real tiny replica servers on loopback that fail and recover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from autoscaler.backends.base import DeploymentKey, DeploymentState, ReplicaTemplate
from autoscaler.backends.static import StaticBackend, StaticReplica
from router.metrics import RouterMetrics
from router.registry import Registry, ServiceSpec, VersionSpec
from router.replicas import RegistryReplicaSink
from tests.helpers.waiting import eventually

KEY = DeploymentKey("svc", "v1")


class TinyReplica:
    """An HTTP server answering every request: 200 while healthy, 503 while sick."""

    def __init__(self) -> None:
        self.healthy = True
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TinyReplica:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            status, body = (b"200 OK", b"Healthy") if self.healthy else (b"503 No", b"sick")
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-length: %d\r\n" % len(body)
                + b"connection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def replicas() -> AsyncIterator[list[TinyReplica]]:
    started = [await TinyReplica().start() for _ in range(2)]
    yield started
    for replica in started:
        if replica._server is not None and replica._server.is_serving():
            await replica.stop()


@pytest.fixture
def registry() -> Registry:
    registry = Registry(RouterMetrics())
    registry.set_service(
        ServiceSpec(
            name="svc", versions=(VersionSpec("v1"),), default_version="v1", auth_mode="none"
        )
    )
    return registry


def in_rotation(registry: Registry) -> set[str]:
    pool = registry.deployment("svc", "v1").pool
    return {r.id for r in pool.replicas if not r.draining}


async def test_unhealthy_replicas_leave_rotation_and_come_back(
    registry: Registry, replicas: list[TinyReplica]
) -> None:
    a, b = replicas
    address_a, address_b = (f"127.0.0.1:{r.port}" for r in replicas)
    backend = StaticBackend(RegistryReplicaSink(registry), probe_interval=0.05, failure_threshold=1)
    await backend.deploy(KEY, ReplicaTemplate(urls=(a.url, b.url)), replicas=0, warm=0)
    await eventually(lambda: in_rotation(registry) == {address_a, address_b})
    status = backend.status(KEY)
    assert (status.state, status.ready, status.desired) == (DeploymentState.HEALTHY, 2, 2)

    # The router reaches a replica at the address the backend reported.
    pool = registry.deployment("svc", "v1").pool
    slot = pool.try_acquire()
    assert slot is not None
    answer = await slot.target.request(b"POST", b"/score", [], b"{}", 5.0)
    assert answer.status == 200
    pool.release(slot)

    a.healthy = False
    await eventually(lambda: in_rotation(registry) == {address_b})
    assert backend.status(KEY).state is DeploymentState.HEALTHY
    assert "503" in backend.status(KEY).message

    await a.stop()  # gone altogether: connection refused
    b.healthy = False
    await eventually(lambda: in_rotation(registry) == set())
    status = backend.status(KEY)
    assert (status.state, status.ready) == (DeploymentState.UNHEALTHY, 0)
    assert a.url in status.message and b.url in status.message

    a.healthy = b.healthy = True
    await a.start()  # same port again
    await eventually(lambda: in_rotation(registry) == {address_a, address_b})
    assert backend.status(KEY).state is DeploymentState.HEALTHY
    assert backend.ready_count(KEY) == 2

    await backend.delete(KEY)
    assert in_rotation(registry) == set()
    await backend.close()


async def test_one_failed_probe_below_the_threshold_keeps_a_replica(
    registry: Registry, replicas: list[TinyReplica]
) -> None:
    a, _ = replicas
    backend = StaticBackend(RegistryReplicaSink(registry), probe_interval=3600, failure_threshold=2)
    await backend.deploy(KEY, ReplicaTemplate(urls=(a.url,)), replicas=0, warm=0)
    await eventually(lambda: backend.status(KEY).state is DeploymentState.HEALTHY)

    a.healthy = False
    await backend.probe_now(KEY)
    assert backend.ready_count(KEY) == 1  # one blip is not enough
    await backend.probe_now(KEY)
    assert backend.ready_count(KEY) == 0
    assert in_rotation(registry) == set()
    a.healthy = True
    await backend.probe_now(KEY)
    assert in_rotation(registry) == {f"127.0.0.1:{a.port}"}
    await backend.close()


async def test_redeploy_with_other_urls_drops_the_old_ones(
    registry: Registry, replicas: list[TinyReplica]
) -> None:
    a, b = replicas
    backend = StaticBackend(RegistryReplicaSink(registry), probe_interval=3600)
    await backend.deploy(KEY, ReplicaTemplate(urls=(a.url,)), replicas=0, warm=0)
    await eventually(lambda: backend.ready_count(KEY) == 1)
    await backend.deploy(KEY, ReplicaTemplate(urls=(b.url,)), replicas=0, warm=0)
    assert in_rotation(registry) == set()  # a left at once
    await backend.probe_now(KEY)
    assert in_rotation(registry) == {f"127.0.0.1:{b.port}"}
    await backend.scale(KEY, 5)  # static: nothing to scale
    assert backend.ready_count(KEY) == 1
    await backend.close()


def test_replica_urls_are_validated() -> None:
    assert StaticReplica.parse("http://10.0.0.5:5001").address == "10.0.0.5:5001"
    assert StaticReplica.parse("http://scorer.internal").address == "scorer.internal:80"
    assert StaticReplica.parse("http://[::1]:8080/").address == "[::1]:8080"
    for bad in ("https://10.0.0.5", "http://10.0.0.5:5001/score", "10.0.0.5:5001", "ftp://x"):
        with pytest.raises(ValueError, match="replica url"):
            StaticReplica.parse(bad)
    with pytest.raises(ValueError, match="either an entry script or replica urls"):
        ReplicaTemplate()
