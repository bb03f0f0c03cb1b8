"""`Store` in the cluster: a ConfigMap per service, its keys in Secrets.

Routers in a cluster share one state, so it lives in the API server rather than in a
file. Each service is a ConfigMap `mlfe-service-<name>` (label mlfe.io/kind=service)
holding the record without its keys, the record's revision, the desired replica counts
of its versions and the name of the Secret with its keys. The token signing secret is
the Secret `mlfe-signing`, created once by whichever router gets there first.

Revisions: the protocol's integer `revision` is a counter kept in the ConfigMap, and
every write also carries the ConfigMap's metadata.resourceVersion. A caller's stale
revision is a `Conflict`; a write that lost a race on resourceVersion only because a
replica count changed in between (a write that leaves the revision alone) reads again
and retries, so the autoscaler never makes a management call fail.

The API server has no multi-object transactions, so the ConfigMap is the commit point:
new keys go into a new, immutable Secret (a random suffix in its name), then the
ConfigMap is written to name it, then the old Secret is deleted. A crash in between
leaves at most an unreferenced Secret, removed with the service; a reader never sees
a record with keys from another write.

Calls block on the API server (milliseconds on a healthy cluster): call from a worker
thread where that matters. `ServiceWatch` tells a router when any router changed a
service, so each can follow what the others do.
"""

from __future__ import annotations

import base64
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.backends.kube_api import (
    CONFLICT_RETRIES,
    ApiPermission,
    Json,
    api_call,
    api_error,
)
from autoscaler.backends.kube_manifests import (
    LABEL_KIND,
    LABEL_MANAGED_BY,
    LABEL_SERVICE,
    MANAGED_BY,
)
from autoscaler.backends.kube_watch import Informer
from router.config import (
    ConfigError,
    ModelRef,
    deployment_config_to_json,
    inference_config_to_json,
    parse_deployment_config,
    parse_inference_config,
)
from router.store import (
    SIGNING_SECRET_BYTES,
    Conflict,
    NotFound,
    ServiceRecord,
    StoreError,
    VersionRecord,
    as_written,
    check_record,
)

logger = logging.getLogger("mlfe.store")

RBAC_RULES: tuple[ApiPermission, ...] = (
    ApiPermission("", "configmaps", ("create", "delete", "get", "list", "update", "watch")),
    ApiPermission("", "secrets", ("create", "delete", "get", "list")),
)

SIGNING_SECRET_NAME = "mlfe-signing"
SERVICE_KIND = "service"
KEYS_KIND = "service-keys"
# ConfigMap data keys.
RECORD = "service.json"
REVISION = "revision"
REPLICAS = "replicas.json"
KEYS_SECRET = "keysSecret"
# Secret data keys: the service's own, then "<version>.<key>" for keys a version's
# deploymentconfig.json carries.
PRIMARY = "primaryKey"
SECONDARY = "secondaryKey"


def service_map_name(service: str) -> str:
    return f"mlfe-service-{service}"


def _b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"))


class KubernetesStore:
    """`Store` on ConfigMaps and Secrets in one namespace."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self._core = client.CoreV1Api(api_client)
        self._clock = clock
        self._secret: bytes | None = None

    # -- the signing secret --------------------------------------------------------------

    def signing_secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._call(self._signing_secret)
        return self._secret

    def _signing_secret(self) -> bytes:
        read = self._core.read_namespaced_secret
        try:
            found = api_call(read, SIGNING_SECRET_NAME, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = self._secret_body(
                SIGNING_SECRET_NAME,
                {"secret": _b64(secrets.token_bytes(SIGNING_SECRET_BYTES))},
                {LABEL_KIND: "signing"},
            )
            try:
                found = api_call(self._core.create_namespaced_secret, self.namespace, body)
                logger.info("store event=created-signing-secret namespace=%s", self.namespace)
            except ApiException as race:
                if race.status != 409:
                    raise
                # Another router created it between our read and our create: use theirs.
                found = api_call(read, SIGNING_SECRET_NAME, self.namespace)
        return _unb64(found["data"]["secret"])

    # -- services ------------------------------------------------------------------------

    def list_services(self) -> list[ServiceRecord]:
        return self._call(self._list_services)

    def _list_services(self) -> list[ServiceRecord]:
        maps = api_call(
            self._core.list_namespaced_config_map,
            self.namespace,
            label_selector=f"{LABEL_KIND}={SERVICE_KIND}",
        )
        listed = api_call(
            self._core.list_namespaced_secret,
            self.namespace,
            label_selector=f"{LABEL_KIND}={KEYS_KIND}",
        )
        keys = {s["metadata"]["name"]: _decode(s) for s in listed.get("items") or []}
        records = []
        for config_map in maps.get("items") or []:
            secret_name = (config_map.get("data") or {}).get(KEYS_SECRET, "")
            if secret_name in keys:
                records.append(_record(config_map, keys[secret_name]))
            else:
                # Its keys changed between the two lists: read the pair again.
                record = self._get_service(
                    config_map["metadata"]["name"].removeprefix("mlfe-service-")
                )
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: r.name)

    def get_service(self, name: str) -> ServiceRecord | None:
        return self._call(self._get_service, name)

    def _get_service(self, name: str) -> ServiceRecord | None:
        for _ in range(CONFLICT_RETRIES):
            config_map = self._read_map(name)
            if config_map is None:
                return None
            keys = self._read_keys(config_map)
            if keys is not None:
                return _record(config_map, keys)
            # The keys were replaced between the two reads: read the new pair.
        raise StoreError(f"the keys of service {name!r} are missing from the cluster")

    def create_service(self, record: ServiceRecord) -> ServiceRecord:
        check_record(record)
        return self._call(self._create_service, record)

    def _create_service(self, record: ServiceRecord) -> ServiceRecord:
        now = self._clock()
        secret_name = self._write_keys(record)
        body = self._map_body(record, 1, now, now, {}, secret_name)
        try:
            api_call(self._core.create_namespaced_config_map, self.namespace, body)
        except ApiException as error:
            self._delete_secret(secret_name)
            if error.status == 409:
                raise Conflict(f"service {record.name!r} already exists") from None
            raise
        return as_written(record, 1, now, now)

    def update_service(self, record: ServiceRecord) -> ServiceRecord:
        check_record(record)
        return self._call(self._update_service, record)

    def _update_service(self, record: ServiceRecord) -> ServiceRecord:
        for _ in range(CONFLICT_RETRIES):
            config_map = self._read_map(record.name)
            if config_map is None:
                raise NotFound(f"no service {record.name!r}")
            data = config_map.get("data") or {}
            revision = int(data.get(REVISION) or 0)
            if revision != record.revision:
                raise Conflict(
                    f"service {record.name!r} changed since it was read (read at revision"
                    f" {record.revision}, now at {revision})"
                )
            old_secret = data.get(KEYS_SECRET, "")
            secret_name = old_secret
            if self._read_keys(config_map) != _key_data(record):
                secret_name = self._write_keys(record)
            stored = _load(data.get(REPLICAS), {})
            names = {version.name for version in record.versions}
            replicas = {v: n for v, n in stored.items() if v in names}
            created_at = float(_load(data.get(RECORD), {}).get("createdAt") or 0.0)
            now = self._clock()
            body = self._map_body(record, revision + 1, created_at, now, replicas, secret_name)
            body["metadata"]["resourceVersion"] = config_map["metadata"]["resourceVersion"]
            try:
                api_call(
                    self._core.replace_namespaced_config_map,
                    service_map_name(record.name),
                    self.namespace,
                    body,
                )
            except ApiException as error:
                if secret_name != old_secret:
                    self._delete_secret(secret_name)
                if error.status == 409:
                    continue  # changed since our read; the revision check decides again
                if error.status == 404:
                    raise NotFound(f"no service {record.name!r}") from None
                raise
            if secret_name != old_secret:
                self._delete_secret(old_secret)
            return as_written(record, revision + 1, created_at, now)
        raise Conflict(f"service {record.name!r} kept changing while it was being updated")

    def delete_service(self, name: str, revision: int | None = None) -> None:
        self._call(self._delete_service, name, revision)

    def _delete_service(self, name: str, revision: int | None) -> None:
        for _ in range(CONFLICT_RETRIES):
            config_map = self._read_map(name)
            if config_map is None:
                raise NotFound(f"no service {name!r}")
            current = int((config_map.get("data") or {}).get(REVISION) or 0)
            if revision is not None and revision != current:
                raise Conflict(
                    f"service {name!r} changed since it was read (read at revision"
                    f" {revision}, now at {current})"
                )
            precondition = {"resourceVersion": config_map["metadata"]["resourceVersion"]}
            try:
                api_call(
                    self._core.delete_namespaced_config_map,
                    service_map_name(name),
                    self.namespace,
                    body={"preconditions": precondition},
                )
            except ApiException as error:
                if error.status == 409:
                    continue
                if error.status == 404:
                    raise NotFound(f"no service {name!r}") from None
                raise
            # Every keys Secret of the service, including any a crash left behind.
            listed = api_call(
                self._core.list_namespaced_secret,
                self.namespace,
                label_selector=f"{LABEL_KIND}={KEYS_KIND},{LABEL_SERVICE}={name}",
            )
            for secret in listed.get("items") or []:
                self._delete_secret(secret["metadata"]["name"])
            logger.info("store event=deleted service=%s revision=%d", name, current)
            return
        raise Conflict(f"service {name!r} kept changing while it was being deleted")

    # -- replica counts -----------------------------------------------------------------

    def desired_replicas(self, service: str, version: str) -> int | None:
        config_map = self._call(self._read_map, service)
        if config_map is None:
            return None
        count = _load((config_map.get("data") or {}).get(REPLICAS), {}).get(version)
        return None if count is None else int(count)

    def all_desired_replicas(self) -> dict[tuple[str, str], int]:
        maps = self._call(
            api_call,
            self._core.list_namespaced_config_map,
            self.namespace,
            label_selector=f"{LABEL_KIND}={SERVICE_KIND}",
        )
        counts: dict[tuple[str, str], int] = {}
        for config_map in maps.get("items") or []:
            service = config_map["metadata"]["name"].removeprefix("mlfe-service-")
            stored = _load((config_map.get("data") or {}).get(REPLICAS), {})
            counts.update({(service, v): int(n) for v, n in stored.items()})
        return counts

    def set_desired_replicas(self, service: str, version: str, replicas: int) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ValueError(f"a replica count must be an integer >= 0, not {replicas!r}")
        self._call(self._set_desired_replicas, service, version, replicas)

    def _set_desired_replicas(self, service: str, version: str, replicas: int) -> None:
        for _ in range(CONFLICT_RETRIES):
            config_map = self._read_map(service)
            data = dict((config_map or {}).get("data") or {})
            versions = _load(data.get(RECORD), {}).get("versions") or []
            if config_map is None or version not in {v.get("name") for v in versions}:
                raise NotFound(f"no version {version!r} of service {service!r}")
            counts = _load(data.get(REPLICAS), {})
            if counts.get(version) == replicas:
                return  # the autoscaler repeats itself; an unchanged count costs a read
            counts[version] = replicas
            data[REPLICAS] = _dumps(counts)
            body = {**config_map, "data": data}
            try:
                api_call(
                    self._core.replace_namespaced_config_map,
                    service_map_name(service),
                    self.namespace,
                    body,
                )
                return
            except ApiException as error:
                if error.status == 409:
                    continue
                if error.status == 404:
                    raise NotFound(f"no version {version!r} of service {service!r}") from None
                raise
        raise Conflict(f"service {service!r} kept changing while its replica count was set")

    def close(self) -> None:
        """Nothing to release: the API client belongs to the caller."""

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one store operation; API failures other than the protocol's become StoreError."""
        try:
            return method(*args, **kwargs)
        except StoreError:
            raise
        except ApiException as error:
            raise StoreError(f"the cluster store failed: {api_error(error)}") from error
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise StoreError(f"the cluster store is unreachable: {error}") from error

    def _read_map(self, service: str) -> Json | None:
        try:
            return api_call(
                self._core.read_namespaced_config_map, service_map_name(service), self.namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _read_keys(self, config_map: Json) -> dict[str, str] | None:
        name = (config_map.get("data") or {}).get(KEYS_SECRET)
        if not name:
            return None
        try:
            return _decode(api_call(self._core.read_namespaced_secret, name, self.namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _write_keys(self, record: ServiceRecord) -> str:
        """A new Secret with the record's keys; its name is what the ConfigMap points at."""
        name = f"mlfe-keys-{record.name}-{secrets.token_hex(4)}"
        data = {k: _b64(v) for k, v in _key_data(record).items()}
        labels = {LABEL_KIND: KEYS_KIND, LABEL_SERVICE: record.name}
        body = self._secret_body(name, data, labels)
        api_call(self._core.create_namespaced_secret, self.namespace, body)
        return name

    def _delete_secret(self, name: str) -> None:
        if not name:
            return
        try:
            api_call(self._core.delete_namespaced_secret, name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                # Left behind, it only costs space: it is deleted with the service.
                logger.warning(
                    "store event=secret-delete-error secret=%s error=%r", name, api_error(error)
                )

    def _secret_body(self, name: str, data: Mapping[str, str], labels: Mapping[str, str]) -> Json:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, **labels},
            },
            "data": dict(data),
            "immutable": True,
        }

    def _map_body(
        self,
        record: ServiceRecord,
        revision: int,
        created_at: float,
        updated_at: float,
        replicas: Mapping[str, int],
        keys_secret: str,
    ) -> Json:
        document = {
            "name": record.name,
            "authMode": record.auth_mode,
            "createdAt": created_at,
            "updatedAt": updated_at,
            "versions": [_version_json(v) for v in record.versions],
        }
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": service_map_name(record.name),
                "namespace": self.namespace,
                "labels": {
                    LABEL_MANAGED_BY: MANAGED_BY,
                    LABEL_KIND: SERVICE_KIND,
                    LABEL_SERVICE: record.name,
                },
            },
            "data": {
                RECORD: _dumps(document),
                REVISION: str(revision),
                REPLICAS: _dumps(dict(replicas)),
                KEYS_SECRET: keys_secret,
            },
        }


class ServiceWatch:
    """Calls `on_change(service)` on the event loop whenever a service's record changes
    in the cluster store, whoever changed it. Replica counts alone are no change."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        on_change: Callable[[str], None],
        *,
        watch_timeout: int = 300,
    ) -> None:
        self._on_change = on_change
        self.informer = Informer(
            client.CoreV1Api(api_client).list_namespaced_config_map,
            namespace,
            label_selector=f"{LABEL_KIND}={SERVICE_KIND}",
            on_change=self._changed,
            watch_timeout=watch_timeout,
            name="service configmaps",
        )

    async def start(self) -> None:
        """Start watching; returns once the first list is in (changes from then on)."""
        self.informer.start()
        await self.informer.synced()

    async def stop(self) -> None:
        await self.informer.stop()

    def _changed(self, name: str, old: Json | None, new: Json | None) -> None:
        if old is not None and new is not None and _revision(old) == _revision(new):
            return  # the autoscaler's count, or nothing a router acts on
        self._on_change(name.removeprefix("mlfe-service-"))


def _revision(config_map: Json) -> str | None:
    return (config_map.get("data") or {}).get(REVISION)


# -- records as JSON -------------------------------------------------------------------------


def _key_data(record: ServiceRecord) -> dict[str, str]:
    """Every key of a record, under the Secret data keys it is stored as."""
    keys = {PRIMARY: record.primary_key, SECONDARY: record.secondary_key}
    for version in record.versions:
        if version.deployment.primary_key is not None:
            keys[f"{version.name}.{PRIMARY}"] = version.deployment.primary_key
        if version.deployment.secondary_key is not None:
            keys[f"{version.name}.{SECONDARY}"] = version.deployment.secondary_key
    return keys


def _decode(secret: Json) -> dict[str, str]:
    return {k: _unb64(v).decode() for k, v in (secret.get("data") or {}).items()}


def _version_json(version: VersionRecord) -> Json:
    return {
        "name": version.name,
        # Keys never go into a ConfigMap: they are in the service's Secret.
        "deploymentConfig": deployment_config_to_json(version.deployment, include_keys=False),
        "inferenceConfig": inference_config_to_json(version.inference),
        "models": [model.to_json() for model in version.models],
        "modelDir": version.model_dir,
        "trafficPercentile": version.traffic_percentile,
        "isDefault": version.is_default,
        "isControl": version.is_control,
        "description": version.description,
    }


def _record(config_map: Json, keys: Mapping[str, str]) -> ServiceRecord:
    data = config_map.get("data") or {}
    name = config_map["metadata"]["name"].removeprefix("mlfe-service-")
    try:
        document = orjson.loads(data[RECORD])
        return ServiceRecord(
            name=document["name"],
            auth_mode=document["authMode"],
            primary_key=keys[PRIMARY],
            secondary_key=keys[SECONDARY],
            versions=tuple(_version(document["name"], v, keys) for v in document["versions"]),
            revision=int(data[REVISION]),
            created_at=float(document["createdAt"]),
            updated_at=float(document["updatedAt"]),
        )
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as error:
        raise StoreError(f"stored service {name} cannot be read: {error!r}") from error


def _version(service: str, data: Json, keys: Mapping[str, str]) -> VersionRecord:
    name = data["name"]
    try:
        deployment = parse_deployment_config(data["deploymentConfig"])
        deployment = replace(
            deployment,
            primary_key=keys.get(f"{name}.{PRIMARY}"),
            secondary_key=keys.get(f"{name}.{SECONDARY}"),
        )
        percentile = float(data["trafficPercentile"])
        if not math.isfinite(percentile):
            raise ValueError(f"trafficPercentile {percentile}")
        return VersionRecord(
            name=name,
            deployment=deployment,
            # Paths are stored absolute and checked when replicas start (as SqliteStore).
            inference=parse_inference_config(
                data["inferenceConfig"], base_dir=Path("/"), check_files=False
            ),
            models=tuple(ModelRef.from_json(m) for m in data["models"]),
            model_dir=data.get("modelDir"),
            traffic_percentile=percentile,
            is_default=bool(data["isDefault"]),
            is_control=bool(data["isControl"]),
            description=str(data.get("description") or ""),
        )
    except ConfigError as error:
        raise StoreError(f"stored version {service}/{name} cannot be read: {error}") from error


def _load(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise StoreError(f"a stored service document is not JSON: {error}") from error


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
