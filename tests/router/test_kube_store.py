"""The cluster store against the in-repo API server, through the real kubernetes client.

Two `KubernetesStore` instances stand for two router pods sharing one namespace.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes import client

from autoscaler.backends.kube_api import Json, api_call
from router.kube_store import RBAC_RULES, KubernetesStore, ServiceWatch, service_map_name
from router.store import Conflict, NotFound, ServiceRecord, StoreError
from tests.helpers.waiting import eventually
from tests.kube import Cluster, start_cluster
from tests.router.store_records import full_service, make_project, replica_urls_version

NAMESPACE = "mlfe"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with start_cluster(namespaces=[NAMESPACE]) as running:
        yield running


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    api_client = cluster.api_client()
    yield api_client
    core = client.CoreV1Api(api_client)
    # Each test starts from an empty namespace.
    for item in api_call(core.list_namespaced_config_map, NAMESPACE)["items"]:
        core.delete_namespaced_config_map(item["metadata"]["name"], NAMESPACE)
    for item in api_call(core.list_namespaced_secret, NAMESPACE)["items"]:
        core.delete_namespaced_secret(item["metadata"]["name"], NAMESPACE)
    api_client.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def config_map_text(api: client.ApiClient, name: str) -> str:
    core = client.CoreV1Api(api)
    return repr(api_call(core.read_namespaced_config_map, service_map_name(name), NAMESPACE))


def key_secrets(api: client.ApiClient, name: str) -> list[Json]:
    selector = f"mlfe.io/kind=service-keys,mlfe.io/service={name}"
    listed = api_call(
        client.CoreV1Api(api).list_namespaced_secret, NAMESPACE, label_selector=selector
    )
    return list(listed["items"])


def test_a_service_round_trips_and_its_keys_live_only_in_a_secret(
    api: client.ApiClient, project: Path
) -> None:
    store = KubernetesStore(api, NAMESPACE)
    created = store.create_service(full_service(project))
    assert created.revision == 1
    assert created == replace(
        full_service(project),
        revision=1,
        created_at=created.created_at,
        updated_at=created.updated_at,
    )
    # Another router reads exactly the same record.
    other = KubernetesStore(api, NAMESPACE)
    assert other.get_service("diabetes") == created
    assert other.list_services() == [created]
    assert other.get_service("missing") is None

    text = config_map_text(api, "diabetes")
    for key in ("service-primary-key", "service-secondary-key", "version-primary"):
        assert key not in text, f"{key} leaked into the ConfigMap"
    [secret] = key_secrets(api, "diabetes")
    stored = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(stored.values()) >= {"service-primary-key", "version-secondary"}


def test_a_version_of_replica_urls_round_trips(api: client.ApiClient, project: Path) -> None:
    record = full_service(project)
    urls = ("http://10.0.0.5:5001", "http://scorer.internal:80")
    byo = replica_urls_version(project, urls)
    created = KubernetesStore(api, NAMESPACE).create_service(
        replace(record, versions=(*record.versions, byo))
    )
    found = KubernetesStore(api, NAMESPACE).get_service("diabetes")
    assert found is not None and found == created
    assert found.versions[2].inference.replica_urls == urls


def test_a_stale_revision_conflicts_and_two_racing_writers_get_one_win(
    api: client.ApiClient, project: Path
) -> None:
    first, second = KubernetesStore(api, NAMESPACE), KubernetesStore(api, NAMESPACE)
    created = first.create_service(full_service(project))
    with pytest.raises(Conflict, match="already exists"):
        second.create_service(full_service(project))

    read_by_first = first.get_service("diabetes")
    read_by_second = second.get_service("diabetes")
    assert read_by_first is not None and read_by_second is not None
    updated = first.update_service(replace(read_by_first, auth_mode="none"))
    assert updated.revision == 2
    with pytest.raises(Conflict, match="changed since it was read"):
        second.update_service(replace(read_by_second, auth_mode="token"))
    with pytest.raises(Conflict):
        second.delete_service("diabetes", revision=created.revision)

    # Both write from revision 2 at the same moment: exactly one succeeds.
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def write(store: KubernetesStore, mode: str) -> None:
        barrier.wait()
        try:
            outcomes.append(store.update_service(replace(updated, auth_mode=mode)))  # type: ignore[arg-type]
        except Conflict as error:
            outcomes.append(error)

    threads = [
        threading.Thread(target=write, args=(store, mode))
        for store, mode in ((first, "key"), (second, "token"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, ServiceRecord)]
    assert len(winners) == 1 and len(outcomes) == 2
    assert first.get_service("diabetes") == winners[0]
    assert winners[0].revision == 3


def test_replica_counts_never_make_a_management_write_conflict(
    api: client.ApiClient, project: Path
) -> None:
    store = KubernetesStore(api, NAMESPACE)
    created = store.create_service(full_service(project))
    # The autoscaler writes between a management read and its write.
    store.set_desired_replicas("diabetes", "blue", 3)
    store.set_desired_replicas("diabetes", "green", 2)
    updated = store.update_service(replace(created, versions=created.versions[:1]))
    assert updated.revision == 2
    assert store.desired_replicas("diabetes", "blue") == 3
    # A version left out is deleted with its count.
    assert store.desired_replicas("diabetes", "green") is None
    assert store.all_desired_replicas() == {("diabetes", "blue"): 3}
    with pytest.raises(NotFound):
        store.set_desired_replicas("diabetes", "green", 1)
    with pytest.raises(NotFound):
        store.set_desired_replicas("nope", "blue", 1)


def test_new_keys_replace_the_secret_and_deletion_removes_everything(
    api: client.ApiClient, project: Path
) -> None:
    store = KubernetesStore(api, NAMESPACE)
    created = store.create_service(full_service(project))
    [before] = key_secrets(api, "diabetes")
    rotated = store.update_service(replace(created, primary_key="a-brand-new-key"))
    [after] = key_secrets(api, "diabetes")
    assert after["metadata"]["name"] != before["metadata"]["name"]
    loaded = KubernetesStore(api, NAMESPACE).get_service("diabetes")
    assert loaded is not None and loaded.primary_key == "a-brand-new-key" == rotated.primary_key

    store.delete_service("diabetes", revision=rotated.revision)
    assert store.get_service("diabetes") is None
    assert key_secrets(api, "diabetes") == []
    with pytest.raises(NotFound):
        store.delete_service("diabetes")
    with pytest.raises(NotFound):
        store.update_service(rotated)


def test_the_signing_secret_is_created_once_for_every_router(api: client.ApiClient) -> None:
    secrets: list[bytes] = []
    barrier = threading.Barrier(4)

    def read() -> None:
        barrier.wait()
        secrets.append(KubernetesStore(api, NAMESPACE).signing_secret())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(secrets) == 4 and len(set(secrets)) == 1 and len(secrets[0]) == 32


def test_an_unreachable_cluster_is_a_store_error(project: Path) -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")  # nothing listens there
    configuration.retries = 0
    store = KubernetesStore(client.ApiClient(configuration), NAMESPACE)
    with pytest.raises(StoreError, match="unreachable"):
        store.get_service("diabetes")


async def test_a_service_watch_tells_every_router_of_changes_but_not_of_replica_counts(
    api: client.ApiClient, project: Path
) -> None:
    changed: list[str] = []
    watch = ServiceWatch(api, NAMESPACE, changed.append)
    await watch.start()
    try:
        other_router = KubernetesStore(api, NAMESPACE)
        created = await asyncio.to_thread(other_router.create_service, full_service(project))
        await eventually(lambda: changed == ["diabetes"])
        await asyncio.to_thread(other_router.set_desired_replicas, "diabetes", "blue", 3)
        rotated = replace(created, secondary_key="rotated-secondary-key")
        await asyncio.to_thread(other_router.update_service, rotated)
        # Events come in order: a count change would have been told before the update.
        await eventually(lambda: len(changed) == 2)
        await asyncio.to_thread(other_router.delete_service, "diabetes")
        await eventually(lambda: changed == ["diabetes"] * 3)
    finally:
        await watch.stop()


async def test_the_store_calls_exactly_what_its_rbac_rules_grant(
    api: client.ApiClient, cluster: Cluster, project: Path
) -> None:
    cluster.call(cluster.apiserver.usage.clear)
    store = KubernetesStore(api, NAMESPACE)
    watch = ServiceWatch(api, NAMESPACE, lambda name: None)
    await watch.start()
    try:
        store.signing_secret()
        created = store.create_service(full_service(project))
        store.list_services()
        store.set_desired_replicas("diabetes", "blue", 2)
        store.all_desired_replicas()
        updated = store.update_service(replace(created, secondary_key="rotated-secondary-key"))
        store.delete_service("diabetes", revision=updated.revision)
        await eventually(lambda: ("watch", "", "configmaps") in cluster.api_usage())
    finally:
        await watch.stop()
    granted = {(verb, r.group, r.resource) for r in RBAC_RULES for verb in r.verbs}
    assert cluster.api_usage() == granted
