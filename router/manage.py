"""The management API under /api/v1/manage: services, versions, keys, tokens and logs.

One route table drives both the Starlette routes and the OpenAPI document, so the
document cannot list a route the app does not serve or miss one it does. Request bodies
are read here, at the edge, into the frozen requests `ServiceManager` takes; every
refusal is JSON `{"message": ...}` with the status that says why (400 names the key),
and nothing a client sends produces a 500 or a traceback.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from router.auth import bearer_credential
from router.config import (
    ConfigError,
    DeploymentConfig,
    InferenceConfig,
    ModelRef,
    parse_deployment_config,
    parse_inference_config,
)
from router.service_requests import (
    AuthRequest,
    InvalidRequest,
    NewService,
    NewVersion,
    ServiceError,
    VersionChanges,
    VersionSource,
)
from router.services import MAX_LOG_TAIL, ServiceManager
from router.versions import prefixed

logger = logging.getLogger("mlfe.manage")

PREFIX = "/api/v1/manage"
# Requests carry configuration files, not models: a megabyte is plenty.
MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_LOG_TAIL = 100
# Service and version names, as router.config validates them.
NAME_PATTERN = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
VERSION_PATTERN = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
KEY_PATTERN = r"^[\x21-\x7e]{1,256}$"

Handler = Callable[[Request], Awaitable[Response]]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _unauthorized() -> JSONResponse:
    return error_response(
        401, "Missing or invalid admin key", headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API: how it is served and how the document describes it."""

    method: str
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, str | None]  # status -> response schema name (None: no body)
    body: str | None = None  # request schema name
    query: tuple[Mapping[str, Any], ...] = ()
    auth: bool = True
    errors: tuple[int, ...] = ()  # statuses it may refuse with, besides 401


# -- reading requests ---------------------------------------------------------------------


class _Body:
    """A JSON object from a request: typed fields, unknown keys refused, errors naming
    the key. A field given as null is a field not given, as Azure's SDK sends them."""

    def __init__(self, data: Any, known: Sequence[str]) -> None:
        if not isinstance(data, dict):
            raise InvalidRequest("the request body must be a JSON object")
        for key in data:
            if key not in known:
                raise InvalidRequest(
                    f"unknown key {key!r} in the request body (known: {', '.join(known)})"
                )
        self._data = {key: value for key, value in data.items() if value is not None}

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        return self._data.get(key)

    def string(self, key: str) -> str | None:
        value = self._data.get(key)
        if key in self._data and not isinstance(value, str):
            raise InvalidRequest(f"{key} must be a string")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise InvalidRequest(f"{key} is required")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._data.get(key)
        if key in self._data and not isinstance(value, bool):
            raise InvalidRequest(f"{key} must be true or false")
        return value

    def percentile(self, key: str) -> float | None:
        if key not in self._data:
            return None
        value = self._data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{key} must be a number between 0 and 100")
        if not 0 <= value <= 100:
            raise InvalidRequest(f"{key} must be between 0 and 100, got {value:g}")
        return float(value)

    def object(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        if key in self._data and not isinstance(value, dict):
            raise InvalidRequest(f"{key} must be a JSON object")
        return value


def _inference(value: dict[str, Any]) -> InferenceConfig:
    """inferenceconfig.json with absolute paths: the server cannot know the client's folder."""
    source = value.get("sourceDirectory")
    entry = value.get("entryScript")
    if isinstance(source, str) and source and not os.path.isabs(source):
        raise InvalidRequest(
            f"inferenceConfig.sourceDirectory must be an absolute path, got {source!r}"
        )
    if not source and isinstance(entry, str) and entry and not os.path.isabs(entry):
        raise InvalidRequest(
            "inferenceConfig.entryScript must be an absolute path when there is no"
            f" sourceDirectory, got {entry!r}"
        )
    try:
        return parse_inference_config(value, base_dir=Path("/"))
    except ConfigError as error:
        raise prefixed(error, "inferenceConfig") from None


def _deployment(value: dict[str, Any] | None) -> DeploymentConfig:
    try:
        return parse_deployment_config({} if value is None else value)
    except ConfigError as error:
        raise prefixed(error, "deploymentConfig") from None


def _models(body: _Body) -> tuple[tuple[ModelRef, ...] | None, str | None]:
    """`models` ("name:version:/abs/path", ...) or `modelDir` ("/abs/dir"), not both."""
    raw = body.raw("models")
    model_dir = body.string("modelDir")
    if body.has("models") and model_dir is not None:
        raise InvalidRequest("give either models or modelDir, not both")
    if model_dir is not None:
        if not os.path.isabs(model_dir):
            raise InvalidRequest(f"modelDir must be an absolute path, got {model_dir!r}")
        if not os.path.isdir(model_dir):
            raise InvalidRequest(f"modelDir {model_dir!r} is not a folder")
        return None, model_dir
    if not body.has("models"):
        return None, None
    if not isinstance(raw, list):
        raise InvalidRequest("models must be a list of NAME:VERSION:PATH strings")
    models = []
    for index, text in enumerate(raw):
        key = f"models[{index}]"
        if not isinstance(text, str):
            raise InvalidRequest(f"{key} must be a NAME:VERSION:PATH string")
        try:
            model = ModelRef.parse(text)
        except ConfigError as error:
            raise InvalidRequest(f"{key}: {error.message}") from None
        if not os.path.isabs(model.path):
            raise InvalidRequest(f"{key}: the path must be absolute, got {model.path!r}")
        if not os.path.exists(model.path):
            raise InvalidRequest(f"{key}: {model.path!r} does not exist")
        models.append(model)
    return tuple(models), None


def _source(body: _Body) -> VersionSource:
    inference = body.object("inferenceConfig")
    if inference is None:
        raise InvalidRequest("inferenceConfig is required")
    models, model_dir = _models(body)
    return VersionSource(_inference(inference), models or (), model_dir)


def _auth_given(raw: dict[str, Any] | None, parsed: DeploymentConfig) -> AuthRequest:
    """What a version's deploymentConfig said about auth, if anything."""
    if raw is None:
        return AuthRequest()
    mentioned = raw.get("authEnabled") is not None or raw.get("tokenAuthEnabled") is not None
    return AuthRequest(
        mode=parsed.auth_mode if mentioned else None,
        primary_key=parsed.primary_key,
        secondary_key=parsed.secondary_key,
    )


def _changes(body: _Body) -> VersionChanges:
    inference = body.object("inferenceConfig")
    models, model_dir = _models(body)
    return VersionChanges(
        traffic_percentile=body.percentile("trafficPercentile"),
        is_default=body.boolean("isDefault"),
        is_control=body.boolean("isControl"),
        deployment_changes=body.object("deploymentConfig"),
        inference=_inference(inference) if inference is not None else None,
        models=models,
        model_dir=model_dir,
    )


async def _read_json(request: Request) -> Any:
    """The request's JSON body, read up to MAX_REQUEST_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise _Refusal(413, f"the request body is larger than {MAX_REQUEST_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _Refusal(413, f"the request body is larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("the request needs a JSON object body")
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise _Refusal(415, f"the body must be application/json, not {content_type or 'untyped'}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None


class _Refusal(Exception):
    """An HTTP-level refusal (413, 415) before the request reaches the manager."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- the API ------------------------------------------------------------------------------


class ManageApi:
    """The handlers, bound to one `ServiceManager`."""

    def __init__(self, manager: ServiceManager) -> None:
        self.manager = manager

    async def list_services(self, request: Request) -> Response:
        return JSONResponse(self.manager.list_views())

    async def create_service(self, request: Request) -> Response:
        body = _Body(
            await _read_json(request),
            ("name", "inferenceConfig", "deploymentConfig", "models", "modelDir"),
        )
        name = body.required_string("name")
        source = _source(body)
        deployment = _deployment(body.object("deploymentConfig"))
        view = await self.manager.create_service(NewService(name, deployment, source))
        return JSONResponse(view, status_code=202)

    async def show_service(self, request: Request) -> Response:
        return JSONResponse(self.manager.view(request.path_params["name"]))

    async def update_service(self, request: Request) -> Response:
        body = _Body(
            await _read_json(request),
            ("deploymentConfig", "inferenceConfig", "models", "modelDir"),
        )
        view = await self.manager.update_service(request.path_params["name"], _changes(body))
        return JSONResponse(view, status_code=202)

    async def delete_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self.manager.delete_service(name)
        return JSONResponse(
            {"message": f"service {name!r} is deleted; its replicas drain and stop"},
            status_code=202,
        )

    async def keys(self, request: Request) -> Response:
        return JSONResponse(self.manager.keys(request.path_params["name"]))

    async def regenerate_key(self, request: Request) -> Response:
        body = _Body(await _read_json(request), ("keyType", "keyValue"))
        key_type = body.required_string("keyType")
        if key_type not in ("Primary", "Secondary"):
            raise InvalidRequest(f"keyType must be Primary or Secondary, got {key_type!r}")
        keys = await self.manager.regenerate_key(
            request.path_params["name"],
            "Primary" if key_type == "Primary" else "Secondary",
            body.string("keyValue"),
        )
        return JSONResponse(keys)

    async def token(self, request: Request) -> Response:
        return JSONResponse(self.manager.token(request.path_params["name"]))

    async def create_version(self, request: Request) -> Response:
        body = _Body(
            await _read_json(request),
            (
                "version",
                "inferenceConfig",
                "deploymentConfig",
                "models",
                "modelDir",
                "trafficPercentile",
                "isDefault",
                "isControl",
            ),
        )
        name = body.required_string("version")
        source = _source(body)
        raw = body.object("deploymentConfig")
        deployment = _deployment(raw)
        version = NewVersion(
            name=name,
            deployment=deployment,
            source=source,
            auth=_auth_given(raw, deployment),
            traffic_percentile=body.percentile("trafficPercentile"),
            is_default=bool(body.boolean("isDefault")),
            is_control=bool(body.boolean("isControl")),
        )
        view = await self.manager.create_version(request.path_params["name"], version)
        return JSONResponse(view, status_code=202)

    async def update_version(self, request: Request) -> Response:
        body = _Body(
            await _read_json(request),
            (
                "trafficPercentile",
                "isDefault",
                "isControl",
                "deploymentConfig",
                "inferenceConfig",
                "models",
                "modelDir",
            ),
        )
        view, redeploying = await self.manager.update_version(
            request.path_params["name"], request.path_params["version"], _changes(body)
        )
        return JSONResponse(view, status_code=202 if redeploying else 200)

    async def delete_version(self, request: Request) -> Response:
        view = await self.manager.delete_version(
            request.path_params["name"], request.path_params["version"]
        )
        return JSONResponse(view, status_code=202)

    async def logs(self, request: Request) -> Response:
        query = request.query_params
        tail_text = query.get("tail")
        tail = DEFAULT_LOG_TAIL
        if tail_text is not None:
            if not re.fullmatch(r"\d{1,6}", tail_text):
                raise InvalidRequest(f"tail must be an integer from 1 to {MAX_LOG_TAIL}")
            tail = int(tail_text)
        version = query.get("version") or None
        logs = await self.manager.logs(request.path_params["name"], version, tail)
        return JSONResponse(logs)


def endpoints(api: ManageApi, document: Callable[[], Mapping[str, Any]]) -> list[Endpoint]:
    """Every operation of the API, in the order the document lists them."""

    async def openapi(request: Request) -> Response:
        return JSONResponse(document())

    name = "/services/{name}"
    version = f"{name}/versions/{{version}}"
    return [
        Endpoint("GET", "/services", api.list_services, "List services", {200: "ServiceList"}),
        Endpoint(
            "POST",
            "/services",
            api.create_service,
            "Deploy a service with one version",
            {202: "Service"},
            body="NewService",
            errors=(400, 409, 413, 415),
        ),
        Endpoint("GET", name, api.show_service, "Show a service", {200: "Service"}, errors=(404,)),
        Endpoint(
            "PATCH",
            name,
            api.update_service,
            "Update the default version (and the service's auth)",
            {202: "Service"},
            body="ServiceUpdate",
            errors=(400, 404, 409, 413, 415),
        ),
        Endpoint(
            "DELETE",
            name,
            api.delete_service,
            "Delete a service; its replicas drain and stop",
            {202: "Message"},
            errors=(404,),
        ),
        Endpoint(
            "GET", f"{name}/keys", api.keys, "Show the service's keys", {200: "Keys"}, errors=(404,)
        ),
        Endpoint(
            "POST",
            f"{name}/regenerate-key",
            api.regenerate_key,
            "Regenerate the primary or the secondary key",
            {200: "Keys"},
            body="RegenerateKey",
            errors=(400, 404, 409, 413, 415),
        ),
        Endpoint(
            "POST",
            f"{name}/token",
            api.token,
            "Issue an access token (token auth services)",
            {200: "Token"},
            errors=(400, 404),
        ),
        Endpoint(
            "POST",
            f"{name}/versions",
            api.create_version,
            "Create a version",
            {202: "Service"},
            body="NewVersion",
            errors=(400, 404, 409, 413, 415),
        ),
        Endpoint(
            "PATCH",
            version,
            api.update_version,
            "Update a version: traffic, default, control (200) or its deployment (202)",
            {200: "Service", 202: "Service"},
            body="VersionUpdate",
            errors=(400, 404, 409, 413, 415),
        ),
        Endpoint(
            "DELETE",
            version,
            api.delete_version,
            "Delete a version (not the default, not the last)",
            {202: "Service"},
            errors=(400, 404, 409),
        ),
        Endpoint(
            "GET",
            f"{name}/logs",
            api.logs,
            "Show the last lines of each replica's log",
            {200: "Logs"},
            query=(
                {
                    "name": "version",
                    "in": "query",
                    "required": False,
                    "description": "the version (default: the default version)",
                    "schema": {"type": "string"},
                },
                {
                    "name": "tail",
                    "in": "query",
                    "required": False,
                    "description": "how many lines per replica",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LOG_TAIL,
                        "default": DEFAULT_LOG_TAIL,
                    },
                },
            ),
            errors=(400, 404),
        ),
        Endpoint(
            "GET",
            "/openapi.json",
            openapi,
            "This document",
            {200: None},
            auth=False,
        ),
    ]


def create_manage_app(manager: ServiceManager, admin_key: str) -> Starlette:
    """The management API as an ASGI app, to be mounted at `PREFIX`."""
    if not admin_key:
        raise ValueError("the management API needs an admin key")
    expected = admin_key.encode()
    table = endpoints(ManageApi(manager), lambda: document)
    document = openapi_document(table)
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in table:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint

    routes = [
        Route(path, _PathApp(methods, expected), methods=None) for path, methods in by_path.items()
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, message, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.error(
            "event=manage-error method=%s path=%s", request.method, request.url.path, exc_info=exc
        )
        return error_response(500, "Internal server error")

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.router.redirect_slashes = False
    return app


class _PathApp:
    """Every method of one path: 405 with `Allow` for the others (HEAD included, which
    Starlette would otherwise answer for GET routes), then the admin key, then the handler."""

    def __init__(self, methods: Mapping[str, Endpoint], admin_key: bytes) -> None:
        self.methods = methods
        self.allow = ", ".join(methods)
        self.admin_key = admin_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        endpoint = self.methods.get(request.method)
        if endpoint is None:
            return error_response(
                405, f"{request.method} is not allowed here", headers={"Allow": self.allow}
            )
        if endpoint.auth:
            credential = bearer_credential(request.headers.get("authorization", "").encode())
            if credential is None or not hmac.compare_digest(credential, self.admin_key):
                return _unauthorized()
        try:
            return await endpoint.handler(request)
        except (ServiceError, ConfigError) as error:
            status = error.status if isinstance(error, ServiceError) else 400
            return error_response(status, error.message)
        except _Refusal as refusal:
            return error_response(refusal.status, str(refusal))
        except Exception:
            # A bug or a store failure, never the client's input: log it, say little.
            logger.exception(
                "event=manage-error method=%s path=%s", request.method, request.url.path
            )
            return error_response(500, "Internal server error: see the router's log")


# -- the OpenAPI document -----------------------------------------------------------------

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_OBJECT = {"type": "object", "additionalProperties": True}
_STATE = {
    "type": "string",
    "enum": ["Transitioning", "Healthy", "Unhealthy", "Unschedulable", "Failed"],
}
_MODELS = {
    "type": "array",
    "description": "registered models as NAME:VERSION:/absolute/path",
    "items": {"type": "string"},
}
_MODEL_DIR = {"type": "string", "description": "an absolute folder (instead of models)"}
_INFERENCE = {
    **_OBJECT,
    "description": "inferenceconfig.json, with an absolute sourceDirectory (or entryScript),"
    " or replicaUrls (http://host:port of replicas someone else runs) instead of both",
}
_DEPLOYMENT = {**_OBJECT, "description": "deploymentconfig.json (Azure ML AKS keys)"}
_PATCH = {**_OBJECT, "description": "a partial deploymentconfig.json, merged (RFC 7386)"}
_PERCENTILE = {"type": "number", "minimum": 0, "maximum": 100}


def _object(
    properties: dict[str, Any], required: Sequence[str] = (), *, request: bool = False
) -> dict[str, Any]:
    """An object schema; in a request, optional properties may be null (= not given)."""
    if request:
        properties = {
            name: schema if name in required else {**schema, "nullable": True}
            for name, schema in properties.items()
        }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Message": _object({"message": _STRING}, ["message"]),
    "Replicas": _object(
        {k: {"type": "integer", "minimum": 0} for k in ("desired", "ready", "starting", "warm")},
        ["desired", "ready", "starting", "warm"],
    ),
    "Version": _object(
        {
            "name": _STRING,
            "isDefault": {"type": "boolean"},
            "isControl": {"type": "boolean"},
            "trafficPercentile": _PERCENTILE,
            "effectiveTrafficPercentile": _PERCENTILE,
            "state": _STATE,
            "error": _NULLABLE_STRING,
            "replicas": _ref("Replicas"),
            "deploymentConfig": _OBJECT,
            "inferenceConfig": _OBJECT,
            "models": {"type": "array", "items": _STRING},
            "modelDir": _NULLABLE_STRING,
        },
        [
            "name",
            "isDefault",
            "isControl",
            "trafficPercentile",
            "effectiveTrafficPercentile",
            "state",
            "error",
            "replicas",
            "deploymentConfig",
            "inferenceConfig",
            "models",
            "modelDir",
        ],
    ),
    "Service": _object(
        {
            "name": _STRING,
            "state": _STATE,
            "error": _NULLABLE_STRING,
            "authMode": {"type": "string", "enum": ["key", "token", "none"]},
            "scoringUri": _STRING,
            "swaggerUri": _STRING,
            "createdTime": {"type": "string", "format": "date-time"},
            "updatedTime": {"type": "string", "format": "date-time"},
            "versions": {"type": "array", "items": _ref("Version"), "minItems": 1},
        },
        [
            "name",
            "state",
            "error",
            "authMode",
            "scoringUri",
            "swaggerUri",
            "createdTime",
            "updatedTime",
            "versions",
        ],
    ),
    "ServiceList": {"type": "array", "items": _ref("Service")},
    "Keys": _object(
        {"primaryKey": _STRING, "secondaryKey": _STRING}, ["primaryKey", "secondaryKey"]
    ),
    "Token": _object(
        {
            "accessToken": _STRING,
            "tokenType": {"type": "string", "enum": ["Bearer"]},
            "refreshAfter": {"type": "string", "format": "date-time"},
            "expiryOn": {"type": "string", "format": "date-time"},
        },
        ["accessToken", "tokenType", "refreshAfter", "expiryOn"],
    ),
    "Logs": _object(
        {
            "version": _STRING,
            "replicas": {
                "type": "array",
                "items": _object(
                    {"id": _STRING, "state": _STRING, "log": _STRING}, ["id", "state", "log"]
                ),
            },
        },
        ["version", "replicas"],
    ),
    "NewService": _object(
        {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "inferenceConfig": _INFERENCE,
            "deploymentConfig": _DEPLOYMENT,
            "models": _MODELS,
            "modelDir": _MODEL_DIR,
        },
        ["name", "inferenceConfig"],
        request=True,
    ),
    "ServiceUpdate": _object(
        {
            "deploymentConfig": _PATCH,
            "inferenceConfig": _INFERENCE,
            "models": _MODELS,
            "modelDir": _MODEL_DIR,
        },
        request=True,
    ),
    "NewVersion": _object(
        {
            "version": {"type": "string", "pattern": VERSION_PATTERN},
            "inferenceConfig": _INFERENCE,
            "deploymentConfig": _DEPLOYMENT,
            "models": _MODELS,
            "modelDir": _MODEL_DIR,
            "trafficPercentile": _PERCENTILE,
            "isDefault": {"type": "boolean"},
            "isControl": {"type": "boolean"},
        },
        ["version", "inferenceConfig"],
        request=True,
    ),
    "VersionUpdate": _object(
        {
            "trafficPercentile": _PERCENTILE,
            "isDefault": {"type": "boolean"},
            "isControl": {"type": "boolean"},
            "deploymentConfig": _PATCH,
            "inferenceConfig": _INFERENCE,
            "models": _MODELS,
            "modelDir": _MODEL_DIR,
        },
        request=True,
    ),
    "RegenerateKey": _object(
        {
            "keyType": {"type": "string", "enum": ["Primary", "Secondary"]},
            "keyValue": {"type": "string", "pattern": KEY_PATTERN},
        },
        ["keyType"],
        request=True,
    ),
}

_STATUS_TEXT = {
    200: "OK",
    202: "Accepted: the change is stored; replicas settle in the background",
    400: "Invalid request: the message names the key",
    401: "Missing or invalid admin key",
    404: "No such service or version",
    409: "The name exists, or another operation on the service is in progress",
    413: "The request body is too large",
    415: "The request body is not JSON",
}


def openapi_document(table: Sequence[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the routes in `table`."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in table:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": _operation_id(endpoint),
            "responses": {},
        }
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"{(\w+)}", endpoint.path)
        ]
        parameters += [dict(q) for q in endpoint.query]
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(endpoint.body)}},
            }
        for status, schema in endpoint.responses.items():
            response: dict[str, Any] = {"description": _STATUS_TEXT[status]}
            if schema is not None:
                response["content"] = {"application/json": {"schema": _ref(schema)}}
            else:
                response["content"] = {"application/json": {"schema": _OBJECT}}
            operation["responses"][str(status)] = response
        errors = (*endpoint.errors, 401) if endpoint.auth else endpoint.errors
        for status in sorted(set(errors)):
            operation["responses"][str(status)] = {
                "description": _STATUS_TEXT[status],
                "content": {"application/json": {"schema": _ref("Message")}},
            }
        if not endpoint.auth:
            operation["security"] = []
        paths.setdefault(PREFIX + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mlfe management API",
            "version": "1",
            "description": "Deploy and manage scoring services. Every error is"
            ' {"message": "..."}; send the admin key as a bearer token.',
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"adminKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminKey": []}],
    }


def _operation_id(endpoint: Endpoint) -> str:
    words = re.findall(r"[a-z]+", endpoint.path.replace("{", " ").replace("}", " "))
    return endpoint.method.lower() + "".join(w.capitalize() for w in words)
