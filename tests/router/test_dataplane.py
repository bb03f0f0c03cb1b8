"""The scoring path end to end: a real router on a loopback socket, real runtime replicas."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from openapi_spec_validator import validate

from router.app import create_app
from router.auth import issue_token
from router.dataplane import ClientWatch, watch_client
from router.metrics import RouterMetrics
from router.registry import Registry, ServiceSpec, VersionSpec
from router.server import uvicorn_server
from scoring_runtime.http_protocol import CLIENT_DISCONNECT, DisconnectSignal
from scoring_runtime.listen import bind_tcp
from tests.helpers.runtime_proc import RuntimeProcess, start_runtime

SCRIPTS = Path(__file__).parent / "scripts"
BEHAVE = SCRIPTS / "behave_score.py"
PRIMARY, SECONDARY = "primary-key-for-tests", "secondary-key-for-tests"
SECRET = b"signing-secret-for-tests-".ljust(64, b"0")
MAX_BODY = 1024 * 1024


@dataclass
class Router:
    registry: Registry
    url: str
    client: httpx.AsyncClient

    def deploy(
        self,
        versions: dict[str, list[str]],
        *,
        name: str = "svc",
        default: str | None = None,
        traffic: dict[str, float] | None = None,
        auth_mode: str = "key",
        **settings: object,
    ) -> None:
        """Publish a service whose versions are served by the given replica addresses."""
        specs = tuple(
            VersionSpec(name=v, traffic_percentile=(traffic or {}).get(v, 0.0), **settings)  # type: ignore[arg-type]
            for v in versions
        )
        self.registry.set_service(
            ServiceSpec(
                name=name,
                versions=specs,
                default_version=default or next(iter(versions)),
                auth_mode=auth_mode,  # type: ignore[arg-type]
                primary_key=PRIMARY,
                secondary_key=SECONDARY,
                token_secret=SECRET,
            )
        )
        for version, addresses in versions.items():
            for i, address in enumerate(addresses):
                self.registry.add_replica(name, version, f"{version}-{i}", address)

    async def score(
        self, payload: object = None, *, key: str = PRIMARY, **kw: object
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}  # type: ignore[dict-item]
        return await self.client.post(
            "/api/v1/service/svc/score", content=orjson.dumps(payload or {}), headers=headers, **kw
        )


def address(runtime: RuntimeProcess) -> str:
    """The runtime's address as the router's upstream pool takes it."""
    return f"unix:{runtime.uds}"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RuntimeProcess]]:
    """Two long-lived one-slot replicas of the behaving script."""
    started = [start_runtime(BEHAVE, uds=True) for _ in range(2)]
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
def cors_replica() -> Iterator[RuntimeProcess]:
    """A replica that allows one browser origin."""
    started = start_runtime(BEHAVE, uds=True, args=["--cors-origins", "https://app.example"])
    yield started
    started.stop()


@pytest.fixture
def replica() -> Iterator[RuntimeProcess]:
    """A replica of the behaving script for tests that may kill it."""
    started = start_runtime(BEHAVE, uds=True)
    yield started
    started.stop()


# The router relays a replica's header fields to mlfe's HTTP protocol as the lines they
# arrived in, and to any other ASGI server as (name, value) pairs.
ON_BOTH_PROTOCOLS = pytest.mark.parametrize("router", ["mlfe", "httptools"], indirect=True)


@pytest.fixture
async def router(request: pytest.FixtureRequest) -> AsyncIterator[Router]:
    """The router on mlfe's HTTP protocol, or on uvicorn's own when a test asks for it."""
    registry = Registry(RouterMetrics())
    app = create_app(registry, max_body=MAX_BODY, random_source=random.Random(1234).random)
    sock = bind_tcp("127.0.0.1", 0)
    server = uvicorn_server(app)
    if getattr(request, "param", "mlfe") == "httptools":
        server.config.http = "httptools"  # read when the server starts
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield Router(registry, url, client)
    server.should_exit = True
    await task
    for name in list(registry.routes):
        registry.remove_service(name)


def assert_json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["message"]
    assert message
    return message


@ON_BOTH_PROTOCOLS
async def test_scores_and_sets_request_headers(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[0])]})
    response = await router.score({"echo": "hi"}, headers={"x-ms-client-request-id": "c-1"})
    assert response.status_code == 200
    assert response.json()["echo"] == "hi"
    assert response.headers["azureml-model-deployment"] == "a"
    assert response.headers["x-ms-client-request-id"] == "c-1"
    assert len(response.headers["x-request-id"]) == 36
    assert len(response.headers.get_list("x-request-id")) == 1
    # The replica's own fields pass through, and the body is framed by its length.
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert response.headers["content-length"] == str(len(response.content))

    given = await router.score({}, headers={"x-request-id": "my-id"})
    assert given.headers["x-request-id"] == "my-id"


async def test_unknown_service_is_404(router: Router) -> None:
    response = await router.client.post("/api/v1/service/nope/score", content=b"{}")
    assert "nope" in assert_json_error(response, 404)


def _token(**overrides: object) -> str:
    now = int(time.time())
    claims = {"aud": "svc", "iat": now, "exp": now + 600, **overrides}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("mode", "authorization", "status"),
    [
        ("key", None, 401),
        ("key", f"Basic {PRIMARY}", 401),
        ("key", "Bearer wrong-key", 401),
        ("key", f"Bearer {PRIMARY}", 200),
        ("key", f"bearer {SECONDARY}", 200),
        ("token", f"Bearer {PRIMARY}", 401),
        ("token", "Bearer " + issue_token(SECRET, "svc").token, 200),
        ("token", "Bearer " + _token(exp=int(time.time()) - 60, iat=int(time.time()) - 120), 401),
        (
            "token",
            "Bearer "
            + jwt.encode(
                {"aud": "svc", "exp": 2**33, "iat": 1},
                b"forged-secret-0123456789abcdef00",
                algorithm="HS256",
            ),
            401,
        ),
        (
            "token",
            "Bearer " + jwt.encode({"aud": "svc", "exp": 2**33, "iat": 1}, None, algorithm="none"),
            401,
        ),
        (
            "token",
            "Bearer "
            + jwt.encode({"aud": "svc", "exp": 2**33, "iat": 1}, SECRET, algorithm="HS512"),
            401,
        ),
        ("token", "Bearer " + _token(aud="other-service"), 401),
        ("none", None, 200),
    ],
    ids=[
        "key-missing",
        "key-wrong-scheme",
        "key-wrong",
        "key-primary",
        "key-secondary",
        "token-given-key",
        "token-valid",
        "token-expired",
        "token-forged",
        "token-alg-none",
        "token-hs512",
        "token-wrong-audience",
        "no-auth",
    ],
)
async def test_auth_matrix(
    router: Router,
    replicas: list[RuntimeProcess],
    mode: str,
    authorization: str | None,
    status: int,
) -> None:
    router.deploy({"a": [address(replicas[0])]}, auth_mode=mode)
    headers = {"Authorization": authorization} if authorization else {}
    response = await router.client.post("/api/v1/service/svc/score", content=b"{}", headers=headers)
    if status == 401:
        assert_json_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert PRIMARY not in response.text
    else:
        assert response.status_code == status


async def test_traffic_split_follows_percentiles(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    addresses = [address(r) for r in replicas]
    # "a" is the default with 10% of its own plus the 40% nobody claimed.
    router.deploy(
        {"a": addresses, "b": addresses, "c": addresses}, traffic={"a": 10, "b": 30, "c": 20}
    )
    total = 1000
    seen: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(8)

    async def one() -> None:
        async with semaphore:
            response = await router.score({})
            assert response.status_code == 200
            seen[response.headers["azureml-model-deployment"]] += 1

    await asyncio.gather(*(one() for _ in range(total)))
    expected = {"a": 0.5 * total, "b": 0.3 * total, "c": 0.2 * total}
    chi_square = sum((seen[v] - e) ** 2 / e for v, e in expected.items())
    # Two degrees of freedom: 9.21 is the 1% critical value.
    assert chi_square < 9.21, seen


async def test_header_pins_a_version(router: Router, replicas: list[RuntimeProcess]) -> None:
    addresses = [address(replicas[0])]
    router.deploy({"a": addresses, "b": addresses}, traffic={"a": 100, "b": 0})
    for _ in range(5):
        response = await router.score({}, headers={"azureml-model-deployment": "b"})
        assert response.headers["azureml-model-deployment"] == "b"
    unknown = await router.score({}, headers={"azureml-model-deployment": "zzz"})
    assert "zzz" in assert_json_error(unknown, 404)


async def test_waits_for_a_free_slot(router: Router, replicas: list[RuntimeProcess]) -> None:
    router.deploy({"a": [address(replicas[0])]}, max_queue_wait=5.0)
    first, second = await asyncio.gather(router.score({"sleep": 0.3}), router.score({"echo": 2}))
    assert first.status_code == second.status_code == 200
    assert second.json()["echo"] == 2


async def test_503_after_max_queue_wait(router: Router, replicas: list[RuntimeProcess]) -> None:
    router.deploy({"a": [address(replicas[0])]}, max_queue_wait=0.1)
    busy = asyncio.create_task(router.score({"sleep": 0.6}))
    await asyncio.sleep(0.1)
    rejected = await router.score({})
    assert "maxQueueWaitMs" in assert_json_error(rejected, 503)
    assert rejected.headers["retry-after"] == "1"
    assert (await busy).status_code == 200


async def test_503_at_once_when_queue_is_full(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[0])]}, max_queue_wait=5.0, max_queue_length=1)
    busy = asyncio.create_task(router.score({"sleep": 0.5}))
    await asyncio.sleep(0.1)
    queued = asyncio.create_task(router.score({"echo": "queued"}))
    await asyncio.sleep(0.1)
    rejected = await router.score({})
    assert_json_error(rejected, 503)
    assert rejected.headers["retry-after"] == "1"
    assert not busy.done() and not queued.done()
    assert (await busy).status_code == 200
    assert (await queued).json()["echo"] == "queued"


async def test_disconnect_while_queued_is_never_sent(
    router: Router, replicas: list[RuntimeProcess], tmp_path: Path
) -> None:
    router.deploy({"a": [address(replicas[0])]}, max_queue_wait=5.0)
    record = tmp_path / "delivered.txt"
    busy = asyncio.create_task(router.score({"sleep": 0.5, "record": str(record), "echo": "busy"}))
    await asyncio.sleep(0.1)
    with pytest.raises(httpx.ReadTimeout):
        await router.score({"record": str(record), "echo": "gone"}, timeout=0.2)
    assert (await busy).status_code == 200
    after = await router.score({"record": str(record), "echo": "after"})
    assert after.status_code == 200
    assert record.read_text().split() == ["busy", "after"]
    deployment = router.registry.deployment("svc", "a")
    assert deployment.pool.waiting == 0
    assert deployment.pool.in_flight == 0


# A queued request is sent to its replica from the callback that frees its slot; the
# tests below follow such a request through what can happen to it after that.


async def test_a_client_leaving_after_its_queued_request_was_sent_frees_the_slot(
    router: Router, replicas: list[RuntimeProcess], tmp_path: Path
) -> None:
    router.deploy({"a": [address(replicas[0])]}, max_queue_wait=5.0)
    record = tmp_path / "delivered.txt"
    busy = asyncio.create_task(router.score({"sleep": 0.3, "record": str(record), "echo": "busy"}))
    await asyncio.sleep(0.1)
    # Sent when `busy` is answered (0.3 s); its client gives up while the replica works.
    with pytest.raises(httpx.ReadTimeout):
        await router.score({"sleep": 0.4, "record": str(record), "echo": "sent"}, timeout=0.4)
    assert (await busy).status_code == 200
    after = await router.score({"record": str(record), "echo": "after"})
    assert after.status_code == 200
    assert record.read_text().split() == ["busy", "sent", "after"]
    pool = router.registry.deployment("svc", "a").pool
    assert pool.waiting == 0
    assert pool.in_flight == 0


async def test_scoring_timeout_of_a_queued_request_runs_from_when_it_is_sent(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[1])]}, scoring_timeout=0.3, max_queue_wait=5.0)
    busy = asyncio.create_task(router.score({"sleep": 0.25}))
    await asyncio.sleep(0.05)
    # 0.2 s in the queue and 0.2 s of scoring: within the timeout, which is for scoring.
    assert (await router.score({"sleep": 0.2, "echo": "in time"})).json()["echo"] == "in time"
    assert (await busy).status_code == 200
    busy = asyncio.create_task(router.score({"sleep": 0.1}))
    await asyncio.sleep(0.05)
    late = await router.score({"sleep": 0.6})
    assert "300 ms" in assert_json_error(late, 504)
    assert (await busy).status_code == 200
    # A new connection serves the next request once the replica is done with the late one.
    assert (await router.score({"echo": 3})).json()["echo"] == 3


async def test_502_when_the_replica_dies_on_a_queued_request(
    router: Router, replica: RuntimeProcess
) -> None:
    router.deploy({"a": [address(replica)]}, max_queue_wait=5.0)
    busy = asyncio.create_task(router.score({"sleep": 0.2}))
    await asyncio.sleep(0.05)
    assert_json_error(await router.score({"exit": True}), 502)
    assert (await busy).status_code == 200
    assert router.registry.deployment("svc", "a").pool.in_flight == 0


async def test_504_after_scoring_timeout(router: Router, replicas: list[RuntimeProcess]) -> None:
    router.deploy({"a": [address(replicas[1])]}, scoring_timeout=0.2)
    response = await router.score({"sleep": 0.6})
    assert "200 ms" in assert_json_error(response, 504)
    # The slot is free again for the next request once the replica finishes.
    await asyncio.sleep(0.5)
    assert router.registry.deployment("svc", "a").pool.in_flight == 0


async def test_502_when_replica_dies_mid_request(router: Router, replica: RuntimeProcess) -> None:
    router.deploy({"a": [address(replica)]})
    response = await router.score({"exit": True})
    assert_json_error(response, 502)
    assert router.registry.deployment("svc", "a").pool.in_flight == 0


async def test_undelivered_requests_go_to_another_replica(
    router: Router, replicas: list[RuntimeProcess], tmp_path: Path
) -> None:
    dead = f"unix:{tmp_path}/nobody-listens.sock"
    router.deploy({"a": [dead, address(replicas[0])]}, max_queue_wait=5.0)
    responses = await asyncio.gather(*(router.score({"echo": i}) for i in range(20)))
    assert [r.status_code for r in responses] == [200] * 20


async def test_413_for_a_body_over_the_limit(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[0])]})
    response = await router.client.post(
        "/api/v1/service/svc/score",
        content=b"x" * (MAX_BODY + 1),
        headers={"Authorization": f"Bearer {PRIMARY}"},
    )
    assert_json_error(response, 413)


async def test_413_answered_without_reading_the_rest(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[0])]})
    host, port = router.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/v1/service/svc/score HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + PRIMARY.encode() + b"\r\n"
        b"Content-Length: 10000000000\r\n\r\n" + b"x" * 1000
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    writer.close()


@ON_BOTH_PROTOCOLS
async def test_streams_chunked_responses(router: Router, tmp_path: Path) -> None:
    path = f"{tmp_path}/chunked.sock"
    peer = subprocess.Popen([sys.executable, str(SCRIPTS / "chunked_replica.py"), path])
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            await asyncio.sleep(0.05)
        router.deploy({"a": [f"unix:{path}"]})
        chunks = []
        async with router.client.stream(
            "POST",
            "/api/v1/service/svc/score",
            content=b"{}",
            headers={"Authorization": f"Bearer {PRIMARY}"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            assert response.headers["x-replica"] == "chunked"
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
        assert b"".join(chunks) == b"part0;part1;part2;part3;part4;end"
        assert len(chunks) > 1
        assert router.registry.deployment("svc", "a").pool.in_flight == 0
    finally:
        peer.terminate()
        peer.wait()


async def test_drained_replica_finishes_its_work_and_gets_no_more(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[0]), address(replicas[1])]}, max_queue_wait=5.0)
    deployment = router.registry.deployment("svc", "a")
    busy = asyncio.create_task(router.score({"sleep": 0.4}))
    await asyncio.sleep(0.1)
    busy_id = next(r.id for r in deployment.pool.replicas if r.in_flight)
    drained = router.registry.drain_replica("svc", "a", busy_id)
    assert not drained.done()
    others = await asyncio.gather(*(router.score({}) for _ in range(6)))
    busy_pid = (await busy).json()["pid"]
    await asyncio.wait_for(drained, 2)
    assert {r.json()["pid"] for r in others}.isdisjoint({busy_pid})
    router.registry.remove_replica("svc", "a", busy_id)
    assert (await router.score({})).status_code == 200


async def test_swagger_describes_the_router(router: Router, replicas: list[RuntimeProcess]) -> None:
    router.deploy({"a": [address(replicas[0])]})
    response = await router.client.get("/api/v1/service/svc/swagger.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    host = router.url.removeprefix("http://")
    if "swagger" in document:
        assert document["host"] == host
        assert document["basePath"] == "/api/v1/service/svc"
        assert "Bearer" in document["securityDefinitions"]
    else:
        assert document["servers"] == [{"url": f"{router.url}/api/v1/service/svc"}]
    assert "/score" in document["paths"]
    v3 = (await router.client.get("/api/v1/service/svc/swagger.json?version=3")).json()
    validate(v3)
    assert v3["servers"] == [{"url": f"{router.url}/api/v1/service/svc"}]
    assert v3["components"]["securitySchemes"]["Bearer"]["scheme"] == "bearer"


async def test_metrics_count_requests_by_version_and_code(
    router: Router, replicas: list[RuntimeProcess]
) -> None:
    router.deploy({"a": [address(replicas[0])]})
    await router.score({})
    await router.score({}, key="wrong")
    text = (await router.client.get("/metrics")).text
    assert 'mlfe_requests_total{code="200",service="svc",version="a"} 1.0' in text
    assert 'mlfe_unrouted_requests_total{code="401"} 1.0' in text
    assert 'mlfe_replicas{service="svc",state="ready",version="a"} 1.0' in text
    assert 'mlfe_request_duration_seconds_count{service="svc",version="a"} 1.0' in text
    assert 'mlfe_queue_wait_seconds_bucket{le="0.001",service="svc",version="a"} 1.0' in text


async def test_cors_preflight_reaches_the_replica_without_credentials(
    router: Router, cors_replica: RuntimeProcess
) -> None:
    router.deploy({"a": [address(cors_replica)]})
    preflight = await router.client.options(
        "/api/v1/service/svc/score",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    put = await router.client.put("/api/v1/service/svc/score", content=b"{}")
    assert_json_error(put, 405)


class FakeReceive:
    """An ASGI receive() that parks until `disconnect()`, like uvicorn's after the body."""

    def __init__(self, *, via_sleep: bool = False) -> None:
        self.event = asyncio.Event()
        self.via_sleep = via_sleep
        self.calls = 0
        self.finished = 0

    async def __call__(self) -> dict[str, str]:
        self.calls += 1
        try:
            if self.via_sleep:
                await asyncio.sleep(0)  # parks on no future at first: no hand-stepping
            await self.event.wait()
            return {"type": "http.disconnect"}
        finally:
            self.finished += 1

    def disconnect(self) -> None:
        self.event.set()


@pytest.mark.parametrize("via_sleep", [False, True])
async def test_client_watch_reports_a_disconnect_and_cleans_up(via_sleep: bool) -> None:
    receive = FakeReceive(via_sleep=via_sleep)
    gone: list[bool] = []
    watch = ClientWatch(receive, lambda: gone.append(True))
    await asyncio.sleep(0.01)
    assert not gone and not watch.client_gone
    receive.disconnect()
    await asyncio.sleep(0.01)
    assert gone == [True] and watch.client_gone
    watch.close()
    await asyncio.sleep(0.01)
    assert receive.finished == receive.calls


async def test_client_watch_closed_before_any_disconnect() -> None:
    receive = FakeReceive()
    gone: list[bool] = []
    watch = ClientWatch(receive, lambda: gone.append(True))
    watch.close()
    receive.disconnect()
    await asyncio.sleep(0.01)
    assert not gone and receive.finished == 1
    assert not receive.event._waiters  # type: ignore[attr-defined]


async def test_watch_client_uses_the_disconnect_signal_when_the_server_offers_it() -> None:
    signal = DisconnectSignal()
    gone: list[bool] = []
    receive = FakeReceive()
    watch = watch_client(
        {"extensions": {CLIENT_DISCONNECT: signal}}, receive, lambda: gone.append(True)
    )
    assert watch is signal and receive.calls == 0
    signal.fire()
    assert gone == [True] and watch.client_gone
    fallback = watch_client({"extensions": {}}, receive, lambda: None)
    assert isinstance(fallback, ClientWatch)
    fallback.close()


async def test_client_watch_of_a_client_already_gone() -> None:
    receive = FakeReceive()
    receive.disconnect()
    gone: list[bool] = []
    watch = ClientWatch(receive, lambda: gone.append(True))
    assert gone == [True] and watch.client_gone
    watch.close()
