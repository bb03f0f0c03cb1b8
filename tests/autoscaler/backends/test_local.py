"""The local backend with real scoring-runtime processes behind a real router.

Every test wires the backend to the router's registry (through `RegistryReplicaSink`),
sends real requests through the data plane, and checks on teardown that no process it
started is left behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from autoscaler.backends.base import DeploymentKey, DeploymentState, ReplicaTemplate
from autoscaler.backends.local import LocalBackend, ReplicaState
from autoscaler.loop import Autoscale, ControlLoop
from autoscaler.policy import ScalingConfig
from router.app import create_app
from router.metrics import RouterMetrics
from router.registry import Registry, ServiceSpec, VersionSpec
from router.replicas import RegistryReplicaSink
from router.server import uvicorn_server
from scoring_runtime.listen import bind_tcp
from tests.helpers.waiting import eventually

SCRIPTS = Path(__file__).parent.parent / "scripts"
SLEEPY = SCRIPTS / "sleepy_score.py"
FAILING = SCRIPTS / "failing_init.py"
KEY = DeploymentKey("svc", "v1")


@dataclass
class Setup:
    state_dir: Path
    registry: Registry
    backend: LocalBackend
    client: httpx.AsyncClient

    @property
    def pool_ready(self) -> int:
        return self.registry.deployment(KEY.service, KEY.version).pool.ready_replicas

    async def score(self, sleep: float = 0.0) -> httpx.Response:
        body = orjson.dumps({"sleep": sleep})
        return await self.client.post("/api/v1/service/svc/score", content=body)

    def serving_pids(self) -> set[int]:
        return {r.pid for r in self.backend.replicas(KEY) if r.serving and r.pid is not None}


def template(script: Path = SLEEPY, **settings: object) -> ReplicaTemplate:
    return ReplicaTemplate(entry_script=str(script), **settings)  # type: ignore[arg-type]


@pytest.fixture
async def setup(state_dir: Path) -> AsyncIterator[Setup]:
    registry = Registry(RouterMetrics())
    version = VersionSpec("v1", scoring_timeout=1.0, max_queue_wait=10.0)
    registry.set_service(
        ServiceSpec(name="svc", versions=(version,), default_version="v1", auth_mode="none")
    )
    backend = LocalBackend(
        state_dir,
        RegistryReplicaSink(registry),
        ready_timeout=30,
        stop_grace=2,
        restart_backoff=0.2,
        stable_after=60,
    )
    server = uvicorn_server(create_app(registry))
    sock = bind_tcp("127.0.0.1", 0)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield Setup(state_dir, registry, backend, client)
    await backend.close()
    server.should_exit = True
    await serving
    assert replica_processes(state_dir) == [], "replica processes outlived close()"


def replica_processes(state_dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line mentions `state_dir`."""
    found = []
    needle = os.fsencode(state_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() and not _zombie(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def gone(pid: int) -> bool:
    """No such process, or only a zombie nobody reaped yet (PID 1 in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return _zombie(pid)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    members = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    for member in members:
        try:
            fields = (member / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return False
    return True


async def test_load_step_adds_replicas_that_serve_and_drop_removes_them(setup: Setup) -> None:
    window = 2.0
    config = ScalingConfig(min_replicas=1, max_replicas=3, scale_down_window=window)
    loop = ControlLoop(setup.backend, RegistryReplicaSink(setup.registry))
    await loop.deploy(KEY, template(), Autoscale(config, refresh_period=0.25), warm=0)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.HEALTHY)
    assert setup.pool_ready == 1

    statuses: list[int] = []
    pids: set[int] = set()
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            response = await setup.score(sleep=0.2)
            statuses.append(response.status_code)
            if response.status_code == 200:
                pids.add(response.json()["pid"])

    clients = [asyncio.create_task(client()) for _ in range(3)]
    try:
        await eventually(lambda: setup.pool_ready == 3)
        first_replicas = set(setup.serving_pids())
        await eventually(lambda: pids >= first_replicas)  # the new replicas serve
    finally:
        stop.set()
        await asyncio.gather(*clients)
    load_stopped = time.monotonic()
    assert statuses and set(statuses) == {200}  # the step cost no request

    await eventually(lambda: setup.pool_ready == 1)
    assert time.monotonic() - load_stopped >= window * 0.9  # kept through the window
    await eventually(lambda: len(setup.backend.replicas(KEY)) == 1)
    assert all(gone(pid) for pid in first_replicas - setup.serving_pids())
    await loop.close()


async def test_warm_standby_is_promoted_at_once(setup: Setup) -> None:
    slow_init = template(environment={"INIT_SECONDS": "1.5"})
    await setup.backend.deploy(KEY, slow_init, replicas=1, warm=1)
    await eventually(lambda: setup.backend.status(KEY).warm == 1)
    status = setup.backend.status(KEY)
    assert (status.state, status.ready, status.warm) == (DeploymentState.HEALTHY, 1, 1)
    assert setup.pool_ready == 1  # the standby takes no traffic

    await setup.backend.scale(KEY, 2)
    # In rotation before any init() could have run: the standby was promoted.
    assert setup.pool_ready == 2
    status = setup.backend.status(KEY)
    assert (status.ready, status.warm, status.starting) == (2, 0, 1)

    first, second = await asyncio.gather(setup.score(sleep=0.3), setup.score(sleep=0.3))
    assert first.status_code == second.status_code == 200
    assert first.json()["pid"] != second.json()["pid"]
    # A replacement standby comes up behind it.
    await eventually(lambda: setup.backend.status(KEY).warm == 1)


async def test_killed_replica_is_replaced(setup: Setup) -> None:
    await setup.backend.deploy(KEY, template(), replicas=1, warm=0)
    await eventually(lambda: setup.pool_ready == 1)
    victim = next(r for r in setup.backend.replicas(KEY) if r.serving)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)

    await eventually(lambda: setup.pool_ready == 0)  # out of rotation as soon as it died
    status = setup.backend.status(KEY)
    assert status.state is DeploymentState.UNHEALTHY
    assert "was killed by SIGKILL" in status.message
    await eventually(lambda: setup.pool_ready == 1)
    assert victim.pid not in setup.serving_pids()
    assert setup.backend.status(KEY).state is DeploymentState.HEALTHY
    assert (await setup.score()).status_code == 200


async def test_failing_init_reports_failed_with_the_log_tail(setup: Setup) -> None:
    await setup.backend.deploy(KEY, template(FAILING), replicas=2, warm=1)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.FAILED)
    message = setup.backend.status(KEY).message
    assert "failed to start" in message
    assert "loading model from /nowhere/model.pkl" in message
    assert "FileNotFoundError: model.pkl is missing from the model directory" in message

    # No crash loop: what was started ends, and nothing new is started.
    await eventually(lambda: setup.backend.replicas(KEY) == ())
    logs = sorted(p.name for p in (setup.state_dir / "replicas/svc/v1").glob("*.log"))
    await asyncio.sleep(1.0)
    assert sorted(p.name for p in (setup.state_dir / "replicas/svc/v1").glob("*.log")) == logs
    assert len(logs) <= 3
    assert setup.backend.status(KEY).state is DeploymentState.FAILED

    # Deploying a fixed script starts over.
    await setup.backend.deploy(KEY, template(), replicas=1, warm=0)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.HEALTHY)


async def test_recycle_replaces_a_stuck_replica(setup: Setup) -> None:
    await setup.backend.deploy(KEY, template(), replicas=1, warm=1)
    await eventually(lambda: setup.backend.status(KEY).warm == 1)
    stuck = next(r for r in setup.backend.replicas(KEY) if r.serving)
    assert stuck.pid is not None

    timed_out = await setup.score(sleep=60)  # run() outlives the 1 s scoring timeout
    assert timed_out.status_code == 504
    assert setup.backend.recycle(KEY, stuck.id)
    assert setup.pool_ready == 1  # the standby took its place at once

    answer = await setup.score()
    assert answer.status_code == 200
    assert answer.json()["pid"] != stuck.pid
    await eventually(lambda: gone(stuck.pid) and group_gone(stuck.pid))  # type: ignore[arg-type]
    await eventually(lambda: setup.backend.status(KEY).warm == 1)
    assert not setup.backend.recycle(KEY, stuck.id)  # already gone


async def test_scale_down_drains_before_stopping(setup: Setup) -> None:
    await setup.backend.deploy(KEY, template(), replicas=2, warm=0)
    await eventually(lambda: setup.pool_ready == 2)
    busy = [asyncio.create_task(setup.score(sleep=0.6)) for _ in range(2)]
    pool = setup.registry.deployment("svc", "v1").pool
    await eventually(lambda: pool.in_flight == 2)

    await setup.backend.scale(KEY, 1)
    assert setup.pool_ready == 1  # the drained one gets no new work...
    states = {r.state for r in setup.backend.replicas(KEY)}
    assert ReplicaState.DRAINING in states
    assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200]  # ...but finishes
    await eventually(lambda: len(setup.backend.replicas(KEY)) == 1)


async def test_redeploy_rolls_over_without_failing_a_request(setup: Setup) -> None:
    await setup.backend.deploy(KEY, template(environment={"TAG": "old"}), replicas=2, warm=0)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.HEALTHY)
    old_pids = setup.serving_pids()

    answers: list[httpx.Response] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            answers.append(await setup.score(sleep=0.05))

    clients = [asyncio.create_task(client()) for _ in range(2)]
    try:
        await setup.backend.deploy(KEY, template(environment={"TAG": "new"}), replicas=2, warm=0)
        assert setup.backend.status(KEY).state is DeploymentState.TRANSITIONING
        await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.HEALTHY)
        await eventually(lambda: not old_pids & setup.serving_pids())
        await eventually(lambda: answers[-1].json()["tag"] == "new")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert {a.status_code for a in answers} == {200}
    await eventually(lambda: all(gone(pid) for pid in old_pids))


async def test_failed_redeploy_keeps_the_previous_version_serving(setup: Setup) -> None:
    await setup.backend.deploy(KEY, template(), replicas=1, warm=0)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.HEALTHY)
    await setup.backend.deploy(KEY, template(FAILING), replicas=1, warm=0)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.FAILED)
    assert setup.backend.status(KEY).ready == 1
    assert (await setup.score()).status_code == 200


async def test_a_crash_loop_is_reported_failed_and_backs_off(setup: Setup) -> None:
    setup.backend.crash_loop_after = 3
    setup.backend.restart_backoff = 0.05
    await setup.backend.deploy(KEY, template(environment={"CRASH_AFTER": "0.1"}), 1, warm=0)
    await eventually(lambda: setup.backend.status(KEY).state is DeploymentState.FAILED)
    message = setup.backend.status(KEY).message
    assert "exited with code 1" in message
    # Restarts slow down: 0.05, 0.1, 0.2, 0.4 ... seconds apart, so few in a second.
    started = len(list((setup.state_dir / "replicas/svc/v1").glob("*.log")))
    await asyncio.sleep(1.0)
    later = len(list((setup.state_dir / "replicas/svc/v1").glob("*.log")))
    assert later - started <= 3


async def test_close_stops_every_replica_and_its_group(setup: Setup, state_dir: Path) -> None:
    pidfile = state_dir / "grandchild.pid"
    env = {"GRANDCHILD_PIDFILE": str(pidfile)}
    await setup.backend.deploy(KEY, template(environment=env), replicas=2, warm=1)
    await eventually(lambda: setup.backend.status(KEY).warm == 1)
    pids = [r.pid for r in setup.backend.replicas(KEY) if r.pid is not None]
    grandchildren = [int(line) for line in pidfile.read_text().split()]
    assert len(pids) == 3 and len(grandchildren) == 3
    # Each replica leads a group of its own but stays in mlfe's session, so autogroup
    # scheduling keeps it in one scheduling group with the router.
    assert all(os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(0) for pid in pids)

    await setup.backend.close()
    for pid in pids:
        assert gone(pid) and group_gone(pid)
    for pid in grandchildren:
        assert gone(pid)
    assert replica_processes(state_dir) == []


async def test_replicas_die_with_a_killed_parent(state_dir: Path) -> None:
    """SIGKILL of mlfe itself: the kernel's parent-death signal takes the replicas along."""
    program = textwrap.dedent(
        f"""
        import asyncio, sys
        from autoscaler.backends.base import DeploymentKey, ReplicaTemplate
        from autoscaler.backends.local import LocalBackend

        class Sink:
            def replica_ready(self, key, replica_id, address):
                print(address, flush=True)
            def replica_draining(self, key, replica_id):
                return asyncio.sleep(0)
            def replica_removed(self, key, replica_id):
                pass

        async def main():
            backend = LocalBackend({str(state_dir)!r}, Sink())
            template = ReplicaTemplate(entry_script={str(SLEEPY)!r})
            await backend.deploy(DeploymentKey("svc", "v1"), template, 2, 0)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        for _ in range(2):
            assert parent.stdout.readline().startswith(b"unix:")
        children = [pid for pid in replica_processes(state_dir) if pid != parent.pid]
        assert len(children) == 2
    finally:
        parent.kill()
        parent.wait()
    await eventually(lambda: all(gone(pid) for pid in children), timeout=10)


def test_state_dir_too_long_for_sockets_is_refused(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / ("x" * 120), RegistryReplicaSink(Registry(RouterMetrics())))
    with pytest.raises(ValueError, match="too long for Unix socket paths"):
        asyncio.run(backend.deploy(KEY, template(), replicas=1, warm=0))
