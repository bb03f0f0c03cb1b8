"""`mlfe serve --backend kubernetes` end to end: the shipped router manifests, two pods.

The routers are deploy/kubernetes/router-deployment.yaml and router-service.yaml as
shipped, but with two replicas, a kubeconfig from a Secret (the in-repo API server has no
service accounts) and a 3 s lease. The fake kubelet runs each as a real `mlfe serve` process on
its own pod address, the models claim is a local folder, and replicas are real scoring
runtimes. So every piece runs as it would in a cluster: the environment from the
downward API and the admin-key Secret, discovery of the router pods through their
Service's EndpointSlices, the Lease, and a restart by the kubelet.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from autoscaler.backends.kube_api import Json, api_call, api_text
from router.serve_kubernetes import LEASE_NAME
from tests.helpers.runtime_proc import start_runtime
from tests.helpers.waiting import eventually
from tests.kube import Cluster, Fault, start_cluster
from tests.router.serve_process import pid_alive

NAMESPACE = "mlfe"
KUBE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
ADMIN_KEY = "an-admin-key-every-router-pod-shares"
LEASE_SECONDS = 3
SCALE_DOWN_SECONDS = 8
ROUTER_PORT = 8080
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
BEHAVE_SCORE = Path(__file__).parent / "scripts" / "behave_score.py"

SCORE = """
import json
import os
import time


def init():
    pass


def run(raw_data):
    request = json.loads(raw_data) if raw_data else {}
    time.sleep(float(request.get("sleep", 0)))
    return {"pod": os.environ.get("HOSTNAME")}
"""


@pytest.fixture(scope="module")
def models() -> Iterator[Path]:
    """The models claim's folder; the service's source lives on it, as in a cluster."""
    root = Path(tempfile.mkdtemp(prefix="mlfe-claim"))
    (root / "echo").mkdir()
    (root / "echo" / "score.py").write_text(textwrap.dedent(SCORE))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(models: Path) -> Iterator[Cluster]:
    with start_cluster(
        namespaces=[NAMESPACE],
        volume_claims={"mlfe-models": models},
        # The router image's ENTRYPOINT is `mlfe`.
        images={"mlfe-router": [sys.executable, "-m", "router.cli"]},
        crash_backoff_s=(0.2, 1.0),
        bookmark_interval_s=0.5,
    ) as running:
        yield running


def manifest(name: str) -> Json:
    loaded: Json = yaml.safe_load((KUBE / name).read_text())
    return loaded


@dataclass
class Routers:
    api: client.ApiClient
    cluster: Cluster

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def pods(self) -> dict[str, str]:
        """Ready router pods by name: their URL."""
        listed = api_call(
            self.core.list_namespaced_pod,
            NAMESPACE,
            label_selector="app.kubernetes.io/name=mlfe-router",
        )
        found = {}
        for pod in listed["items"]:
            status = pod.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                found[pod["metadata"]["name"]] = f"http://{status['podIP']}:{ROUTER_PORT}"
        return found

    def holder(self) -> str | None:
        coordination = client.CoordinationV1Api(self.api)
        try:
            lease = api_call(coordination.read_namespaced_lease, LEASE_NAME, NAMESPACE)
        except client.ApiException:
            return None
        holder: str | None = lease["spec"].get("holderIdentity") or None
        return holder

    def log(self, pod: str) -> str:
        return api_text(self.core.read_namespaced_pod_log, pod, NAMESPACE, container="router")

    def deployment(self, name: str) -> Json:
        return api_call(client.AppsV1Api(self.api).read_namespaced_deployment, name, NAMESPACE)

    def replicas(self, name: str) -> int:
        return int(self.deployment(name)["spec"]["replicas"])

    def pid(self, pod: str) -> int:
        return self.cluster.pod_processes()[f"{NAMESPACE}/{pod}/router"]

    def crash(self, pod: str) -> Fault:
        """SIGKILL the pod's router, and every restart of it until the fault is cleared."""
        label = {"test.mlfe.io/crash": pod}
        patch = {"metadata": {"labels": label}}
        self.core.patch_namespaced_pod(pod, NAMESPACE, patch)
        return self.cluster.make_crash(label, namespace=NAMESPACE)


@pytest.fixture
async def routers(cluster: Cluster) -> AsyncIterator[Routers]:
    api = cluster.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    secret = {
        "metadata": {"name": "mlfe-admin-key"},
        "data": {"MLFE_ADMIN_KEY": base64.b64encode(ADMIN_KEY.encode()).decode()},
    }
    api_call(core.create_namespaced_secret, NAMESPACE, secret)
    kubeconfig = base64.b64encode(cluster.kubeconfig_path.read_bytes()).decode()
    secret = {"metadata": {"name": "mlfe-kubeconfig"}, "data": {"config": kubeconfig}}
    api_call(core.create_namespaced_secret, NAMESPACE, secret)
    api_call(core.create_namespaced_service, NAMESPACE, manifest("router-service.yaml"))
    deployment = manifest("router-deployment.yaml")
    deployment["spec"]["replicas"] = 2
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "kubeconfig", "secret": {"secretName": "mlfe-kubeconfig"}})
    (container,) = pod["containers"]
    container["volumeMounts"].append({"name": "kubeconfig", "mountPath": "/etc/mlfe/kube"})
    container["args"] += [
        "--kubeconfig",
        "/etc/mlfe/kube/config",
        "--lease-duration",
        str(LEASE_SECONDS),
    ]
    api_call(apps.create_namespaced_deployment, NAMESPACE, deployment)
    routers = Routers(api, cluster)
    try:
        await eventually(lambda: len(routers.pods()) == 2, 60, "two router pods ready")
        yield routers
    finally:
        for pod in routers.pods():
            print(f"--- log of {pod}:\n{routers.log(pod)}")
        # The routers, and any replicas a failed test left behind.
        for item in api_call(apps.list_namespaced_deployment, NAMESPACE)["items"]:
            apps.delete_namespaced_deployment(item["metadata"]["name"], NAMESPACE)
        cluster.wait_for(lambda: not cluster.pod_processes(), timeout_s=30)
        api.close()


def echo_service() -> dict[str, Any]:
    return {
        "name": "echo",
        # Paths as the router pods see the claim (here: the same local folder).
        "inferenceConfig": {"entryScript": "score.py", "sourceDirectory": "SOURCE"},
        "deploymentConfig": {
            "authEnabled": False,
            "maxQueueWaitMs": 10_000,
            "autoScaler": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "refreshPeriodInSeconds": 0.5,
                "scaleDownDelaySeconds": SCALE_DOWN_SECONDS,
            },
            "containerResourceRequirements": {"cpu": 0.05, "memoryInGB": 0.25},
            "livenessProbeRequirements": {"periodSeconds": 7, "initialDelaySeconds": 30},
        },
    }


async def view(http: httpx.AsyncClient, url: str) -> Json:
    response = await http.get(f"{url}/api/v1/manage/services/echo", headers=AUTH)
    assert response.status_code == 200, response.text
    found: Json = response.json()
    return found


async def test_routers_share_services_scale_on_their_summed_demand_and_hand_over(
    routers: Routers, models: Path
) -> None:
    pods = routers.pods()
    await eventually(lambda: routers.holder() in pods, 10, "a router holds the Lease")
    leader = routers.holder()
    assert leader is not None
    (follower,) = set(pods) - {leader}
    acquired = [p for p in pods if "event=leader-acquired" in routers.log(p)]
    assert acquired == [leader]

    async with httpx.AsyncClient(timeout=30) as http:
        # Deployed through the follower; both routers serve it.
        body = echo_service()
        body["inferenceConfig"]["sourceDirectory"] = str(models / "echo")
        created = await http.post(
            f"{pods[follower]}/api/v1/manage/services", json=body, headers=AUTH
        )
        assert created.status_code == 202, created.text
        for url in pods.values():
            await eventually_healthy(http, url)
        deployment = routers.deployment("mlfe-echo-echo")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        # (The API server writes quantities canonically.)
        assert container["resources"]["requests"] == {"cpu": "50m", "memory": "256Mi"}
        assert container["livenessProbe"]["periodSeconds"] == 7
        for url in pods.values():
            scored = await http.post(f"{url}/api/v1/service/echo/score", json={})
            assert scored.status_code == 200, scored.text
            assert scored.json()["pod"].startswith("mlfe-echo-echo-")
        # The pods' logs, through either router.
        for url in pods.values():
            logs = await http.get(f"{url}/api/v1/manage/services/echo/logs?tail=50", headers=AUTH)
            assert logs.status_code == 200, logs.text
            (replica,) = logs.json()["replicas"]
            assert replica["id"].startswith("mlfe-echo-echo-") and replica["state"] == "Ready"
            assert "event=ready" in replica["log"]

        # One request at a time through the leader would need 2 replicas; two more
        # through the follower make 3: only the sum of both routers' demand gets there.
        stop = asyncio.Event()

        async def load(url: str) -> None:
            while not stop.is_set():
                answer = await http.post(f"{url}/api/v1/service/echo/score", json={"sleep": 0.3})
                assert answer.status_code == 200, answer.text

        clients = [load(pods[leader]), load(pods[follower]), load(pods[follower])]
        loading = [asyncio.create_task(c) for c in clients]
        try:
            await eventually(lambda: routers.replicas("mlfe-echo-echo") == 3, 20, "scaled to 3")
            await eventually_ready(http, pods[follower], 3)
        finally:
            stop.set()
            await asyncio.gather(*loading)

        # The leader is SIGKILLed, and its restarts die at once too (a container that
        # restarted at once would take its own Lease back: its pod, its name). The
        # follower takes over within a lease.
        before = routers.deployment("mlfe-echo-echo")["metadata"]
        killed_pid = routers.pid(leader)
        crash = routers.crash(leader)
        # SIGKILL is delivered when the kernel next schedules the process, not on kill().
        await eventually(lambda: not pid_alive(killed_pid), 10, "the leader killed")
        # The lease timing itself is tested in tests/autoscaler/test_leader.py; with two
        # router processes and a cluster on a busy machine, only a generous bound here.
        await eventually(lambda: routers.holder() == follower, 3 * LEASE_SECONDS + 10, "handover")
        # It adopted the count and keeps it for a scale-down window of its own.
        assert routers.replicas("mlfe-echo-echo") == 3

        # The killed router comes back: it takes the Deployment over as it is.
        crash.clear()
        await eventually(lambda: leader in routers.pods(), 30, "the killed router restarted")
        restored = routers.pods()[leader]
        await eventually_healthy(http, restored)
        assert "event=adopted deployment=echo/echo" in routers.log(leader)
        after = routers.deployment("mlfe-echo-echo")["metadata"]
        assert after["generation"] == before["generation"]
        assert routers.replicas("mlfe-echo-echo") == 3
        scored = await http.post(f"{restored}/api/v1/service/echo/score", json={})
        assert scored.status_code == 200, scored.text

        # No load: the new leader scales down once its window has passed.
        await eventually(
            lambda: routers.replicas("mlfe-echo-echo") == 1,
            SCALE_DOWN_SECONDS + 10,
            "scaled down by the new leader",
        )
        assert routers.holder() == follower

        deleted = await http.delete(f"{restored}/api/v1/manage/services/echo", headers=AUTH)
        assert deleted.status_code in (200, 202, 204), deleted.text
        await eventually(
            lambda: not any("echo" in name for name in routers.cluster.pod_processes()),
            30,
            "the replicas are gone",
        )
        await bring_your_own_replicas(http, routers)


async def bring_your_own_replicas(http: httpx.AsyncClient, routers: Routers) -> None:
    """A version of replica urls, created through one router: no Deployment, and every
    router probes and serves the urls itself; a delete through the other reaches both."""
    pods = routers.pods()
    writer = next(p for p in pods if p != routers.holder())
    (other,) = set(pods) - {writer}
    container = await asyncio.to_thread(start_runtime, BEHAVE_SCORE)
    try:
        body = {
            "name": "byo",
            "inferenceConfig": {"replicaUrls": [container.base_url]},
            "deploymentConfig": {"authEnabled": False},
        }
        created = await http.post(f"{pods[writer]}/api/v1/manage/services", json=body, headers=AUTH)
        assert created.status_code == 202, created.text
        for url in pods.values():
            await eventually_healthy(http, url, name="byo")
            scored = await http.post(f"{url}/api/v1/service/byo/score", json={})
            assert scored.status_code == 200, scored.text
            assert scored.json()["pid"] == container.pid
            logs = await http.get(f"{url}/api/v1/manage/services/byo/logs", headers=AUTH)
            assert [(r["id"], r["state"]) for r in logs.json()["replicas"]] == [
                (container.base_url, "Ready")
            ]
        listed = api_call(client.AppsV1Api(routers.api).list_namespaced_deployment, NAMESPACE)
        assert not any("byo" in d["metadata"]["name"] for d in listed["items"])

        deleted = await http.delete(f"{pods[other]}/api/v1/manage/services/byo", headers=AUTH)
        assert deleted.status_code == 202, deleted.text
        for url in pods.values():
            deadline = time.monotonic() + 10
            while (await http.post(f"{url}/api/v1/service/byo/score", json={})).status_code != 404:
                assert time.monotonic() < deadline, f"byo still served at {url}"
                await asyncio.sleep(0.1)
    finally:
        container.stop()


async def eventually_healthy(
    http: httpx.AsyncClient, url: str, timeout: float = 30, name: str = "echo"
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"{url}/api/v1/manage/services/{name}", headers=AUTH)
        if response.status_code == 200 and response.json()["state"] == "Healthy":
            return
        assert time.monotonic() < deadline, f"{name} not Healthy at {url}: {response.text}"
        await asyncio.sleep(0.1)


async def eventually_ready(http: httpx.AsyncClient, url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        found = await view(http, url)
        if found["versions"][0]["replicas"]["ready"] == count:
            return
        assert time.monotonic() < deadline, f"not {count} ready replicas: {found}"
        await asyncio.sleep(0.1)
