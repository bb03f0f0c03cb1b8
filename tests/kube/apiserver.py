"""The HTTP face of the fake cluster: kube-apiserver's REST paths as a raw ASGI app.

Paths: `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced
(`namespaces/{ns}/{resource}[/{name}[/{subresource}]]`) or across namespaces
(`{resource}`), plus discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`),
`/version` and `/healthz`. Every error is a `Status` object with the HTTP code, as
the Kubernetes client expects; an unknown path is a 404 Status, a verb a resource does
not serve a 405. Which (verb, group, resource) calls were made is recorded, so a test
can compare the calls a component makes with the RBAC Role it is deployed with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from tests.kube import resources as kinds
from tests.kube.kubelet import Kubelet
from tests.kube.registry import Registry
from tests.kube.resources import ResourceType
from tests.kube.selectors import parse_field_selector, parse_label_selector
from tests.kube.status import (
    ApiError,
    bad_request,
    method_not_allowed,
    route_not_found,
)
from tests.kube.watch import DROP, END, WatchDropped, Watcher, WatchHub

logger = logging.getLogger("tests.kube")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-mlfe-test",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_LOG_POLL_S = 0.05


class ClientGone(Exception):
    pass


class ApiServer:
    def __init__(self, registry: Registry, kubelet: Kubelet, watches: WatchHub) -> None:
        self.registry = registry
        self.kubelet = kubelet
        self.watches = watches
        self.usage: set[tuple[str, str, str]] = set()

    def end_watches(self) -> int:
        return self.watches.signal_all(END)

    def drop_watches(self) -> int:
        return self.watches.signal_all(DROP)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._dispatch(scope, receive, tracked_send)
        except WatchDropped:
            raise
        except ClientGone:
            return
        except ApiError as error:
            if not started:
                await _send_json(send, error.code, error.status())
        except Exception as error:
            logger.exception(
                "event=apiserver_error method=%s path=%s", scope["method"], scope["path"]
            )
            if not started:
                failure = ApiError(
                    500,
                    "InternalError",
                    f"Internal error occurred: {type(error).__name__}: {error}",
                )
                await _send_json(send, 500, failure.status())

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = scope["path"].rstrip("/") or "/"
        query = {
            k: v[-1]
            for k, v in parse_qs(
                scope["query_string"].decode("latin-1"), keep_blank_values=True
            ).items()
        }
        if path in ("/healthz", "/livez", "/readyz"):
            await _send(send, 200, b"ok", b"text/plain; charset=utf-8")
            return
        if path == "/version":
            await _send_json(send, 200, KUBERNETES_VERSION)
            return
        segments = path.strip("/").split("/")
        group: str | None
        version: str | None
        if segments[0] == "api" and len(segments) >= 1:
            group, version, rest = "", segments[1] if len(segments) > 1 else None, segments[2:]
        elif segments[0] == "apis":
            group = segments[1] if len(segments) > 1 else None
            version = segments[2] if len(segments) > 2 else None
            rest = segments[3:]
        else:
            raise route_not_found(path)
        if version is None or group is None:
            await _send_json(send, 200, _discovery_root(segments[0], group))
            return
        if not rest:
            await _send_json(send, 200, _resource_list(group, version))
            return
        resource, namespace, name, subresource = _route(group, version, rest, path)
        await self._handle(
            scope, receive, send, method, query, resource, namespace, name, subresource
        )

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        query: dict[str, str],
        resource: ResourceType,
        namespace: str | None,
        name: str | None,
        subresource: str,
    ) -> None:
        verb = _verb(method, name, query)
        if subresource:
            allowed = subresource in resource.subresources and _subresource_allows(
                subresource, verb
            )
        else:
            allowed = verb in resource.verbs
        if not allowed:
            raise method_not_allowed(verb)
        self.usage.add(
            (
                verb,
                resource.group,
                f"{resource.plural}/{subresource}" if subresource else resource.plural,
            )
        )
        if query.get("dryRun"):
            raise bad_request("dryRun is not supported by the mlfe test API server")
        registry = self.registry
        ns = namespace or ""

        if verb == "list":
            self._check_list_version(query)
            limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
            body = registry.list(
                resource,
                namespace,
                query.get("labelSelector"),
                query.get("fieldSelector"),
                limit,
                query.get("continue"),
            )
            await _send_json(send, 200, body)
        elif verb == "watch":
            await self._watch(scope, receive, send, resource, namespace, name, query)
        elif verb == "get":
            assert name is not None
            if subresource == "scale":
                await _send_json(send, 200, registry.get_scale(ns, name))
            elif subresource == "log":
                await self._log(receive, send, ns, name, query)
            else:
                await _send_json(send, 200, registry.get(resource, ns, name))
        elif verb == "create":
            body = _strip_nulls(await _read_json(receive))
            await _send_json(send, 201, registry.create(resource, ns, body))
        elif verb == "update":
            assert name is not None
            body = _strip_nulls(await _read_json(receive))
            if subresource == "scale":
                await _send_json(send, 200, registry.replace_scale(ns, name, body))
            else:
                await _send_json(send, 200, registry.replace(resource, ns, name, body, subresource))
        elif verb == "patch":
            assert name is not None
            raw = await _read_body(receive)
            content_type = _header(scope, b"content-type") or ""
            if subresource == "scale":
                await _send_json(send, 200, registry.patch_scale(ns, name, raw, content_type))
            else:
                await _send_json(
                    send, 200, registry.patch(resource, ns, name, raw, content_type, subresource)
                )
        elif verb == "delete":
            assert name is not None
            raw = await _read_body(receive)
            options = _strip_nulls(orjson.loads(raw)) if raw.strip() else {}
            if not isinstance(options, dict):
                raise bad_request("the body of a DELETE must be DeleteOptions")
            for key in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents"):
                if key in query and key not in options:
                    value: Any = query[key]
                    if key == "gracePeriodSeconds":
                        value = int(value)
                    elif key == "orphanDependents":
                        value = value.lower() == "true"
                    options[key] = value
            code, body = registry.delete(resource, ns, name, options)
            await _send_json(send, code, body)
        else:
            raise method_not_allowed(verb)

    def _check_list_version(self, query: dict[str, str]) -> None:
        wanted = query.get("resourceVersion", "")
        if wanted and wanted != "0" and query.get("resourceVersionMatch") != "Exact":
            if not wanted.isdigit():
                raise bad_request(f"invalid resource version: {wanted}")
            current = self.registry.store.revision
            if int(wanted) > current:
                raise ApiError(
                    504,
                    "Timeout",
                    f"Timeout: Too large resource version: {wanted}, current: {current}",
                    {
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                )

    async def _watch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        resource: ResourceType,
        namespace: str | None,
        name: str | None,
        query: dict[str, str],
    ) -> None:
        labels = parse_label_selector(query.get("labelSelector"))
        field_text = query.get("fieldSelector") or ""
        if name is not None:
            field_text = ",".join(filter(None, [field_text, f"metadata.name={name}"]))
        fields = parse_field_selector(field_text, resource.fields)
        version = query.get("resourceVersion")
        if version not in (None, "", "0"):
            if not str(version).isdigit():
                raise bad_request(f"invalid resource version: {version}")
            current = self.registry.store.revision
            if int(str(version)) > current:
                raise ApiError(
                    504,
                    "Timeout",
                    f"Timeout: Too large resource version: {version}, current: {current}",
                )
        timeout = query.get("timeoutSeconds")
        watcher = Watcher(resource, namespace, labels, fields)
        await self.watches.serve(
            send,
            receive,
            watcher,
            version,
            bookmarks=_truthy(query.get("allowWatchBookmarks")),
            send_initial_events=_truthy(query.get("sendInitialEvents")),
            timeout_s=float(timeout) if timeout else None,
        )

    async def _log(
        self, receive: Receive, send: Send, namespace: str, name: str, query: dict[str, str]
    ) -> None:
        self.registry.get(kinds.PODS, namespace, name)
        path, run = self.kubelet.log_file(
            namespace, name, query.get("container"), _truthy(query.get("previous"))
        )
        data = path.read_bytes()
        tail = query.get("tailLines")
        if tail is not None and tail.isdigit():
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) else b""
        limit = query.get("limitBytes")
        if limit is not None and limit.isdigit():
            data = data[: int(limit)]
        if not _truthy(query.get("follow")) or _truthy(query.get("previous")):
            await _send(send, 200, data, b"text/plain")
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": data, "more_body": True})
        offset = path.stat().st_size
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            while not disconnected.done():
                await asyncio.sleep(_LOG_POLL_S)
                size = path.stat().st_size if path.exists() else offset
                if size > offset:
                    with open(path, "rb") as log:
                        log.seek(offset)
                        chunk = log.read(size - offset)
                    offset = size
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                elif run.logs[-1] != path or run.process is None:
                    break  # the container run we followed has ended
        finally:
            disconnected.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _route(
    group: str, version: str, rest: list[str], path: str
) -> tuple[ResourceType, str | None, str | None, str]:
    """(resource, namespace, name, subresource) for the segments after the group/version."""

    def lookup(plural: str) -> ResourceType:
        found = kinds.BY_PATH.get((group, version, plural))
        if found is None:
            raise route_not_found(path)
        return found

    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace = rest[1]
        resource = lookup(rest[2])
        if not resource.namespaced:
            raise route_not_found(path)
        name = rest[3] if len(rest) > 3 else None
        subresource = rest[4] if len(rest) > 4 else ""
        if len(rest) > 5:
            raise route_not_found(path)
        return resource, namespace, name, subresource
    resource = lookup(rest[0])
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3 or (resource.namespaced and name is not None):
        raise route_not_found(path)
    return resource, None, name, subresource


def _verb(method: str, name: str | None, query: dict[str, str]) -> str:
    if name is None:
        if method == "GET":
            return "watch" if _truthy(query.get("watch")) else "list"
        if method == "POST":
            return "create"
        if method == "DELETE":
            return "deletecollection"
        return method.lower()
    watch = _truthy(query.get("watch"))
    return {
        "GET": "watch" if watch else "get",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method, method.lower())


def _subresource_allows(subresource: str, verb: str) -> bool:
    if subresource == "log":
        return verb == "get"
    return verb in ("get", "update", "patch")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _read_json(receive: Receive) -> Any:
    raw = await _read_body(receive)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"couldn't get version/kind; json parse error: {error}") from None


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _strip_nulls(value: Any) -> Any:
    """JSON null reads as "not set" in Go structs, so drop nulls from objects."""
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(item) for item in value]
    return value


async def _send(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, body: Any) -> None:
    await _send(send, status, orjson.dumps(body), b"application/json")


def _discovery_root(prefix: str, group: str | None) -> dict[str, Any]:
    if prefix == "api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }
    groups: dict[str, set[str]] = {}
    for resource in kinds.ALL:
        if resource.group:
            groups.setdefault(resource.group, set()).add(resource.version)
    listed = [
        {
            "name": name,
            "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in sorted(versions)],
            "preferredVersion": {
                "groupVersion": f"{name}/{sorted(versions)[-1]}",
                "version": sorted(versions)[-1],
            },
        }
        for name, versions in sorted(groups.items())
        if group is None or name == group
    ]
    if group is not None:
        if not listed:
            raise route_not_found(f"/apis/{group}")
        return {"kind": "APIGroup", "apiVersion": "v1", **listed[0]}
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}


def _resource_list(group: str, version: str) -> dict[str, Any]:
    listed = []
    for resource in kinds.ALL:
        if (resource.group, resource.version) != (group, version):
            continue
        listed.append(
            {
                "name": resource.plural,
                "singularName": resource.kind.lower(),
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": sorted(resource.verbs),
            }
        )
        for subresource in sorted(resource.subresources):
            verbs = ["get"] if subresource == "log" else ["get", "patch", "update"]
            kind = "Scale" if subresource == "scale" else resource.kind
            listed.append(
                {
                    "name": f"{resource.plural}/{subresource}",
                    "singularName": "",
                    "namespaced": resource.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
    if not listed:
        raise route_not_found(f"/{'apis/' + group if group else 'api'}/{version}")
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": listed,
    }
