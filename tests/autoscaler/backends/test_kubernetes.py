"""The Kubernetes backend against the in-repo API server, with real pods and a real router.

The fake kubelet runs each pod's `python -m scoring_runtime` as a local process on its
own loopback address, so a request goes client -> router -> EndpointSlice address ->
runtime exactly as it would in a cluster. Each test uses its own service name; the
module shares one cluster.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from kubernetes import client

from autoscaler.backends.base import DeploymentKey, DeploymentState, ReplicaTemplate
from autoscaler.backends.kube_api import api_call, connect
from autoscaler.backends.kube_manifests import (
    ModelsVolume,
    PodOptions,
    build_manifests,
    deployment_name,
)
from autoscaler.backends.kubernetes import RBAC_RULES, KubernetesBackend
from router.app import create_app
from router.metrics import RouterMetrics
from router.registry import Registry, ServiceSpec, VersionSpec
from router.replicas import RegistryReplicaSink
from router.server import uvicorn_server
from scoring_runtime.listen import bind_tcp
from tests.helpers.waiting import eventually
from tests.kube import Cluster, start_cluster

NAMESPACE = "default"
SCRIPTS = Path(__file__).parent.parent / "scripts"
FAILING = SCRIPTS / "failing_init.py"

SCORE = """
import json
import os
import time

from lib.helper import greeting


def init():
    global model
    model = None
    if "AZUREML_MODEL_DIR" in os.environ:
        with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")) as f:
            model = f.read().strip()


def run(raw_data):
    request = json.loads(raw_data) if raw_data else {}
    time.sleep(float(request.get("sleep", 0)))
    return {"pid": os.getpid(), "model": model, "greeting": greeting(), "tag": os.environ.get("TAG")}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(crash_backoff_s=(0.2, 1.0), bookmark_interval_s=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def models() -> Iterator[Path]:
    """A hostPath models volume with one model directory in it."""
    root = Path(tempfile.mkdtemp(prefix="mlfe-models"))
    (root / "iris" / "1").mkdir(parents=True)
    (root / "iris" / "1" / "model.txt").write_text("iris-v1\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    """A source directory with a subfolder: shipped to the pods in a ConfigMap."""
    root = Path(tempfile.mkdtemp(prefix="mlfe-src"))
    (root / "score.py").write_text(textwrap.dedent(SCORE))
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "helper.py").write_text("def greeting():\n    return 'hello from lib'\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


class RecordingSink(RegistryReplicaSink):
    """The router's sink, noting every call so tests can check none is lost or repeated."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self.calls: list[tuple[str, str, str]] = []

    def replica_ready(self, key: DeploymentKey, replica_id: str, address: str) -> None:
        self.calls.append(("ready", str(key), replica_id))
        super().replica_ready(key, replica_id, address)

    def replica_draining(self, key: DeploymentKey, replica_id: str) -> Awaitable[None]:
        self.calls.append(("draining", str(key), replica_id))
        return super().replica_draining(key, replica_id)

    def replica_removed(self, key: DeploymentKey, replica_id: str) -> None:
        self.calls.append(("removed", str(key), replica_id))
        super().replica_removed(key, replica_id)

    def of(self, key: DeploymentKey, kind: str) -> list[str]:
        return [pod for what, k, pod in self.calls if what == kind and k == str(key)]


class Router:
    """One router pod: registry, data plane on a real socket, and its Kubernetes backend."""

    def __init__(self, cluster: Cluster, models: Path) -> None:
        self.registry = Registry(RouterMetrics())
        self.sink = RecordingSink(self.registry)
        self.api = cluster.api_client()
        self.backend = KubernetesBackend(
            self.api,
            NAMESPACE,
            self.sink,
            models_volume=ModelsVolume.host(models),
            # Small requests: the fake node has room for every test's pods.
            pod_options=lambda key: PodOptions(cpu=0.01, memory_gb=0.01),
            watch_timeout=30,
        )
        self.client: httpx.AsyncClient

    def add_service(self, name: str) -> DeploymentKey:
        version = VersionSpec("v1", scoring_timeout=10.0, max_queue_wait=10.0)
        spec = ServiceSpec(name=name, versions=(version,), default_version="v1", auth_mode="none")
        self.registry.set_service(spec)
        return DeploymentKey(name, "v1")

    def pool_ready(self, key: DeploymentKey) -> int:
        return self.registry.deployment(key.service, key.version).pool.ready_replicas

    async def score(self, key: DeploymentKey, sleep: float = 0.0) -> httpx.Response:
        body = orjson.dumps({"sleep": sleep})
        return await self.client.post(f"/api/v1/service/{key.service}/score", content=body)


@pytest.fixture
async def router(cluster: Cluster, models: Path) -> AsyncIterator[Router]:
    routed = Router(cluster, models)
    server = uvicorn_server(create_app(routed.registry))
    sock = bind_tcp("127.0.0.1", 0)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        routed.client = http
        try:
            yield routed
        finally:
            await routed.backend.close()
            server.should_exit = True
            await serving
            await asyncio.to_thread(_remove_everything, cluster, routed.api)
            routed.api.close()


def names(list_objects: Callable[..., object], selector: str) -> list[str]:
    """Names of the objects a list call returns for a label selector."""
    listed = api_call(list_objects, NAMESPACE, label_selector=selector)
    return [item["metadata"]["name"] for item in listed["items"]]


def _remove_everything(cluster: Cluster, api: client.ApiClient) -> None:
    """Delete what a test left behind and wait for its pod processes to end."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    for name in names(apps.list_namespaced_deployment, "mlfe.io/service"):
        apps.delete_namespaced_deployment(name, NAMESPACE)
    for name in names(core.list_namespaced_service, "mlfe.io/service"):
        core.delete_namespaced_service(name, NAMESPACE)
    cluster.wait_for(lambda: not cluster.pod_processes(), timeout_s=30)


def template(project: Path, **settings: object) -> ReplicaTemplate:
    return ReplicaTemplate(
        entry_script=str(project / "score.py"),
        source_dir=str(project),
        **settings,  # type: ignore[arg-type]
    )


def state(backend: KubernetesBackend, key: DeploymentKey) -> DeploymentState:
    return backend.status(key).state


# -- the manifests -------------------------------------------------------------------------


def test_manifests_are_kubernetes_objects_the_client_reads_back_unchanged(
    project: Path, models: Path
) -> None:
    """Every field is one the API knows: a round trip through the client's models keeps it."""
    key = DeploymentKey("a-service-with-a-long-name-for-hashing", "a-version-named-at-length")
    options = PodOptions(cpu=0.5, memory_gb=1.5, cpu_limit=1, memory_gb_limit=2, gpu=1)
    built = build_manifests(
        key,
        template(project, environment={"TAG": "x"}, slots=2, scoring_timeout_ms=1500),
        3,
        namespace=NAMESPACE,
        options=options,
        models_volume=ModelsVolume.host(models),
    )
    api = client.ApiClient()
    for manifest, kind in ((built.deployment, "V1Deployment"), (built.service, "V1Service")):
        model = api.deserialize(orjson.dumps(manifest).decode(), kind, "application/json")
        assert api.sanitize_for_serialization(model) == manifest
    name = deployment_name(key)
    assert (
        len(name) <= 63
        and name.startswith("mlfe-a-service")
        and name == built.service["metadata"]["name"]
    )
    container = built.deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "0.5", "memory": "1.5Gi"},
        "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["TAG"] == "x" and env["MLFE_MAX_CONCURRENT"] == "2"
    assert env["SCORING_TIMEOUT_MS"] == "1500"
    assert env["AZUREML_ENTRY_SCRIPT"] == "/var/mlfe/src/score.py"
    assert built.source is not None
    assert sorted(built.source["data"].values())[-1].startswith("def greeting")

    with pytest.raises(ValueError, match="outside the models volume"):
        build_manifests(
            key,
            template(project, model_dir="/elsewhere"),
            1,
            namespace=NAMESPACE,
            models_volume=ModelsVolume.host(models),
        )


# -- against the cluster -------------------------------------------------------------------


async def test_deploy_serves_traffic_through_the_router_then_scales_and_deletes(
    router: Router, cluster: Cluster, project: Path, models: Path
) -> None:
    key = router.add_service("iris")
    backend = router.backend
    await backend.deploy(
        key,
        template(project, model_dir=str(models / "iris" / "1"), environment={"TAG": "blue"}),
        replicas=1,
        warm=0,
    )
    assert state(backend, key) is DeploymentState.TRANSITIONING
    await eventually(lambda: state(backend, key) is DeploymentState.HEALTHY)
    assert router.pool_ready(key) == backend.ready_count(key) == 1

    response = await router.score(key)
    assert response.status_code == 200, response.text
    body = response.json()
    # Source from the ConfigMap (with its subfolder), model from the volume, env passed.
    assert body["model"] == "iris-v1" and body["greeting"] == "hello from lib"
    assert body["tag"] == "blue"

    # A second router pod follows the same deployment without writing anything.
    other = Router(cluster, models)
    other.add_service("iris")
    await other.backend.track(key)
    await eventually(lambda: other.pool_ready(key) == 1)

    await backend.scale(key, 3)
    await eventually(lambda: router.pool_ready(key) == 3 and other.pool_ready(key) == 3)
    assert backend.status(key).ready == 3
    assert other.backend.status(key).desired == 3
    answers = await asyncio.gather(*(router.score(key, sleep=0.3) for _ in range(6)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["pid"] for a in answers}) == 3  # every replica takes its share

    await backend.scale(key, 1)
    await eventually(lambda: router.pool_ready(key) == 1 and other.pool_ready(key) == 1)
    assert (await router.score(key)).status_code == 200
    assert backend.status(key).state is DeploymentState.HEALTHY

    # A new template rolls out under load: new pods serve before old ones go.
    statuses: list[int] = []
    tags: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            answer = await router.score(key, sleep=0.05)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                tags.append(answer.json()["tag"])

    clients = [asyncio.create_task(load()) for _ in range(2)]
    try:
        green = template(
            project, model_dir=str(models / "iris" / "1"), environment={"TAG": "green"}
        )
        await backend.deploy(key, green, replicas=1, warm=0)
        assert state(backend, key) is DeploymentState.TRANSITIONING
        await eventually(lambda: state(backend, key) is DeploymentState.HEALTHY)
        await eventually(lambda: router.pool_ready(key) == 1 and tags[-1] == "green")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert set(statuses) == {200}, "a request failed during the rollout"
    core = client.CoreV1Api(router.api)
    sources = names(core.list_namespaced_config_map, "mlfe.io/service=iris")
    assert len(sources) == 1  # same source files: the same ConfigMap

    # A stuck replica is replaced by a fresh pod.
    # (The old template's pod may still be draining: it is not the one in rotation.)
    pool = router.registry.deployment("iris", "v1").pool
    [stuck] = [r.id for r in pool.replicas if not r.draining]
    assert backend.recycle(key, stuck)
    assert not backend.recycle(key, stuck)
    await eventually(
        lambda: (
            {r.id for r in router.registry.deployment("iris", "v1").pool.replicas if not r.draining}
            - {stuck}
        )
    )
    logs = await backend.logs(key)
    assert logs and all(entry.state in ("Ready", "Starting", "Terminating") for entry in logs)

    await backend.delete(key)
    await other.backend.close()
    other.api.close()
    assert router.pool_ready(key) == 0
    for list_objects in (
        client.AppsV1Api(router.api).list_namespaced_deployment,
        core.list_namespaced_service,
        core.list_namespaced_config_map,
    ):
        assert names(list_objects, "mlfe.io/service=iris") == []
    cluster.wait_for(lambda: not cluster.pod_processes(), timeout_s=30)
    with pytest.raises(LookupError):
        backend.status(key)
    # Every pod was put in rotation once and taken out once.
    ready, removed = router.sink.of(key, "ready"), router.sink.of(key, "removed")
    assert len(ready) == len(set(ready)) >= 5 and sorted(removed) == sorted(ready)


async def test_a_pod_that_cannot_be_scheduled_makes_the_deployment_unschedulable(
    router: Router, cluster: Cluster, project: Path
) -> None:
    key = router.add_service("blocked")
    fault = cluster.make_unschedulable({"mlfe.io/service": "blocked"})
    await router.backend.deploy(key, template(project), replicas=1, warm=0)
    try:
        await eventually(lambda: state(router.backend, key) is DeploymentState.UNSCHEDULABLE)
        status = router.backend.status(key)
        assert "cannot be scheduled" in status.message and "Insufficient cpu" in status.message
        assert status.ready == 0 and status.starting == 1
    finally:
        fault.clear()
    # Once the cluster has room, the pod is placed and serves.
    await eventually(lambda: state(router.backend, key) is DeploymentState.HEALTHY)
    assert (await router.score(key)).status_code == 200


async def test_failing_init_and_crash_loops_make_the_deployment_failed_with_the_log_tail(
    router: Router, cluster: Cluster, project: Path
) -> None:
    broken = router.add_service("broken")
    failing = ReplicaTemplate(entry_script=str(FAILING), source_dir=str(SCRIPTS))
    await router.backend.deploy(broken, failing, replicas=1, warm=0)
    await eventually(
        lambda: "model.pkl is missing" in router.backend.status(broken).message, timeout=30
    )
    status = router.backend.status(broken)
    assert status.state is DeploymentState.FAILED
    assert "init() raised (exit code 3)" in status.message
    assert status.ready == 0
    [log] = await router.backend.logs(broken)
    assert log.state == "Failed" and "model.pkl is missing" in log.log

    # A version that served and then keeps crashing is Failed too, and recovers.
    crashing = router.add_service("crashing")
    await router.backend.deploy(crashing, template(project), replicas=1, warm=0)
    await eventually(lambda: state(router.backend, crashing) is DeploymentState.HEALTHY)
    fault = cluster.make_crash({"mlfe.io/service": "crashing"})
    await eventually(lambda: "crash-looping" in router.backend.status(crashing).message)
    assert state(router.backend, crashing) is DeploymentState.FAILED
    assert router.pool_ready(crashing) == 0
    fault.clear()
    await eventually(lambda: state(router.backend, crashing) is DeploymentState.HEALTHY)
    assert (await router.score(crashing)).status_code == 200


async def test_watches_resume_after_disconnects_and_compaction_without_lost_or_repeated_events(
    router: Router, cluster: Cluster, project: Path
) -> None:
    cluster.call(cluster.apiserver.usage.clear)  # from here on, only the backend calls
    key = router.add_service("steady")
    backend = router.backend
    await backend.deploy(key, template(project), replicas=1, warm=0)
    await eventually(lambda: router.pool_ready(key) == 1)

    # Connections cut: the watches resume from their last resourceVersion.
    assert cluster.drop_watches() >= 3
    await backend.scale(key, 2)
    await eventually(lambda: router.pool_ready(key) == 2)

    # The API server goes away while pods become ready, and comes back.
    await backend.scale(key, 3)
    await cluster.restart_apiserver_async(downtime_s=1.0)
    await eventually(lambda: router.pool_ready(key) == 3)

    # Down again while pods go, and the history they would resume from is compacted:
    # the watches get 410 Gone, list again, and the difference reaches the sink.
    lists_before = backend.endpoint_slices.lists
    await backend.scale(key, 1)
    outage = asyncio.ensure_future(cluster.restart_apiserver_async(downtime_s=2.0))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(cluster.compact)
    await outage
    await eventually(lambda: router.pool_ready(key) == 1)
    await eventually(lambda: backend.endpoint_slices.lists > lists_before)

    ready, removed = router.sink.of(key, "ready"), router.sink.of(key, "removed")
    assert len(ready) == len(set(ready)), f"a replica was announced twice: {ready}"
    assert len(removed) == len(set(removed)), f"a replica was removed twice: {removed}"
    assert len(ready) == 3 and len(removed) == 2 and set(removed) < set(ready)
    serving = {r.id for r in router.registry.deployment("steady", "v1").pool.replicas}
    assert serving == set(ready) - set(removed)
    assert (await router.score(key)).status_code == 200

    await backend.logs(key)
    await backend.delete(key)
    # deploy/kubernetes/role.yaml grants RBAC_RULES: every call made must be among them.
    used = cluster.api_usage()
    granted = {(verb, r.group, r.resource) for r in RBAC_RULES for verb in r.verbs}
    assert used <= granted, f"calls outside RBAC_RULES: {used - granted}"
    assert {("patch", "apps", "deployments/scale"), ("watch", "", "pods")} <= used


async def test_a_restarted_router_adopts_a_deployment_of_its_template_without_writing(
    router: Router, cluster: Cluster, project: Path, models: Path
) -> None:
    key = router.add_service("kept")
    # The replica counts are what this test is about: pods need not run.
    fault = cluster.make_unschedulable({"mlfe.io/service": "kept"})
    try:
        await router.backend.deploy(key, template(project), replicas=2, warm=0)
        generation = api_call(
            client.AppsV1Api(router.api).read_namespaced_deployment, "mlfe-kept-v1", NAMESPACE
        )["metadata"]["generation"]

        restarted = Router(cluster, models)
        restarted.add_service("kept")
        cluster.call(cluster.apiserver.usage.clear)
        # Another template (here: another environment) is not adopted: it must roll.
        changed = template(project, environment={"TAG": "new"})
        assert not await restarted.backend.adopt(key, changed)
        assert await restarted.backend.adopt(key, template(project))
        assert restarted.backend.status(key).desired == 2
        writes = {call for call in cluster.api_usage() if call[0] not in ("get", "list", "watch")}
        assert writes == set()
        after = api_call(
            client.AppsV1Api(router.api).read_namespaced_deployment, "mlfe-kept-v1", NAMESPACE
        )
        assert after["metadata"]["generation"] == generation

        # The writer scales; the follower sees it, then lets go when told to.
        await router.backend.scale(key, 3)
        await eventually(lambda: restarted.backend.status(key).desired == 3)
        restarted.backend.untrack(key)
        with pytest.raises(LookupError):
            restarted.backend.status(key)
        await restarted.backend.close()
        restarted.api.close()
        # Not deployed at all: nothing to adopt.
        assert not await router.backend.adopt(DeploymentKey("kept", "v2"), template(project))
    finally:
        fault.clear()


def test_connect_reads_the_kubeconfig_and_its_namespace(cluster: Cluster) -> None:
    api, namespace = connect(cluster.kubeconfig_path)
    assert namespace == "default"
    assert (
        api_call(client.CoreV1Api(api).read_namespace, "default")["metadata"]["name"] == "default"
    )
    api.close()
    _, chosen = connect(cluster.kubeconfig_path, namespace="mlfe")
    assert chosen == "mlfe"
