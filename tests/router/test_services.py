"""ServiceManager with everything real: a SqliteStore, the Registry, the control loop, the
local backend running scoring-runtime processes, and a router on a loopback socket that
every scoring request goes through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from autoscaler.backends.base import DeploymentKey
from autoscaler.backends.kube_manifests import PodOptions
from autoscaler.backends.local import LocalBackend
from autoscaler.loop import ControlLoop
from router.app import create_app
from router.config import parse_deployment_config, parse_inference_config
from router.metrics import RouterMetrics
from router.registry import Registry
from router.replicas import RegistryReplicaSink
from router.service_requests import (
    Busy,
    InvalidRequest,
    NewService,
    NewVersion,
    UnknownService,
    VersionChanges,
    VersionSource,
)
from router.services import ServiceManager
from router.store import SqliteStore
from router.versions import pod_options_for
from scoring_runtime.listen import bind_tcp
from tests.helpers.processes import pid_alive
from tests.router.control_plane import serving

SCRIPTS = Path(__file__).parent / "scripts"
ONE = {"numReplicas": 1}


def source(script: str = "behave_score.py", **env: str) -> VersionSource:
    inference = parse_inference_config(
        {
            "entryScript": script,
            "sourceDirectory": str(SCRIPTS),
            "environment": {"environmentVariables": env},
        },
        base_dir=Path("/"),
    )
    return VersionSource(inference)


def new_service(name: str, config: dict[str, Any] | None = None, **kw: Any) -> NewService:
    return NewService(name, parse_deployment_config(config or ONE), source(**kw))


def new_version(name: str, config: dict[str, Any] | None = None, **kw: Any) -> NewVersion:
    settings = {k: kw.pop(k) for k in ("traffic_percentile", "is_default", "is_control") if k in kw}
    return NewVersion(name, parse_deployment_config(config or ONE), source(**kw), **settings)


class Clock:
    """time.time, shifted by `offset` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Plane:
    state_dir: Path
    store: SqliteStore
    registry: Registry
    backend: LocalBackend
    manager: ServiceManager
    client: httpx.AsyncClient
    url: str

    async def settled(self, name: str, timeout: float = 30.0) -> str:
        """The service's state once it is no longer Transitioning."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.manager.view(name)["state"]
            if state != "Transitioning":
                return state
            assert time.monotonic() < deadline, f"{name} still Transitioning"
            await asyncio.sleep(0.02)

    async def score(
        self, name: str, key: str | None = None, payload: object = None, **headers: str
    ) -> httpx.Response:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await self.client.post(
            f"/api/v1/service/{name}/score", content=orjson.dumps(payload or {}), headers=headers
        )

    def primary(self, name: str) -> str:
        return self.manager.keys(name)["primaryKey"]


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    state_dir: Path,
    clock: Callable[[], float] = time.time,
    should_act: Callable[[], bool] = lambda: True,
) -> AsyncIterator[Plane]:
    store = SqliteStore(state_dir / "mlfe.db")
    registry = Registry(RouterMetrics())
    sink = RegistryReplicaSink(registry)
    backend = LocalBackend(state_dir, sink, stop_grace=2.0)
    loop = ControlLoop(backend, sink, should_act=should_act)
    sock = bind_tcp("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    manager = ServiceManager(
        store,
        registry,
        loop,
        backend,
        public_url=url,
        clock=clock,
        settle_interval=0.02,
        persist_interval=0.05,
    )
    async with (
        serving(create_app(registry), sock, manager, loop, backend, store),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield Plane(state_dir, store, registry, backend, manager, client, url)


@pytest.fixture
async def plane(state_dir: Path) -> AsyncIterator[Plane]:
    async with running(state_dir) as started:
        yield started


async def test_a_new_service_settles_healthy_and_scores_through_the_router(plane: Plane) -> None:
    config = {"numReplicas": 1, "keys": {"primaryKey": "my-primary-key"}}
    view = await plane.manager.create_service(new_service("svc", config))
    assert view["state"] == "Transitioning"
    assert await plane.settled("svc") == "Healthy"

    view = plane.manager.view("svc")
    assert view["scoringUri"] == f"{plane.url}/api/v1/service/svc/score"
    assert view["swaggerUri"] == f"{plane.url}/api/v1/service/svc/swagger.json"
    assert view["authMode"] == "key"
    assert view["error"] is None
    (version,) = view["versions"]
    assert version["name"] == "svc" and version["isDefault"]
    assert version["replicas"] == {"desired": 1, "ready": 1, "starting": 0, "warm": 0}
    assert version["effectiveTrafficPercentile"] == 100
    assert "keys" not in version["deploymentConfig"]
    datetime.fromisoformat(view["createdTime"])

    keys = plane.manager.keys("svc")
    assert keys["primaryKey"] == "my-primary-key"
    assert len(keys["secondaryKey"]) == 43  # 32 random bytes, urlsafe base64
    response = await plane.score("svc", "my-primary-key", {"echo": "hi"})
    assert response.status_code == 200
    assert response.json()["echo"] == "hi"
    assert (await plane.score("svc", keys["secondaryKey"])).status_code == 200
    assert (await plane.score("svc", "wrong")).status_code == 401
    stored = plane.store.get_service("svc")
    assert stored is not None and stored.primary_key == "my-primary-key"
    metrics = (await plane.client.get("/metrics")).text
    assert 'mlfe_service_state{service="svc",state="Healthy"} 1.0' in metrics
    assert 'mlfe_service_state{service="svc",state="Failed"} 0.0' in metrics

    with pytest.raises(Busy, match="already exists"):
        await plane.manager.create_service(new_service("svc"))


async def test_versions_follow_the_rules_and_split_the_traffic(plane: Plane) -> None:
    manager = plane.manager
    await manager.create_service(new_service("svc"))
    assert await plane.settled("svc") == "Healthy"
    key = plane.primary("svc")

    view = await manager.create_version("svc", new_version("blue", traffic_percentile=30))
    shares = {v["name"]: v["effectiveTrafficPercentile"] for v in view["versions"]}
    assert shares == {"svc": 100, "blue": 0}  # no share before a replica of blue serves
    assert await plane.settled("svc") == "Healthy"
    view = manager.view("svc")
    shares = {v["name"]: v["effectiveTrafficPercentile"] for v in view["versions"]}
    assert shares == {"svc": 70, "blue": 30}
    seen = {(await plane.score("svc", key)).headers["azureml-model-deployment"] for _ in range(60)}
    assert seen == {"svc", "blue"}
    pinned = await plane.score("svc", key, **{"azureml-model-deployment": "blue"})
    assert pinned.headers["azureml-model-deployment"] == "blue"

    with pytest.raises(InvalidRequest, match="add up to 110"):
        await manager.create_version("svc", new_version("cyan", traffic_percentile=80))
    with pytest.raises(Busy, match="version 'blue' already"):
        await manager.create_version("svc", new_version("blue"))

    _, redeploying = await manager.update_version("svc", "blue", VersionChanges(is_control=True))
    assert not redeploying
    with pytest.raises(InvalidRequest, match="'blue' is the control already"):
        await manager.create_version("svc", new_version("cyan", is_control=True))
    with pytest.raises(InvalidRequest, match="is the default"):
        await manager.update_version("svc", "svc", VersionChanges(is_default=False))

    view, redeploying = await manager.update_version("svc", "blue", VersionChanges(is_default=True))
    assert not redeploying
    flags = {v["name"]: (v["isDefault"], v["effectiveTrafficPercentile"]) for v in view["versions"]}
    assert flags == {"svc": (False, 0), "blue": (True, 100)}
    with pytest.raises(InvalidRequest, match="set another default first"):
        await manager.delete_version("svc", "blue")

    await manager.update_version("svc", "svc", VersionChanges(is_default=True))
    view = await manager.delete_version("svc", "blue")
    assert [v["name"] for v in view["versions"]] == ["svc"]
    await plane.settled("svc")
    with pytest.raises(LookupError):
        plane.backend.status(DeploymentKey("svc", "blue"))
    stored = plane.store.get_service("svc")
    assert stored is not None and [v.name for v in stored.versions] == ["svc"]
    with pytest.raises(UnknownService):
        await manager.update_version("svc", "blue", VersionChanges(traffic_percentile=1))

    for name in ("ver1", "ver2", "ver3", "ver4", "ver5"):
        await manager.create_version("svc", new_version(name))
        await plane.settled("svc")
    with pytest.raises(InvalidRequest, match="6 versions"):
        await manager.create_version("svc", new_version("ver6"))

    await manager.create_service(new_service("single"))
    await plane.settled("single")
    with pytest.raises(InvalidRequest, match="last version"):
        await manager.delete_version("single", "single")


async def test_a_change_while_another_is_in_progress_is_refused(plane: Plane) -> None:
    manager = plane.manager
    await manager.create_service(
        new_service("slow", script="slow_init.py", SLOW_INIT_SECONDS="1.5")
    )
    assert manager.view("slow")["state"] == "Transitioning"
    with pytest.raises(Busy, match="Transitioning"):
        await manager.create_version("slow", new_version("blue"))
    with pytest.raises(Busy, match="Transitioning"):
        await manager.update_service("slow", VersionChanges(deployment_changes={"numReplicas": 2}))
    with pytest.raises(Busy, match="Transitioning"):
        await manager.update_version("slow", "slow", VersionChanges(traffic_percentile=50))
    # Keys are not an operation: they change at once, whatever else is going on.
    await manager.regenerate_key("slow", "Secondary")

    assert await plane.settled("slow") == "Healthy"
    view, redeploying = await manager.update_version(
        "slow", "slow", VersionChanges(traffic_percentile=50)
    )
    assert not redeploying and view["state"] == "Healthy"


async def test_a_regenerated_key_is_in_force_at_once(plane: Plane) -> None:
    manager = plane.manager
    await manager.create_service(new_service("svc"))
    await plane.settled("svc")
    old = manager.keys("svc")
    assert (await plane.score("svc", old["primaryKey"])).status_code == 200

    keys = await manager.regenerate_key("svc", "Primary")
    assert keys["primaryKey"] != old["primaryKey"]
    assert keys["secondaryKey"] == old["secondaryKey"]
    assert (await plane.score("svc", old["primaryKey"])).status_code == 401
    assert (await plane.score("svc", keys["primaryKey"])).status_code == 200
    assert (await plane.score("svc", old["secondaryKey"])).status_code == 200

    keys = await manager.regenerate_key("svc", "Secondary", "chosen-by-me")
    assert keys["secondaryKey"] == "chosen-by-me"
    assert (await plane.score("svc", "chosen-by-me")).status_code == 200
    assert (await plane.score("svc", old["secondaryKey"])).status_code == 401
    stored = plane.store.get_service("svc")
    assert stored is not None and stored.secondary_key == "chosen-by-me"
    with pytest.raises(InvalidRequest, match="keyValue"):
        await manager.regenerate_key("svc", "Primary", "has a space")


async def test_tokens_work_until_they_expire(state_dir: Path) -> None:
    clock = Clock()
    async with running(state_dir, clock=clock) as plane:
        manager = plane.manager
        config = {"numReplicas": 1, "authEnabled": False, "tokenAuthEnabled": True}
        await manager.create_service(new_service("tok", config))
        await plane.settled("tok")
        assert manager.view("tok")["authMode"] == "token"

        token = manager.token("tok")
        assert token["tokenType"] == "Bearer"
        expiry = datetime.fromisoformat(token["expiryOn"]).timestamp()
        refresh = datetime.fromisoformat(token["refreshAfter"]).timestamp()
        assert expiry - time.time() == pytest.approx(3600, abs=5)
        assert refresh - time.time() == pytest.approx(1800, abs=5)
        assert (await plane.score("tok", token["accessToken"])).status_code == 200
        assert (await plane.score("tok", plane.primary("tok"))).status_code == 401

        clock.offset = -7200  # issued two hours ago: expired an hour ago
        expired = manager.token("tok")["accessToken"]
        assert (await plane.score("tok", expired)).status_code == 401

        await manager.create_service(new_service("keyed"))
        with pytest.raises(InvalidRequest, match="not token auth"):
            manager.token("keyed")


async def test_a_failing_init_shows_as_failed_with_its_log_tail(plane: Plane) -> None:
    manager = plane.manager
    await manager.create_service(new_service("broken", script="failing_init.py"))
    assert await plane.settled("broken") == "Failed"
    view = manager.view("broken")
    assert "model.pkl is missing from the model directory" in view["error"]
    assert view["versions"][0]["state"] == "Failed"
    logs = await manager.logs("broken", tail=50)
    assert logs["version"] == "broken"
    assert any("FileNotFoundError" in replica["log"] for replica in logs["replicas"])

    # Fixing the entry script is an update like any other.
    fixed = VersionChanges(inference=source().inference)
    await manager.update_service("broken", fixed)
    assert await plane.settled("broken") == "Healthy"
    assert (await plane.score("broken", plane.primary("broken"))).status_code == 200


async def test_a_new_manager_on_the_same_store_restores_everything(state_dir: Path) -> None:
    autoscaled = {"autoScaler": {"minReplicas": 1, "maxReplicas": 3, "warmReplicas": 0}}
    async with running(state_dir) as plane:
        manager = plane.manager
        await manager.create_service(new_service("svc"))
        await plane.settled("svc")
        await manager.create_version("svc", new_version("blue", traffic_percentile=25))
        await plane.settled("svc")
        await manager.regenerate_key("svc", "Primary", "kept-across-restarts")
        await manager.create_service(new_service("auto", autoscaled))
        await plane.settled("auto")
        before = {name: manager.view(name) for name in ("svc", "auto")}
        # As the autoscaler would have saved it after a busy minute.
        plane.store.set_desired_replicas("auto", "auto", 2)

    async with running(state_dir) as plane:
        manager = plane.manager
        assert [v["name"] for v in manager.list_views()] == ["auto", "svc"]
        assert await plane.settled("svc") == "Healthy"
        assert await plane.settled("auto") == "Healthy"
        after = manager.view("svc")
        for field in ("authMode", "scoringUri", "createdTime"):
            assert after[field] == before["svc"][field] or field == "scoringUri"
        for old, new in zip(before["svc"]["versions"], after["versions"], strict=True):
            for field in ("name", "isDefault", "trafficPercentile", "effectiveTrafficPercentile"):
                assert new[field] == old[field]
            assert new["deploymentConfig"] == old["deploymentConfig"]
        assert manager.keys("svc")["primaryKey"] == "kept-across-restarts"
        response = await plane.score("svc", "kept-across-restarts")
        assert response.status_code == 200
        status = plane.backend.status(DeploymentKey("auto", "auto"))
        assert status.desired == 2 and status.ready == 2


async def test_autoscaler_decisions_are_saved(plane: Plane) -> None:
    config = {
        "autoScaler": {
            "minReplicas": 1,
            "maxReplicas": 2,
            "warmReplicas": 0,
            "refreshPeriodInSeconds": 0.1,
        }
    }
    await plane.manager.create_service(new_service("busy", config))
    await plane.settled("busy")
    key = plane.primary("busy")
    load = [asyncio.create_task(plane.score("busy", key, {"sleep": 1.5})) for _ in range(2)]
    await eventually(lambda: plane.store.desired_replicas("busy", "busy") == 2)
    assert all(r.status_code == 200 for r in await asyncio.gather(*load))


async def test_a_slot_count_change_redeploys_into_the_new_pool(plane: Plane) -> None:
    manager = plane.manager
    await manager.create_service(new_service("svc"))
    await plane.settled("svc")
    key = plane.primary("svc")
    first_pid = (await plane.score("svc", key)).json()["pid"]

    changes = VersionChanges(deployment_changes={"maxConcurrentRequestsPerContainer": 2})
    _, redeploying = await manager.update_version("svc", "svc", changes)
    assert redeploying
    assert await plane.settled("svc") == "Healthy"
    deployment = plane.registry.deployment("svc", "svc")
    assert deployment.spec.slots_per_replica == 2
    assert deployment.pool.ready_replicas == 1
    response = await plane.score("svc", key)
    assert response.status_code == 200 and response.json()["pid"] != first_pid


async def test_a_replica_past_its_timeout_is_recycled(plane: Plane) -> None:
    await plane.manager.create_service(new_service("svc"))
    await plane.settled("svc")
    key = DeploymentKey("svc", "svc")
    (stuck,) = plane.backend.replicas(key)
    on_timeout = plane.registry.on_replica_timeout
    assert on_timeout is not None
    on_timeout("svc", "svc", stuck.id)  # what the data plane does on a 504

    def replaced() -> bool:
        replicas = plane.backend.replicas(key)
        return stuck.id not in {r.id for r in replicas} and any(r.serving for r in replicas)

    await eventually(replaced)
    assert (await plane.score("svc", plane.primary("svc"))).status_code == 200


async def test_a_deleted_service_stops_its_replicas_and_its_name_is_free_again(
    plane: Plane,
) -> None:
    manager = plane.manager
    await manager.create_service(new_service("svc"))
    await plane.settled("svc")
    (replica,) = plane.backend.replicas(DeploymentKey("svc", "svc"))
    await manager.delete_service("svc")
    with pytest.raises(UnknownService):
        manager.view("svc")
    assert plane.store.get_service("svc") is None
    await eventually(lambda: "svc" not in plane.registry.routes)
    assert (await plane.score("svc")).status_code == 404
    assert replica.pid is not None and not pid_alive(replica.pid)

    await manager.create_service(new_service("svc"))
    assert await plane.settled("svc") == "Healthy"


async def test_only_a_loop_that_acts_saves_replica_counts(state_dir: Path) -> None:
    """With several routers only the leader's counts are the cluster's: the others keep
    theirs to themselves."""
    leading = False
    config = {"autoScaler": {"minReplicas": 1, "maxReplicas": 2, "refreshPeriodInSeconds": 0.1}}
    async with running(state_dir, should_act=lambda: leading) as plane:
        await plane.manager.create_service(new_service("busy", config))
        await plane.settled("busy")
        await asyncio.sleep(0.3)  # several persist intervals
        assert plane.store.desired_replicas("busy", "busy") is None
        leading = True
        await eventually(lambda: plane.store.desired_replicas("busy", "busy") == 1)


async def test_pod_options_follow_the_deployment_configuration(plane: Plane) -> None:
    config = {
        "numReplicas": 1,
        "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 2, "cpuLimit": 1},
        "livenessProbeRequirements": {"periodSeconds": 5, "failureThreshold": 4},
    }
    expected = PodOptions(
        cpu=0.5,
        memory_gb=2,
        cpu_limit=1,
        liveness_period_seconds=5,
        liveness_failure_threshold=4,
    )
    assert pod_options_for(parse_deployment_config(config)) == expected
    await plane.manager.create_service(new_service("svc", config))
    assert plane.manager.pod_options(DeploymentKey("svc", "svc")) == expected
    assert plane.manager.pod_options(DeploymentKey("svc", "nope")) == PodOptions()
    await plane.settled("svc")
    # New resources are new pods: the version rolls.
    changes = VersionChanges(deployment_changes={"containerResourceRequirements": {"cpu": 1}})
    _, redeploying = await plane.manager.update_version("svc", "svc", changes)
    assert redeploying
    assert plane.manager.pod_options(DeploymentKey("svc", "svc")).cpu == 1


async def test_a_second_router_on_the_same_store_follows_what_the_first_changes(
    state_dir: Path,
) -> None:
    """Two managers on one store, as two router pods on one cluster store: the second is
    told of each change (by a watch on Kubernetes) and follows it without deploying."""
    second_dir = state_dir / "second"
    second_dir.mkdir()
    async with running(state_dir) as first:
        follower_store = SqliteStore(state_dir / "mlfe.db")
        registry = Registry(RouterMetrics())
        sink = RegistryReplicaSink(registry)
        backend = LocalBackend(second_dir, sink, stop_grace=2.0)
        loop = ControlLoop(backend, sink)
        second = ServiceManager(follower_store, registry, loop, backend, public_url="http://second")
        try:
            await second.restore()
            await first.manager.create_service(new_service("svc"))
            second.service_changed_elsewhere("svc")
            await eventually(lambda: "svc" in registry.routes)
            assert second.keys("svc") == first.manager.keys("svc")
            with pytest.raises(LookupError):  # it deployed nothing itself
                backend.replicas(DeploymentKey("svc", "svc"))

            await first.settled("svc")
            await first.manager.regenerate_key("svc", "Primary", "a-new-primary-key")
            second.service_changed_elsewhere("svc")
            second.service_changed_elsewhere("svc")  # told twice: one more round at most
            await eventually(lambda: second.keys("svc")["primaryKey"] == "a-new-primary-key")

            await first.manager.create_version("svc", new_version("blue", traffic_percentile=20))
            second.service_changed_elsewhere("svc")
            await eventually(lambda: "blue" in registry.routes["svc"].deployments)
            # Not serving on the second router before its replicas are seen in rotation.
            assert dict(registry.routes["svc"].traffic.weights).get("blue", 0.0) == 0.0

            await first.manager.delete_service("svc")
            second.service_changed_elsewhere("svc")
            await eventually(lambda: "svc" not in registry.routes)
            with pytest.raises(UnknownService):
                second.view("svc")
        finally:
            await second.close()
            await loop.close()
            await backend.close()
            follower_store.close()
