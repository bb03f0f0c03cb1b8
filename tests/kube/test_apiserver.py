"""The fake cluster, driven by the real `kubernetes` client as mlfe's backend will drive it.

One cluster serves the module (each test works in its own namespace); tests that need
different knobs start their own, which takes milliseconds.
"""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from kubernetes import client, watch

from tests.kube import Cluster, start_cluster

SCRIPTS = Path(__file__).parents[1] / "router" / "scripts"
SLEEPER = ["python", "-c", "import time; print('started', flush=True); time.sleep(3600)"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(crash_backoff_s=(0.2, 1.0), bookmark_interval_s=0.2) as running:
        yield running


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


def _deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    container = {"name": "main", "image": "busybox:1.36", "command": SLEEPER}
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def _pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[Any]:
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# -- CRUD, concurrency, errors ---------------------------------------------------------


def test_configmap_create_get_list_patch_replace_delete(
    core: client.CoreV1Api, namespace: str
) -> None:
    created = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings", "labels": {"team": "a"}}, "data": {"k": "1"}}
    )
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "other", "labels": {"team": "b"}}}
    )

    assert core.read_namespaced_config_map("settings", namespace).data == {"k": "1"}
    listed = core.list_namespaced_config_map(namespace, label_selector="team=a")
    assert [c.metadata.name for c in listed.items] == ["settings"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    assert [
        c.metadata.name
        for c in core.list_namespaced_config_map(
            namespace, field_selector="metadata.name=other"
        ).items
    ] == ["other"]

    merged = core.patch_namespaced_config_map("settings", namespace, {"data": {"extra": "2"}})
    assert merged.data == {"k": "1", "extra": "2"}
    json_patched = core.patch_namespaced_config_map(
        "settings", namespace, [{"op": "remove", "path": "/data/k"}]
    )
    assert json_patched.data == {"extra": "2"}
    json_patched.data = {"replaced": "3"}
    replaced = core.replace_namespaced_config_map("settings", namespace, json_patched)
    assert replaced.data == {"replaced": "3"}
    assert int(replaced.metadata.resource_version) > int(json_patched.metadata.resource_version)

    status = core.delete_namespaced_config_map("settings", namespace)
    assert status["status"] == "Success"  # v37 returns delete results as plain dicts
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_config_map("settings", namespace)
    assert missing.value.status == 404


def test_stale_resource_version_is_a_conflict(core: client.CoreV1Api, namespace: str) -> None:
    first = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "shared"}, "data": {"n": "0"}}
    )
    core.patch_namespaced_config_map("shared", namespace, {"data": {"n": "1"}})

    first.data = {"n": "stale"}
    with pytest.raises(client.ApiException) as replaced:
        core.replace_namespaced_config_map("shared", namespace, first)
    assert replaced.value.status == 409
    assert '"reason":"Conflict"' in replaced.value.body

    stale_patch = {
        "metadata": {"resourceVersion": first.metadata.resource_version},
        "data": {"n": "2"},
    }
    with pytest.raises(client.ApiException) as patched:
        core.patch_namespaced_config_map("shared", namespace, stale_patch)
    assert patched.value.status == 409

    with pytest.raises(client.ApiException) as created:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "shared"}})
    assert created.value.status == 409
    assert '"reason":"AlreadyExists"' in created.value.body
    assert core.read_namespaced_config_map("shared", namespace).data == {"n": "1"}


def test_a_write_that_changes_nothing_keeps_the_resource_version(
    core: client.CoreV1Api, namespace: str
) -> None:
    created = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "same"}, "data": {"a": "1"}}
    )
    unchanged = core.patch_namespaced_config_map("same", namespace, {"data": {"a": "1"}})
    assert unchanged.metadata.resource_version == created.metadata.resource_version


def test_errors_are_status_objects(
    cluster: Cluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    unknown = httpx.get(f"{cluster.host}/apis/batch/v1/namespaces/{namespace}/jobs")
    assert unknown.status_code == 404
    assert unknown.json()["kind"] == "Status" and unknown.json()["code"] == 404

    with pytest.raises(client.ApiException) as not_allowed:
        client.DiscoveryV1Api(core.api_client).delete_namespaced_endpoint_slice("x", namespace)
    assert not_allowed.value.status == 405

    bad = _deployment("bad")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(client.ApiException) as invalid:
        apps.create_namespaced_deployment(namespace, bad)
    assert invalid.value.status == 422
    assert "spec.template.metadata.labels" in invalid.value.body

    with pytest.raises(client.ApiException) as no_namespace:
        core.create_namespaced_config_map("no-such-namespace", {"metadata": {"name": "x"}})
    assert no_namespace.value.status == 404


def test_server_fills_defaults_and_canonical_quantities(
    apps: client.AppsV1Api, namespace: str
) -> None:
    body = _deployment("defaults")
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "0.1", "memory": "0.5Gi"}}
    container["readinessProbe"] = {"httpGet": {"path": "/", "port": 5001}}
    created = apps.create_namespaced_deployment(namespace, body)
    stored = created.spec.template.spec.containers[0]
    assert stored.resources.requests == {"cpu": "100m", "memory": "512Mi"}
    assert (
        stored.readiness_probe.period_seconds == 10 and stored.readiness_probe.timeout_seconds == 1
    )
    assert created.spec.strategy.rolling_update.max_surge == "25%"
    assert created.metadata.generation == 1


def test_secret_string_data_is_stored_as_data(core: client.CoreV1Api, namespace: str) -> None:
    secret = core.create_namespaced_secret(
        namespace, {"metadata": {"name": "keys"}, "stringData": {"primary": "abc"}}
    )
    assert (
        secret.data == {"primary": "YWJj"}
        and secret.string_data is None
        and secret.type == "Opaque"
    )


def test_list_pages_with_limit_and_continue(core: client.CoreV1Api, namespace: str) -> None:
    for index in range(5):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"page-{index}"}})
    first = core.list_namespaced_config_map(namespace, limit=2)
    assert len(first.items) == 2 and first.metadata._continue
    names = [c.metadata.name for c in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_config_map(namespace, limit=2, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
    assert names == [f"page-{i}" for i in range(5)]


def test_lease_renewal_with_optimistic_concurrency(api: client.ApiClient, namespace: str) -> None:
    leases = client.CoordinationV1Api(api)
    now = datetime.datetime.now(datetime.timezone.utc)
    lease = leases.create_namespaced_lease(
        namespace,
        {
            "metadata": {"name": "mlfe-autoscaler"},
            "spec": {
                "holderIdentity": "router-a",
                "leaseDurationSeconds": 5,
                "acquireTime": now.isoformat(),
                "renewTime": now.isoformat(),
            },
        },
    )
    assert lease.spec.renew_time == now
    lease.spec.renew_time = now + datetime.timedelta(seconds=2)
    renewed = leases.replace_namespaced_lease("mlfe-autoscaler", namespace, lease)
    assert renewed.spec.holder_identity == "router-a"

    lease.spec.holder_identity = "router-b"  # still carries the old resourceVersion
    with pytest.raises(client.ApiException) as taken:
        leases.replace_namespaced_lease("mlfe-autoscaler", namespace, lease)
    assert taken.value.status == 409


def test_api_usage_records_verbs_per_resource(
    cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    core.list_namespaced_service(namespace)
    assert ("list", "", "services") in cluster.api_usage()


# -- watch -----------------------------------------------------------------------------


def test_watch_replays_changes_after_a_resource_version(
    core: client.CoreV1Api, namespace: str
) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "w"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("w", namespace, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("w", namespace)

    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=1
        )
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"].data == {"v": "2"}
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and versions[0] > int(start)


def test_watch_streams_live_events_and_bookmarks(core: client.CoreV1Api, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen: list[dict[str, Any]] = []
    watcher = watch.Watch()

    def consume() -> None:
        for event in watcher.stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=start,
            allow_watch_bookmarks=True,
            timeout_seconds=10,
        ):
            seen.append(event)
            if event["type"] == "BOOKMARK" and any(e["type"] == "ADDED" for e in seen):
                watcher.stop()

    consumer = threading.Thread(target=consume)
    consumer.start()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "live"}})
    consumer.join(10)
    assert not consumer.is_alive()
    assert [e["type"] for e in seen if e["type"] != "BOOKMARK"] == ["ADDED"]
    added = next(i for i, e in enumerate(seen) if e["type"] == "ADDED")
    bookmark = next(e for e in seen[added:] if e["type"] == "BOOKMARK")
    added_version = int(seen[added]["object"].metadata.resource_version)
    assert int(bookmark["raw_object"]["metadata"]["resourceVersion"]) >= added_version


def test_watch_with_selector_reports_objects_leaving_it_as_deleted(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "sel", "labels": {"ready": "yes"}}}
    )
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"ready": "no"}}})
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"ready": "yes"}}})
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map,
            namespace,
            label_selector="ready=yes",
            resource_version=start,
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_watch_from_a_compacted_resource_version_gets_410(
    cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    old = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "compacted"}})
    cluster.compact()

    with pytest.raises(client.ApiException) as expired:
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map, namespace, resource_version=old, timeout_seconds=1
            )
        )
    assert expired.value.status == 410
    # Without a timeout the client retries once from the same version, then gives up too.
    with pytest.raises(client.ApiException) as retried:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, namespace, resource_version=old
        ):
            pass
    assert retried.value.status == 410

    # The documented recovery: list again and watch from the list's version.
    fresh = core.list_namespaced_config_map(namespace)
    assert [c.metadata.name for c in fresh.items] == ["compacted"]
    assert (
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map,
                namespace,
                resource_version=fresh.metadata.resource_version,
                timeout_seconds=1,
            )
        )
        == []
    )


def test_watch_resumes_after_the_apiserver_restarts(
    cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    watcher = watch.Watch()
    failures: list[BaseException] = []
    seen: list[str] = []

    def consume() -> None:
        try:
            for event in watcher.stream(
                core.list_namespaced_config_map, namespace, resource_version=start
            ):
                seen.append(event["object"].metadata.name)
        except (urllib3.exceptions.HTTPError, client.ApiException) as error:
            failures.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "before"}})
    cluster.wait_for(lambda: seen == ["before"], timeout_s=10)
    cluster.restart_apiserver(downtime_s=0.2)
    consumer.join(10)
    assert failures, "the stream should break when the server goes away"
    last = core.read_namespaced_config_map("before", namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "after"}})
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, namespace, resource_version=last, timeout_seconds=1
        )
    )
    assert [e["object"].metadata.name for e in events] == ["after"]


def test_drop_watches_cuts_open_streams(
    cluster: Cluster, core: client.CoreV1Api, namespace: str
) -> None:
    outcome: list[str] = []

    def consume() -> None:
        try:
            for _ in watch.Watch().stream(
                core.list_namespaced_config_map, namespace, timeout_seconds=30
            ):
                pass
            outcome.append("ended")
        except urllib3.exceptions.HTTPError:
            outcome.append("cut")

    consumer = threading.Thread(target=consume)
    consumer.start()
    cluster.wait_for(lambda: cluster.drop_watches() > 0, timeout_s=5)
    consumer.join(10)
    assert outcome == ["cut"]


# -- controllers, scheduler, kubelet ---------------------------------------------------


def test_scale_subresource_changes_the_number_of_pods(
    cluster: Cluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, _deployment("scaled", replicas=1))
    cluster.wait_for(lambda: len(_pods(core, namespace, "app=scaled")) == 1)

    scale = apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3 and scale.status.selector == "app=scaled"
    cluster.wait_for(lambda: len(_pods(core, namespace, "app=scaled")) == 3)
    status = cluster.wait_for(
        lambda: (
            (s := apps.read_namespaced_deployment_status("scaled", namespace).status).ready_replicas
            == 3
            and s
        )
    )
    assert status.observed_generation == 2 and status.available_replicas == 3

    stale = apps.read_namespaced_deployment_scale("scaled", namespace)
    apps.replace_namespaced_deployment_scale(
        "scaled", namespace, {"metadata": {"name": "scaled"}, "spec": {"replicas": 2}}
    )
    stale.spec.replicas = 5
    with pytest.raises(client.ApiException) as conflict:
        apps.replace_namespaced_deployment_scale("scaled", namespace, stale)
    assert conflict.value.status == 409
    cluster.wait_for(lambda: len(_pods(core, namespace, "app=scaled")) == 2)
    pods = _pods(core, namespace, "app=scaled")
    assert all(
        p.metadata.name.startswith("scaled-") and p.status.pod_ip.startswith(cluster.pod_subnet)
        for p in pods
    )


def test_rolling_update_replaces_pods_and_deletion_cascades(
    cluster: Cluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, _deployment("rolled", replicas=2))
    cluster.wait_for(
        lambda: (
            (apps.read_namespaced_deployment_status("rolled", namespace).status.ready_replicas or 0)
            == 2
        )
    )
    before = {p.metadata.name for p in _pods(core, namespace, "app=rolled")}

    apps.patch_namespaced_deployment(
        "rolled",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "main", "env": [{"name": "VERSION", "value": "2"}]}]
                    }
                }
            }
        },
    )

    def rolled_out() -> bool:
        status = apps.read_namespaced_deployment_status("rolled", namespace).status
        pods = core.list_namespaced_pod(namespace, label_selector="app=rolled").items
        return (
            status.updated_replicas == 2
            and status.ready_replicas == 2
            and len(pods) == 2
            and not {p.metadata.name for p in pods} & before
        )

    cluster.wait_for(rolled_out)
    env = _pods(core, namespace, "app=rolled")[0].spec.containers[0].env
    assert [(e.name, e.value) for e in env] == [("VERSION", "2")]

    pids = [
        pid
        for key, pid in cluster.pod_processes().items()
        if key.startswith(f"{namespace}/rolled-")
    ]
    assert len(pids) == 2
    apps.delete_namespaced_deployment("rolled", namespace)
    cluster.wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=rolled").items
    )
    assert not [key for key in cluster.pod_processes() if key.startswith(f"{namespace}/rolled-")]


def test_unschedulable_pods_stay_pending_with_a_failed_scheduling_event(
    cluster: Cluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    fault = cluster.make_unschedulable("app=big", namespace=namespace)
    apps.create_namespaced_deployment(namespace, _deployment("big"))

    def unschedulable() -> Any:
        pods = core.list_namespaced_pod(namespace, label_selector="app=big").items
        scheduled = [c for p in pods for c in p.status.conditions or [] if c.type == "PodScheduled"]
        return (
            scheduled
            and scheduled[0].status == "False"
            and scheduled[0].reason == "Unschedulable"
            and pods[0]
        )

    pod = cluster.wait_for(unschedulable)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod.metadata.name},reason=FailedScheduling"
    ).items
    assert (
        events and events[0].type == "Warning" and events[0].source.component == "default-scheduler"
    )

    fault.clear()
    cluster.wait_for(
        lambda: (
            all(_ready(p) for p in _pods(core, namespace, "app=big"))
            and _pods(core, namespace, "app=big")
        )
    )


def test_crashing_containers_back_off_and_recover(
    cluster: Cluster, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, _deployment("crashy"))
    cluster.wait_for(lambda: any(_ready(p) for p in _pods(core, namespace, "app=crashy")))
    fault = cluster.make_crash("app=crashy", namespace=namespace)

    def crash_looping() -> Any:
        for pod in _pods(core, namespace, "app=crashy"):
            status = pod.status.container_statuses[0]
            if status.state.waiting and status.state.waiting.reason == "CrashLoopBackOff":
                return status
        return None

    status = cluster.wait_for(crash_looping)
    assert status.restart_count >= 1 and not status.ready
    assert status.last_state.terminated.exit_code == 1
    pod = _pods(core, namespace, "app=crashy")[0]
    assert "injected crash" in core.read_namespaced_pod_log(
        pod.metadata.name, namespace, previous=True
    )

    fault.clear()
    cluster.wait_for(lambda: any(_ready(p) for p in _pods(core, namespace, "app=crashy")))


def test_containers_see_volumes_env_and_their_pod_ip(
    cluster: Cluster, core: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "model.pkl").write_text("weights")
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "src"}, "data": {"score.py": "print()", "helpers__util.py": "X = 1"}},
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "keys"}, "stringData": {"token": "s3cret"}}
    )
    report = (
        "import json, os, pathlib; src = pathlib.Path(os.environ['SRC']); "
        "print(json.dumps({'files': sorted(str(p.relative_to(src)) for p in src.rglob('*.py')), "
        "'model': pathlib.Path(os.environ['MODEL']).read_text(), 'token': os.environ['TOKEN'], "
        "'ip': os.environ['POD_IP'], 'script': os.environ['SCRIPT']}))"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "mapped"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": ["python", "-c", report],
                        "env": [
                            {"name": "SRC", "value": "/var/mlfe/src"},
                            {"name": "SCRIPT", "value": "$(SRC)/score.py"},
                            {"name": "MODEL", "value": "/var/mlfe/models/model.pkl"},
                            {
                                "name": "TOKEN",
                                "valueFrom": {"secretKeyRef": {"name": "keys", "key": "token"}},
                            },
                            {
                                "name": "POD_IP",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                            },
                        ],
                        "volumeMounts": [
                            {"name": "src", "mountPath": "/var/mlfe/src"},
                            {"name": "models", "mountPath": "/var/mlfe/models", "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {
                        "name": "src",
                        "configMap": {
                            "name": "src",
                            "items": [
                                {"key": "score.py", "path": "score.py"},
                                {"key": "helpers__util.py", "path": "helpers/util.py"},
                            ],
                        },
                    },
                    {"name": "models", "hostPath": {"path": str(tmp_path)}},
                ],
            },
        },
    )
    pod = cluster.wait_for(
        lambda: (
            (p := core.read_namespaced_pod("mapped", namespace)).status.phase == "Succeeded" and p
        )
    )
    seen = json.loads(core.read_namespaced_pod_log("mapped", namespace))
    assert seen["files"] == ["helpers/util.py", "score.py"]
    assert seen["model"] == "weights" and seen["token"] == "s3cret"
    assert (
        seen["ip"] == pod.status.pod_ip
        and seen["script"].endswith("/score.py")
        and not seen["script"].startswith("/var/mlfe")
    )


def test_scoring_runtime_pod_becomes_ready_behind_an_endpointslice(
    cluster: Cluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
) -> None:
    script = (SCRIPTS / "behave_score.py").read_text()
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "mlfe-src-demo"}, "data": {"score.py": script}}
    )
    labels = {"mlfe.io/service": "demo", "mlfe.io/version": "v1"}
    container = {
        "name": "replica",
        "image": "mlfe-runtime:latest",
        "command": ["python", "-m", "scoring_runtime"],
        "args": ["--port", "5001"],
        "ports": [{"name": "http", "containerPort": 5001}],
        "env": [
            {"name": "AZUREML_ENTRY_SCRIPT", "value": "/var/mlfe/src/score.py"},
            {"name": "AZUREML_SOURCE_DIRECTORY", "value": "/var/mlfe/src"},
            {"name": "MLFE_TEST_VERSION", "value": "v1"},
        ],
        "volumeMounts": [{"name": "src", "mountPath": "/var/mlfe/src", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "mlfe-demo-v1", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [container],
                        "volumes": [{"name": "src", "configMap": {"name": "mlfe-src-demo"}}],
                    },
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "mlfe-demo-v1"},
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [{"name": "http", "port": 5001, "targetPort": "http"}],
            },
        },
    )

    discovery = client.DiscoveryV1Api(api)

    def ready_endpoint() -> Any:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=mlfe-demo-v1"
        ).items
        endpoints = [e for s in slices for e in s.endpoints or [] if e.conditions.ready]
        return endpoints and (slices[0], endpoints[0])

    endpoint_slice, endpoint = cluster.wait_for(ready_endpoint, timeout_s=60)
    assert endpoint_slice.ports[0].name == "http" and endpoint_slice.ports[0].port == 5001
    address = endpoint.addresses[0]
    assert httpx.get(f"http://{address}:5001/").text == "Healthy"
    scored = httpx.post(f"http://{address}:5001/score", json={"echo": "hi"}).json()
    assert scored["echo"] == "hi" and scored["version"] == "v1"
    assert "event=ready" in core.read_namespaced_pod_log(endpoint.target_ref.name, namespace)

    apps.delete_namespaced_deployment("mlfe-demo-v1", namespace)
    cluster.wait_for(
        lambda: (
            not any(s.endpoints for s in discovery.list_namespaced_endpoint_slice(namespace).items)
        )
    )


async def test_a_cluster_starts_and_stops_inside_an_async_test() -> None:
    async with start_cluster(ready_delay_s=0.0) as fresh:
        response = httpx.get(f"{fresh.host}/api/v1/namespaces/default")
        assert response.json()["status"]["phase"] == "Active"
