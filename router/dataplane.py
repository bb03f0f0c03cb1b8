"""The scoring path: a raw ASGI callable for /api/v1/service/{name}/score and swagger.json.

Per request it reads the registry snapshot, authenticates, chooses a version, waits for
a replica slot and forwards through that replica's keep-alive pool. No Starlette objects,
middleware or regex routing here: this is the product's hot path (DESIGN §5). Everything
outside the scoring prefix goes to the fallback app.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from router.dispatch import QueueFull, QueueTimeout, Replica, ReplicaPool
from router.registry import Deployment, Registry, ServiceRoute
from router.swagger import rewrite_document
from router.upstream import (
    ConnectionLost,
    NotDelivered,
    UpstreamConnection,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from scoring_runtime.http_protocol import CLIENT_DISCONNECT, HEADER_LINES, DisconnectSignal
from scoring_runtime.request_ids import RequestIds
from scoring_runtime.tally import HistogramTally

PREFIX: Final = "/api/v1/service/"
DEFAULT_MAX_BODY: Final = 100 * 1024 * 1024
SWAGGER_FETCH_TIMEOUT: Final = 10.0
# Distinct replicas tried for one request that could not be delivered.
MAX_DELIVERY_ATTEMPTS: Final = 3
# The status recorded (never sent) for a client that left before its answer: nginx's 499.
CLIENT_GONE: Final = 499

JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json")
WWW_AUTHENTICATE: Final = (b"www-authenticate", b"Bearer")
RETRY_AFTER: Final = (b"retry-after", b"1")
CONNECTION_CLOSE: Final = (b"connection", b"close")
FORWARDED_METHODS: Final = frozenset(("POST", "GET", "OPTIONS"))
_NO_EXTENSIONS: Final[dict[str, Any]] = {}
# Headers the router sets on the response itself; the replica's copies are dropped.
OWN_RESPONSE_HEADERS: Final = frozenset(
    (b"x-request-id", b"x-ms-client-request-id", b"azureml-model-deployment")
)
# Credentials stay at the front door: replicas never see them.
NOT_FORWARDED: Final = frozenset((b"authorization",))


class ClientGone(Exception):
    """The client disconnected before its request was sent to a replica."""


class ResponseBroken(Exception):
    """The replica failed after the response had started; the client connection is aborted."""


class RequestTooLarge(Exception):
    """The request body exceeds the configured limit."""


class ClientWatch:
    """Calls `on_gone` if the client disconnects while its request waits for a slot,
    under an ASGI server that offers no DisconnectSignal.

    The body has been read, so receive() now returns only when the client disconnects.
    Instead of a task per wait, receive()'s coroutine is stepped once by hand, as a task
    would: it returns at once (the client is already gone) or parks on a future, which
    gets a done callback. close() ends it.
    """

    __slots__ = ("_coroutine", "_fallback", "client_gone")

    def __init__(self, receive: Receive, on_gone: Callable[[], object]) -> None:
        self.client_gone = False
        self._coroutine: Any = None
        self._fallback: asyncio.Future[Any] | None = None
        coroutine: Any = receive()
        try:
            parked = coroutine.send(None)
        except StopIteration:
            self.client_gone = True
            on_gone()
            return
        if not asyncio.isfuture(parked):
            # Not parked on a future (a server with a different receive()): use a task.
            coroutine.close()
            self._fallback = asyncio.ensure_future(receive())
            self._fallback.add_done_callback(self._gone_with(on_gone))
            return
        self._coroutine = coroutine
        parked.add_done_callback(self._gone_with(on_gone))

    def _gone_with(self, on_gone: Callable[[], object]) -> Callable[[Any], None]:
        def gone(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                self.client_gone = True
                on_gone()

        return gone

    def close(self) -> None:
        if self._coroutine is not None:
            self._coroutine.close()
            self._coroutine = None
        if self._fallback is not None and not self._fallback.done():
            self._fallback.cancel()


def watch_client(
    scope: Scope, receive: Receive, on_gone: Callable[[], object]
) -> DisconnectSignal | ClientWatch:
    """Watch for the client leaving: through the server's DisconnectSignal when it
    offers one (mlfe's protocol does), else through receive()."""
    signal = scope.get("extensions", _NO_EXTENSIONS).get(CLIENT_DISCONNECT)
    if isinstance(signal, DisconnectSignal):
        return signal.watch(on_gone)
    return ClientWatch(receive, on_gone)


class _Delivery:
    """One scoring request on its way to a replica: the slot it holds, and the request
    sent from the callback that freed the slot when it had to queue for one.

    A queued request is written to its replica the moment a slot frees (`granted`), from
    the protocol callback that read the previous answer's last byte, rather than after its
    task has been woken and run: the replica gets its next request without waiting out the
    rest of the loop's turn, and the task wakes once, with the answer.
    """

    __slots__ = (
        "body",
        "conn",
        "headers",
        "method",
        "pool",
        "queue_wait",
        "queued_at",
        "replica",
        "target",
        "timeout",
        "watch",
    )

    def __init__(
        self,
        pool: ReplicaPool[UpstreamPool],
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        queue_wait: HistogramTally,
    ) -> None:
        self.pool = pool
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.queue_wait = queue_wait
        # The slot held: freed as the replica's last byte arrives, or when the request ends.
        self.replica: Replica[UpstreamPool] | None = None
        # Set while queued.
        self.queued_at = 0.0
        self.watch: DisconnectSignal | ClientWatch | None = None
        # The connection a queued request was sent on by granted().
        self.conn: UpstreamConnection | None = None

    def granted(self, replica: Replica[UpstreamPool], slot: asyncio.Future[Any]) -> None:
        """The pool's grant callback: send now if an idle connection takes the request
        (`slot` then gets the answer), else wake the task with the replica to send it."""
        self.replica = replica
        self.queue_wait.observe(time.perf_counter() - self.queued_at)
        conn = replica.target.start(
            self.method,
            self.target,
            self.headers,
            self.body,
            self.timeout,
            self.release,
            OWN_RESPONSE_HEADERS,
            slot,
        )
        if conn is None:
            slot.set_result(replica)
            return
        self.conn = conn
        if self.watch is not None:
            # Delivered: from here on a client that leaves is noticed when its answer is
            # sent, as for a request its task sent.
            self.watch.close()

    def release(self) -> None:
        """Free the slot, if still held. Also the upstream's `on_done`, called as the
        replica's last byte arrives: the next queued request can have the slot then,
        without waiting for this task to run or for a slow client."""
        replica = self.replica
        if replica is not None:
            self.replica = None
            self.pool.release(replica)


class DataPlane:
    """ASGI app for the scoring routes; delegates every other path to `fallback`."""

    def __init__(
        self,
        registry: Registry,
        fallback: ASGIApp,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.registry = registry
        self.fallback = fallback
        self.max_body = max_body
        self._random = random_source
        self._request_ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX):
            await self.fallback(scope, receive, send)
            return
        name, _, action = path[len(PREFIX) :].partition("/")
        if action == "score":
            await self._score(scope, receive, send, name)
        elif action == "swagger.json" and scope["method"] in ("GET", "HEAD"):
            await self._swagger(scope, send, name)
        else:
            self.registry.metrics.count_unrouted(404)
            await send_error(send, 404, f"No route for {path}", [])

    async def _score(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        started = time.perf_counter()
        authorization = request_id = client_request_id = pinned = content_length = None
        forwarded: list[tuple[bytes, bytes]] = []
        for header in scope["headers"]:
            key: bytes = header[0]  # typed, so each comparison below is a bytes one
            if key == b"authorization":
                authorization = header[1]
                continue
            if key == b"x-request-id":
                request_id = header[1]
            elif key == b"x-ms-client-request-id":
                client_request_id = header[1]
            elif key == b"azureml-model-deployment":
                pinned = header[1]
            elif key == b"content-length":
                content_length = header[1]
            forwarded.append(header)
        if request_id is None:
            request_id = self._request_ids.next()
            forwarded.append((b"x-request-id", request_id))
        echo = [(b"x-request-id", request_id)]
        if client_request_id is not None:
            echo.append((b"x-ms-client-request-id", client_request_id))

        route = self.registry.routes.get(name)
        if route is None:
            self.registry.metrics.count_unrouted(404)
            await send_error(send, 404, f"Service '{name}' not found", echo)
            return
        method: str = scope["method"]
        if method not in FORWARDED_METHODS:
            self.registry.metrics.count_unrouted(405)
            await send_error(send, 405, f"Method {method} not allowed on /score", echo)
            return
        # A browser's CORS preflight never carries credentials; the replica answers it
        # for the origins in its AML_CORS_ORIGINS.
        problem = None if method == "OPTIONS" else route.auth.authenticate(authorization)
        if problem is not None:
            self.registry.metrics.count_unrouted(401)
            await send_error(send, 401, problem, [*echo, WWW_AUTHENTICATE])
            return
        deployment = self._choose_deployment(route, pinned)
        if deployment is None:
            self.registry.metrics.count_unrouted(404)
            version = (pinned or b"").decode("latin-1")
            await send_error(send, 404, f"Version '{version}' not found in '{name}'", echo)
            return
        echo.append((b"azureml-model-deployment", deployment.spec.name.encode()))

        status = await self._forward(
            scope, receive, send, deployment, forwarded, echo, content_length
        )
        metrics = deployment.metrics
        metrics.requests.count(status)
        metrics.latency.observe(time.perf_counter() - started)

    def _choose_deployment(self, route: ServiceRoute, pinned: bytes | None) -> Deployment | None:
        if pinned is not None:
            return route.deployments.get(pinned.decode("latin-1").strip())
        return route.deployments[route.traffic.choose_version(self._random())]

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        deployment: Deployment,
        headers: list[tuple[bytes, bytes]],
        echo: list[tuple[bytes, bytes]],
        content_length: bytes | None,
    ) -> int:
        """Deliver the request to a replica and stream the answer; returns the status sent."""
        try:
            body = await self._read_body(receive, content_length)
        except RequestTooLarge:
            limit = self.max_body
            await send_error(
                send,
                413,
                f"Request body exceeds the limit of {limit} bytes",
                [*echo, CONNECTION_CLOSE],
            )
            return 413
        except ClientGone:
            return CLIENT_GONE

        pool = deployment.pool
        timeout = deployment.spec.scoring_timeout
        target = b"/score?" + scope["query_string"] if scope.get("query_string") else b"/score"
        method = scope["method"].encode()
        tried: set[str] = set()
        queue_wait = deployment.metrics.queue_wait
        delivery = _Delivery(pool, method, target, headers, body, timeout, queue_wait)
        try:
            while True:
                outcome = await self._acquire(deployment, scope, receive, tried, delivery)
                if isinstance(outcome, UpstreamResponse):
                    response = outcome  # sent the moment its slot freed
                    break
                try:
                    response = await outcome.target.request(
                        method,
                        target,
                        headers,
                        body,
                        timeout,
                        delivery.release,
                        OWN_RESPONSE_HEADERS,
                    )
                    break
                except NotDelivered:
                    # Never reached the replica: safe to try another one.
                    tried.add(outcome.id)
                    delivery.release()
                    if len(tried) >= MAX_DELIVERY_ATTEMPTS:
                        raise
            await send(_response_start(scope, response, echo))
            if response.complete:
                await send({"type": "http.response.body", "body": response.body})
            else:
                try:
                    await self._stream(send, response)
                except (ConnectionLost, UpstreamTimeout) as exc:
                    # Headers are out; only a closed connection tells the client it broke.
                    deployment.metrics.requests.count(502)
                    raise ResponseBroken(str(exc)) from exc
            return response.status
        except QueueFull:
            message = "Too many requests are waiting for a replica"
            await send_error(send, 503, message, [*echo, RETRY_AFTER])
            return 503
        except QueueTimeout:
            wait_ms = round(deployment.spec.max_queue_wait * 1000)
            message = f"No replica was free within maxQueueWaitMs ({wait_ms} ms)"
            await send_error(send, 503, message, [*echo, RETRY_AFTER])
            return 503
        except UpstreamTimeout:
            # A timed-out request never completes, so it still holds its replica's slot.
            replica = delivery.replica
            if replica is not None and self.registry.on_replica_timeout is not None:
                self.registry.on_replica_timeout(deployment.service, deployment.version, replica.id)
            message = f"Scoring timed out after {round(timeout * 1000)} ms"
            await send_error(send, 504, message, echo)
            return 504
        except NotDelivered:
            message = f"No replica of version '{deployment.version}' could be reached"
            await send_error(send, 502, message, echo)
            return 502
        except ConnectionLost:
            message = "The replica closed the connection before answering"
            await send_error(send, 502, message, echo)
            return 502
        except ClientGone:
            return CLIENT_GONE
        finally:
            delivery.release()

    async def _acquire(
        self,
        deployment: Deployment,
        scope: Scope,
        receive: Receive,
        tried: set[str],
        delivery: _Delivery,
    ) -> Replica[UpstreamPool] | UpstreamResponse:
        """A replica slot now, or after waiting in the queue while watching the client; a
        queued request may come back already answered (`_Delivery.granted`)."""
        pool = deployment.pool
        replica = pool.try_acquire(exclude=tried)
        if replica is not None:
            deployment.metrics.queue_wait.observe(0.0)
            delivery.replica = replica
            return replica
        if tried and all(r.id in tried or r.draining for r in pool.replicas):
            # Every replica left has already refused this request: waiting cannot help.
            raise NotDelivered("no other replica to try")
        delivery.queued_at = time.perf_counter()
        slot = pool.enqueue(tried, delivery.granted)
        watch = delivery.watch = watch_client(scope, receive, slot.cancel)
        try:
            outcome: Replica[UpstreamPool] | UpstreamResponse = await slot
            return outcome
        except asyncio.CancelledError:
            if delivery.conn is not None:
                delivery.conn.give_up(slot)  # sent; the replica's answer goes unread
            elif delivery.replica is None:
                pool.withdraw(slot)  # still queued
            if watch.client_gone:
                raise ClientGone from None
            raise
        finally:
            delivery.watch = None
            watch.close()

    async def _stream(self, send: Send, response: UpstreamResponse) -> None:
        """Relay a response whose body is still arriving, chunk by chunk."""
        try:
            if response.body:
                await send({"type": "http.response.body", "body": response.body, "more_body": True})
            while chunk := await response.read():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except BaseException:
            # The client or the replica failed mid-body: stop the replica sending more.
            response.abandon()
            raise
        await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes:
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                declared = 0
            if declared > self.max_body:
                raise RequestTooLarge
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body:
                raise RequestTooLarge
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise RequestTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _swagger(self, scope: Scope, send: Send, name: str) -> None:
        route = self.registry.routes.get(name)
        if route is None:
            await send_error(send, 404, f"Service '{name}' not found", [])
            return
        query: bytes = scope.get("query_string", b"")
        cached = route.swagger_cache.get(query.decode("latin-1"))
        if cached is None:
            status, body = await self._fetch_swagger(route, query)
            if status != 200:
                await send_json(send, status, body, [])
                return
            host = _header(scope, b"host") or b"localhost"
            base_url = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}{PREFIX}{name}"
            document = rewrite_document(orjson.loads(body), base_url, route.auth.scheme)
            cached = orjson.dumps(document)
            route.swagger_cache[query.decode("latin-1")] = cached
        await send_json(send, 200, cached, [])

    async def _fetch_swagger(self, route: ServiceRoute, query: bytes) -> tuple[int, bytes]:
        """Ask a ready replica of the default version for its document."""
        candidates = [r for r in route.default.pool.replicas if not r.draining]
        target = b"/swagger.json" + (b"?" + query if query else b"")
        for replica in candidates:
            try:
                response = await replica.target.request(
                    b"GET", target, [], b"", SWAGGER_FETCH_TIMEOUT
                )
                body = await _read_all(response)
            except (NotDelivered, ConnectionLost, UpstreamTimeout):
                continue
            return response.status, body
        message = f"No ready replica of '{route.name}' to read the swagger document from"
        return 503, orjson.dumps({"message": message})


def _response_start(
    scope: Scope, response: UpstreamResponse, echo: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """The ASGI start message relaying `response`. mlfe's server takes the replica's
    fields as the lines they arrived in; any other server gets them as pairs."""
    if HEADER_LINES not in scope.get("extensions", _NO_EXTENSIONS):
        return {
            "type": "http.response.start",
            "status": response.status,
            "headers": [*response.headers, *echo],
        }
    length = response.length
    return {
        "type": "http.response.start",
        "status": response.status,
        "headers": echo if length is None else [*echo, (b"content-length", length)],
        HEADER_LINES: response.lines,
    }


async def _read_all(response: UpstreamResponse) -> bytes:
    if response.complete:
        return response.body
    parts = [response.body]
    while chunk := await response.read():
        parts.append(chunk)
    return b"".join(parts)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, JSON_CONTENT_TYPE, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    await send_json(send, status, orjson.dumps({"message": message}), headers)
