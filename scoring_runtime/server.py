"""The replica's HTTP interface as a raw ASGI callable.

Routes are matched by exact path, headers are read in one pass, response header lists
are built from precomputed pairs, and the only per-request objects are the ones the
request needs. Status codes, messages and headers follow Azure's inference server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from scoring_runtime.cors import CorsPolicy
from scoring_runtime.encoding import error_json
from scoring_runtime.invoke import Invoker, Outcome, ScoreRequest
from scoring_runtime.loader import InputMode
from scoring_runtime.log import log_event
from scoring_runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from scoring_runtime.metrics import RuntimeMetrics
from scoring_runtime.request_ids import RequestIds
from scoring_runtime.slots import ScoringSlots, ScoringTimeout
from scoring_runtime.swagger_documents import SwaggerDocuments

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEADER_LIMIT = 100

_JSON = (b"content-type", b"application/json")
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_HTML = (b"content-type", b"text/html; charset=utf-8")
_RUN_OK = (b"x-ms-run-function-failed", b"False")
_RUN_FAILED = (b"x-ms-run-function-failed", b"True")
_HEALTHY = b"Healthy"
_NOT_FOUND = error_json(
    "The requested URL was not found on the server. "
    "If you entered the URL manually please check your spelling and try again."
)
_SCORE_METHOD_NOT_ALLOWED = error_json("Method not allowed")
_METHOD_NOT_ALLOWED = error_json("The method is not allowed for the requested URL.")
_INTERNAL_ERROR = error_json("An unexpected internal error occurred. Check the logs for more info.")
_REQUEST_ID_TOO_LONG = error_json(f"x-request-id must not exceed {HEADER_LIMIT} characters")
_CLIENT_ID_TOO_LONG = error_json(
    f"x-ms-request-id and x-ms-client-request-id must not exceed {HEADER_LIMIT} characters"
)
_ALLOW_SCORE = (b"allow", b"GET, OPTIONS, POST")
_ALLOW_READ = (b"allow", b"GET, HEAD, OPTIONS")
_ALLOW_METRICS = (b"allow", b"GET, HEAD")

# The request headers the runtime reads; everything else is only passed to run().
_REQUEST_ID = b"x-request-id"
_CLIENT_REQUEST_ID = b"x-ms-client-request-id"
_LEGACY_REQUEST_ID = b"x-ms-request-id"
_TRACE_ID = b"traceid"
_CONTENT_TYPE = b"content-type"
_ORIGIN = b"origin"
_PREFLIGHT_METHOD = b"access-control-request-method"
_PREFLIGHT_HEADERS = b"access-control-request-headers"
_WANTED = frozenset(
    (
        _REQUEST_ID,
        _CLIENT_REQUEST_ID,
        _LEGACY_REQUEST_ID,
        _TRACE_ID,
        _CONTENT_TYPE,
        _ORIGIN,
        _PREFLIGHT_METHOD,
        _PREFLIGHT_HEADERS,
    )
)


class _ClientGone(Exception):
    pass


class _IdTooLong(Exception):
    """A request id over the limit: the 431 body and the headers that may still be echoed."""

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.body = body
        self.headers = headers


class ScoringApp:
    """GET /, GET|POST|OPTIONS /score (any method with @rawhttp), GET /swagger.json, GET /metrics."""

    def __init__(
        self,
        invoker: Invoker,
        mode: InputMode,
        slots: ScoringSlots,
        swagger: SwaggerDocuments,
        metrics: RuntimeMetrics,
        cors: CorsPolicy | None,
        scoring_timeout_ms: int,
    ) -> None:
        self._invoker = invoker
        self._raw = mode is InputMode.RAW
        self._slots = slots
        self._swagger = swagger
        self._metrics = metrics
        self._cors = cors
        self._timeout_ms = scoring_timeout_ms
        self._request_ids = RequestIds()
        self._timeout_body = error_json(f"Scoring timeout after {scoring_timeout_ms} ms")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and websockets are not served
        path = scope["path"]
        if path == "/score":
            await self._score(scope, receive, send)
        elif path == "/":
            await self._health(scope, send)
        elif path == "/swagger.json":
            await self._swagger_document(scope, send)
        elif path == "/metrics":
            await self._metrics_page(scope, send)
        else:
            await self._reply(send, 404, [_JSON], _NOT_FOUND, self._common(scope))

    # -- routes --

    async def _score(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        outcome, extra = await self._score_outcome(scope, receive)
        if outcome is None:
            return  # the client left before its body arrived
        await self._reply(send, outcome.status, outcome.headers, outcome.body, extra)
        self._metrics.observe(outcome.status, time.perf_counter() - started, outcome.run_ms)

    async def _score_outcome(
        self, scope: Scope, receive: Receive
    ) -> tuple[Outcome | None, list[tuple[bytes, bytes]]]:
        found = _pick_headers(scope["headers"])
        method = scope["method"]
        try:
            common = self._common_from(found, method)
        except _IdTooLong as error:
            return Outcome(431, [_JSON, _RUN_OK], error.body, None), error.headers

        if not self._raw and method != "POST" and method != "GET":
            if method == "OPTIONS":
                return Outcome(200, [_HTML, _RUN_OK], b"", None), common
            headers = [_JSON, _RUN_OK, _ALLOW_SCORE]
            return Outcome(405, headers, _SCORE_METHOD_NOT_ALLOWED, None), common

        try:
            body = await _read_body(receive)
        except _ClientGone:
            return None, common
        request = ScoreRequest(
            method=method,
            path=scope["path"],
            query_string=scope["query_string"],
            headers=scope["headers"],
            content_type=found.get(_CONTENT_TYPE, b""),
            body=body,
            scheme=scope.get("scheme", "http"),
            client=scope.get("client"),
            root_path=scope.get("root_path", ""),
        )
        try:
            outcome = await self._slots.call(self._invoker, request)
        except ScoringTimeout:
            log_event("run_timeout", logging.ERROR, timeout_ms=self._timeout_ms)
            return Outcome(500, [_JSON, _RUN_FAILED], self._timeout_body, None), common
        except Exception as error:
            # The invoker answers every script failure itself; this is a runtime bug.
            log_event("score_failed", logging.ERROR, exc_info=error)
            return Outcome(500, [_JSON, _RUN_OK], _INTERNAL_ERROR, None), common
        if outcome.run_ms is not None:
            return outcome, [*common, (b"x-ms-run-fn-exec-ms", b"%.3f" % outcome.run_ms)]
        return outcome, common

    async def _health(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method == "GET" or method == "HEAD":
            await self._reply(send, 200, [_TEXT], _HEALTHY, self._common(scope))
        else:
            await self._not_allowed(scope, send, _ALLOW_READ)

    async def _swagger_document(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await self._not_allowed(scope, send, _ALLOW_READ)
            return
        version = None
        for key, value in parse_qsl(
            scope["query_string"].decode("latin-1"), keep_blank_values=True
        ):
            if key == "version":
                version = value
                break
        status, body = self._swagger.get(version)
        await self._reply(send, status, [_JSON], body, self._common(scope))

    async def _metrics_page(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await self._reply(send, 405, [_JSON, _ALLOW_METRICS], _METHOD_NOT_ALLOWED, [])
            return
        content_type = (b"content-type", METRICS_CONTENT_TYPE)
        await self._reply(send, 200, [content_type], self._metrics.render(), [])

    async def _not_allowed(self, scope: Scope, send: Send, allow: tuple[bytes, bytes]) -> None:
        if scope["method"] == "OPTIONS":
            # Flask answers OPTIONS itself on these routes, which CORS preflights rely on.
            await self._reply(send, 200, [_HTML, allow], b"", self._common(scope))
        else:
            await self._reply(send, 405, [_JSON, allow], _METHOD_NOT_ALLOWED, self._common(scope))

    # -- headers every response carries --

    def _common(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """Request-id and CORS headers; outside /score, ids that are too long are dropped."""
        try:
            return self._common_from(_pick_headers(scope["headers"]), scope["method"])
        except _IdTooLong:
            return []

    def _common_from(self, found: dict[bytes, bytes], method: str) -> list[tuple[bytes, bytes]]:
        """Response headers for the request ids (Azure's rules), plus CORS.

        Raises _IdTooLong when an id exceeds the limit (Azure answers 431).
        """
        request_id = found.get(_REQUEST_ID)
        if request_id is None:
            request_id = self._request_ids.next()
        elif len(request_id) > HEADER_LIMIT:
            raise _IdTooLong(_REQUEST_ID_TOO_LONG, [])
        client_id = found.get(_CLIENT_REQUEST_ID, b"")
        legacy_id = found.get(_LEGACY_REQUEST_ID, b"")
        if legacy_id:
            # x-ms-request-id is the deprecated client id: it fills in for a missing one.
            client_id = client_id or legacy_id
        else:
            legacy_id = client_id or request_id
        if len(client_id) > HEADER_LIMIT or len(legacy_id) > HEADER_LIMIT:
            raise _IdTooLong(_CLIENT_ID_TOO_LONG, [(_REQUEST_ID, request_id)])

        headers = [(_REQUEST_ID, request_id), (_LEGACY_REQUEST_ID, legacy_id)]
        if client_id:
            headers.append((_CLIENT_REQUEST_ID, client_id))
        trace_id = found.get(_TRACE_ID)
        if trace_id is not None:
            headers.append((b"traceid", trace_id))
        if self._cors is not None:
            origin = found.get(_ORIGIN)
            if origin is not None:
                headers += self._cors.headers(
                    origin, method, found.get(_PREFLIGHT_METHOD), found.get(_PREFLIGHT_HEADERS)
                )
        return headers

    @staticmethod
    async def _reply(
        send: Send,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body)), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _pick_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    found = {}
    for name, value in raw:
        if name in _WANTED:
            found[name] = value
    return found


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
