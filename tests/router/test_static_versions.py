"""Bring your own replicas: versions whose inferenceConfig lists `replicaUrls`.

Two real `python -m scoring_runtime` processes on TCP ports stand for existing
containers. The router is assembled as `mlfe serve` assembles it (MixedBackend over the
local and the static backend, the management API mounted, a loopback socket), with a
short probe interval so "taken out of rotation" takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount

from autoscaler.backends.local import LocalBackend
from autoscaler.backends.mixed import MixedBackend
from autoscaler.backends.static import StaticBackend
from autoscaler.loop import ControlLoop
from router.app import create_app
from router.config import (
    ConfigError,
    InferenceConfig,
    inference_config_to_json,
    parse_deployment_config,
    parse_inference_config,
    static_deployment_config,
)
from router.manage import PREFIX, create_manage_app
from router.metrics import RouterMetrics
from router.registry import Registry
from router.replicas import RegistryReplicaSink
from router.services import ServiceManager
from router.store import SqliteStore
from scoring_runtime.listen import bind_tcp
from tests.helpers.runtime_proc import RuntimeProcess, start_runtime
from tests.helpers.waiting import eventually
from tests.router.control_plane import serving

SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT = SCRIPTS / "behave_score.py"
ADMIN_KEY = "static-versions-admin-key"
API = "/api/v1/manage"
PROBE_INTERVAL = 0.1


# -- configuration: pure ------------------------------------------------------------------


def test_replica_urls_parse_normalised_and_round_trip() -> None:
    urls = ["http://10.0.0.5:5001/", "http://Scorer.internal", "http://[::1]:8080"]
    config = parse_inference_config({"replicaUrls": urls}, base_dir=Path("/nowhere"))
    assert config == InferenceConfig(
        replica_urls=("http://10.0.0.5:5001", "http://scorer.internal:80", "http://[::1]:8080")
    )
    assert config.entry_script is None and config.source_directory is None
    stored = inference_config_to_json(config)
    assert stored == {"replicaUrls": list(config.replica_urls)}
    assert parse_inference_config(stored, base_dir=Path("/"), check_files=False) == config


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (
            {"replicaUrls": ["http://a:1"], "entryScript": "score.py"},
            "replicaUrls",
            "not both",
        ),
        ({"replicaUrls": ["http://a:1"], "sourceDirectory": "/src"}, "replicaUrls", "not both"),
        ({}, "entryScript", "or replicaUrls"),
        ({"replicaUrls": []}, "replicaUrls", "non-empty list"),
        ({"replicaUrls": "http://a:1"}, "replicaUrls", "non-empty list"),
        ({"replicaUrls": [5001]}, "replicaUrls[0]", "must be a URL"),
        ({"replicaUrls": ["https://a:1"]}, "replicaUrls[0]", "plain HTTP"),
        ({"replicaUrls": ["a:5001"]}, "replicaUrls[0]", "http URL"),
        ({"replicaUrls": ["10.0.0.5:5001"]}, "replicaUrls[0]", "http URL"),
        ({"replicaUrls": ["http://a:1/score"]}, "replicaUrls[0]", "host and port only"),
        ({"replicaUrls": ["http://a:1/?x=1"]}, "replicaUrls[0]", "host and port only"),
        ({"replicaUrls": ["http://a:99999"]}, "replicaUrls[0]", "not a valid URL"),
        ({"replicaUrls": ["http://a:0"]}, "replicaUrls[0]", "port 0"),
        ({"replicaUrls": ["http://user:pw@a:1"]}, "replicaUrls[0]", "credentials"),
        ({"replicaUrls": ["http://a b:1"]}, "replicaUrls[0]", "host name"),
        ({"replicaUrls": [" http://a:1"]}, "replicaUrls[0]", "must be a URL"),
        ({"replicaUrls": ["http://a:1", "http://A:1/"]}, "replicaUrls[1]", "again"),
        (
            {"replicaUrls": ["http://a:1"], "environment": {"environmentVariables": {"X": "1"}}},
            "environment.environmentVariables",
            "does not start",
        ),
    ],
)
def test_invalid_replica_urls_are_refused_naming_the_key(
    data: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_inference_config(data, base_dir=Path("/"), check_files=False)
    assert raised.value.key == key
    assert words in raised.value.message


def test_a_static_version_has_exactly_its_urls_as_replicas() -> None:
    fixed = static_deployment_config(parse_deployment_config({}), 3)
    assert fixed.num_replicas == 3
    assert not fixed.autoscale.enabled and fixed.autoscale.warm_replicas == 0
    # Saying the same is fine; saying otherwise is refused, naming the key.
    assert static_deployment_config(parse_deployment_config({"numReplicas": 3}), 3) == fixed
    for given, key in (
        ({"numReplicas": 2}, "numReplicas"),
        ({"autoScaler": {"maxReplicas": 4}}, "autoScaler"),
        ({"environmentVariables": {"A": "b"}}, "environmentVariables"),
    ):
        with pytest.raises(ConfigError) as raised:
            static_deployment_config(parse_deployment_config(given), 3)
        assert raised.value.key == key
    # An update that does not mention scaling keeps nothing of the old scaling.
    autoscaled = parse_deployment_config({"autoScaler": {"maxReplicas": 4}})
    assert static_deployment_config(autoscaled, 3, given={"scoringTimeoutMs"}) == fixed


# -- through the management API and the router ---------------------------------------------


@dataclass
class Plane:
    manager: ServiceManager
    registry: Registry
    client: httpx.AsyncClient

    async def deploy(self, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"{API}/services", json=body)

    async def view(self, name: str) -> dict[str, Any]:
        response = await self.client.get(f"{API}/services/{name}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def settled(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.view(name)
            if found["state"] != "Transitioning":
                return found
            assert time.monotonic() < deadline, f"{name} still Transitioning: {found}"
            await asyncio.sleep(0.02)

    async def score(self, name: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        return await self.client.post(f"/api/v1/service/{name}/score", json=payload or {})

    def ready(self, name: str, version: str) -> int:
        return self.registry.deployment(name, version).pool.ready_replicas


@asynccontextmanager
async def running(state_dir: Path) -> AsyncIterator[Plane]:
    store = SqliteStore(state_dir / "mlfe.db")
    registry = Registry(RouterMetrics())
    sink = RegistryReplicaSink(registry)
    static = StaticBackend(sink, probe_interval=PROBE_INTERVAL, failure_threshold=1)
    backend = MixedBackend(LocalBackend(state_dir, sink, stop_grace=2.0), static)
    loop = ControlLoop(backend, sink)
    sock = bind_tcp("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    manager = ServiceManager(store, registry, loop, backend, public_url=url, settle_interval=0.02)
    manage = Mount(PREFIX, app=create_manage_app(manager, ADMIN_KEY))
    app = create_app(registry, extra_routes=[manage])
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with (
        serving(app, sock, manager, loop, backend, store),
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
    ):
        yield Plane(manager, registry, client)


@pytest.fixture
async def plane(state_dir: Path) -> AsyncIterator[Plane]:
    async with running(state_dir) as started:
        yield started


@pytest.fixture
async def containers() -> AsyncIterator[list[RuntimeProcess]]:
    """Two replicas someone else runs: scoring runtimes on free TCP ports."""
    started = await asyncio.gather(*(asyncio.to_thread(start_runtime, SCRIPT) for _ in range(2)))
    yield list(started)
    for runtime in started:
        runtime.stop()


def static_body(name: str, urls: list[str], **deployment: Any) -> dict[str, Any]:
    return {
        "name": name,
        "inferenceConfig": {"replicaUrls": urls},
        "deploymentConfig": {"authEnabled": False, **deployment},
    }


async def pids_of(plane: Plane, name: str, count: int, sleep: float = 0.0) -> set[int]:
    """The replica pids that answer `count` concurrent requests, every one succeeding."""
    answers = await asyncio.gather(*(plane.score(name, {"sleep": sleep}) for _ in range(count)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return {a.json()["pid"] for a in answers}


async def test_requests_spread_over_the_urls_and_skip_one_that_is_down(
    plane: Plane, containers: list[RuntimeProcess]
) -> None:
    first, second = containers
    urls = [first.base_url, second.base_url]
    created = await plane.deploy(static_body("byo", urls))
    assert created.status_code == 202, created.text
    view = await plane.settled("byo")
    assert view["state"] == "Healthy", view
    (version,) = view["versions"]
    assert version["inferenceConfig"] == {"replicaUrls": urls}
    assert version["replicas"] == {"desired": 2, "ready": 2, "starting": 0, "warm": 0}
    assert version["deploymentConfig"]["numReplicas"] == 2
    assert version["deploymentConfig"]["autoScaler"] == {"autoscaleEnabled": False}
    assert version["models"] == [] and version["modelDir"] is None

    # Two requests at a time, one slot each: both containers serve.
    assert await pids_of(plane, "byo", 2, sleep=0.3) == {first.pid, second.pid}

    first.stop()
    # Never delivered to the stopped one (connect refused) is retried on the other: no
    # request fails, before or after the probe takes it out.
    for _ in range(5):
        assert await pids_of(plane, "byo", 1) == {second.pid}
    await eventually(lambda: plane.ready("byo", "byo") == 1)
    view = await plane.view("byo")
    assert view["state"] == "Healthy"  # one replica serves
    assert view["versions"][0]["replicas"]["ready"] == 1
    logs = (await plane.client.get(f"{API}/services/byo/logs")).json()
    states = {r["id"]: r["state"] for r in logs["replicas"]}
    assert states == {first.base_url: "Unhealthy", second.base_url: "Ready"}

    # The container comes back on its port: back in rotation.
    port = first.port
    assert port is not None
    restarted = await asyncio.to_thread(start_runtime, SCRIPT, args=["--port", str(port)])
    try:
        await eventually(lambda: plane.ready("byo", "byo") == 2)
        assert await pids_of(plane, "byo", 2, sleep=0.3) == {restarted.pid, second.pid}

        second.stop()
        restarted.stop()
        await eventually(lambda: plane.ready("byo", "byo") == 0)
        view = await plane.view("byo")
        assert view["state"] == "Unhealthy"
        assert first.base_url in view["error"] and second.base_url in view["error"]
    finally:
        restarted.stop()


async def test_scaling_models_and_forms_that_contradict_urls_are_refused(plane: Plane) -> None:
    urls = ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    refusals = [
        (static_body("bad", urls, numReplicas=3), "deploymentConfig.numReplicas"),
        (static_body("bad", urls, autoScaler={"maxReplicas": 4}), "deploymentConfig.autoScaler"),
        ({**static_body("bad", urls), "models": [f"m:1:{SCRIPTS}"]}, "models and modelDir"),
        ({**static_body("bad", urls), "modelDir": str(SCRIPTS)}, "models and modelDir"),
        (
            {
                **static_body("bad", urls),
                "inferenceConfig": {"replicaUrls": urls, "entryScript": str(SCRIPT)},
            },
            "inferenceConfig.replicaUrls",
        ),
        (
            {**static_body("bad", urls), "inferenceConfig": {"replicaUrls": ["https://x:1"]}},
            "inferenceConfig.replicaUrls[0]",
        ),
        ({**static_body("bad", urls), "inferenceConfig": {}}, "inferenceConfig.entryScript"),
    ]
    for body, words in refusals:
        response = await plane.deploy(body)
        assert response.status_code == 400, response.text
        assert words in response.json()["message"], response.text
    assert (await plane.client.get(f"{API}/services/bad")).status_code == 404

    # numReplicas equal to the number of urls says nothing new.
    response = await plane.deploy(static_body("fine", urls, numReplicas=2))
    assert response.status_code == 202, response.text
    view = await plane.settled("fine")
    assert view["state"] == "Unhealthy"  # nothing listens on those ports
    assert "http://127.0.0.1:9" in view["error"]


async def test_a_version_switches_between_urls_and_an_entry_script(
    state_dir: Path, containers: list[RuntimeProcess]
) -> None:
    first, second = containers
    urls = [first.base_url, second.base_url]
    async with running(state_dir) as plane:
        assert (await plane.deploy(static_body("flip", urls))).status_code == 202
        await plane.settled("flip")
        theirs = {first.pid, second.pid}

        # To an entry script: two replicas of ours (the count the urls had) take over.
        changes = {"inferenceConfig": {"entryScript": str(SCRIPT)}}
        response = await plane.client.patch(f"{API}/services/flip", json=changes)
        assert response.status_code == 202, response.text
        view = await plane.settled("flip")
        assert view["state"] == "Healthy", view
        assert view["versions"][0]["replicas"]["ready"] == 2
        await eventually(lambda: plane.ready("flip", "flip") == 2)  # the urls left
        ours = await pids_of(plane, "flip", 2, sleep=0.3)
        assert len(ours) == 2 and not ours & theirs

        # And back, the urls restored by a restart from the store.
        changes = {"inferenceConfig": {"replicaUrls": urls[:1]}}
        response = await plane.client.patch(f"{API}/services/flip", json=changes)
        assert response.status_code == 202, response.text
        view = await plane.settled("flip")
        assert view["versions"][0]["replicas"]["desired"] == 1
        await eventually(lambda: plane.ready("flip", "flip") == 1)
        assert await pids_of(plane, "flip", 2) == {first.pid}

    async with running(state_dir) as plane:
        view = await plane.settled("flip")
        assert view["state"] == "Healthy", view
        assert view["versions"][0]["inferenceConfig"] == {"replicaUrls": urls[:1]}
        assert await pids_of(plane, "flip", 2) == {first.pid}
