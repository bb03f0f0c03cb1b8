"""Replicas as child processes of mlfe: the scoring runtime on Unix sockets, one machine.

Each replica is `python -m scoring_runtime ... --uds STATE/replicas/<service>/<version>/
<id>.sock`, its stdout and stderr appended to `<id>.log` beside the socket. A replica goes
Starting -> Ready (its `GET /` answers; the runtime binds only after init()) -> Draining
-> Stopped, or Failed when it exits on its own. Ready replicas are either in rotation
(reported to the `ReplicaSink`) or warm standbys: init() done, no traffic, promoted the
moment the count goes up, which is how a new replica serves within milliseconds of a
decision even when init() takes seconds.

One asyncio task per replica runs its whole life (spawn, readiness, serving, stop), and
`_reconcile()` decides, synchronously, which replicas to promote, stop or start whenever
anything changes. Children get their own process group and a parent-death signal, so
neither `close()` nor a SIGKILL of mlfe leaves an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentState,
    DeploymentStatus,
    ReplicaLog,
    ReplicaSink,
    ReplicaTemplate,
    notify_sink,
)

logger = logging.getLogger("mlfe.autoscaler.local")

# The runtime's exit code when loading the entry script or running init() failed.
INIT_FAILED = 3
LOG_TAIL_LINES = 20
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
PR_SET_PDEATHSIG = 1
# Readiness probes start fast (init() may be quick) and settle at this interval.
PROBE_FIRST_DELAY = 0.01
PROBE_MAX_DELAY = 0.1
PROBE_TIMEOUT = 2.0
# In-flight requests of a draining replica get its scoring timeout plus this to finish.
DRAIN_MARGIN = 1.0
# mlfe's own settings (the admin key among them) are not the replicas' business.
PRIVATE_ENV_PREFIX = "MLFE_"
_REPLICA_NUMBER = re.compile(r"\d+")

Outcome = Literal["ready", "exited", "stop", "timeout"]


class ReplicaState(enum.Enum):
    STARTING = "Starting"
    READY = "Ready"
    DRAINING = "Draining"
    STOPPED = "Stopped"
    FAILED = "Failed"


@dataclass(frozen=True)
class ReplicaInfo:
    """A snapshot of one replica, for status pages and tests."""

    id: str
    state: ReplicaState
    serving: bool  # in rotation; False for a warm standby
    pid: int | None
    address: str
    log_path: Path
    generation: int


@dataclass(eq=False)
class _Replica:
    id: str
    generation: int
    template: ReplicaTemplate
    socket_path: Path
    log_path: Path
    started_at: float
    state: ReplicaState = ReplicaState.STARTING
    serving: bool = False
    ready_at: float | None = None
    serving_since: float = math.inf
    process: asyncio.subprocess.Process | None = None
    log_offset: int = 0  # where this process's output starts in the (appended) log
    stopping: bool = False  # a stop was asked for: its exit is expected
    drained: Awaitable[None] | None = None
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by close(): stop waiting for in-flight requests, mlfe is going away.
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    def info(self) -> ReplicaInfo:
        pid = self.process.pid if self.process is not None else None
        return ReplicaInfo(
            self.id, self.state, self.serving, pid, self.address, self.log_path, self.generation
        )


@dataclass(eq=False)
class _Deployment:
    key: DeploymentKey
    directory: Path
    template: ReplicaTemplate
    desired: int
    warm: int
    generation: int = 1
    replicas: dict[str, _Replica] = field(default_factory=dict)
    next_id: int = 1
    generation_ready: bool = False  # a replica of this generation has answered GET /
    settled: bool = False  # this generation has had `desired` replicas in rotation
    failed: str | None = None  # why this generation cannot start; final until redeployed
    failures: int = 0  # unexpected exits in a row, for the restart backoff
    last_failure_at: float = -math.inf
    last_crash: str = ""
    next_spawn_at: float = -math.inf
    wakeup: asyncio.TimerHandle | None = None
    deleted: bool = False


class LocalBackend:
    """Runs each deployment's replicas as scoring-runtime processes on this machine."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        sink: ReplicaSink,
        *,
        python: str = sys.executable,
        ready_timeout: float = 600.0,
        stop_grace: float = 10.0,
        restart_backoff: float = 0.5,
        max_restart_backoff: float = 30.0,
        stable_after: float = 60.0,
        crash_loop_after: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.sink = sink
        self.python = python
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace  # SIGTERM to SIGKILL
        self.restart_backoff = restart_backoff
        self.max_restart_backoff = max_restart_backoff
        self.stable_after = stable_after  # a minute without crashes resets the backoff
        self.crash_loop_after = crash_loop_after
        self._clock = clock
        self._deployments: dict[DeploymentKey, _Deployment] = {}
        self._closing = False

    # -- the ReplicaBackend interface ----------------------------------------------------

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int, warm: int
    ) -> None:
        if template.entry_script is None:
            raise ValueError(f"{key}: the local backend runs entry scripts, not replica urls")
        if replicas < 0 or warm < 0:
            raise ValueError(f"{key}: replica counts must not be negative")
        if self._closing:
            raise RuntimeError("the local backend is closed")
        dep = self._deployments.get(key)
        if dep is None:
            dep = _Deployment(key, self._directory(key), template, replicas, warm)
            dep.directory.mkdir(parents=True, exist_ok=True)
            # Sockets left by an mlfe that was killed would make the new replicas fail.
            for stale in dep.directory.glob("*.sock"):
                stale.unlink(missing_ok=True)
            self._deployments[key] = dep
        else:
            # A new generation: its replicas take over from the old ones as they get ready.
            dep.generation += 1
            dep.template, dep.desired, dep.warm = template, replicas, warm
            dep.generation_ready = dep.settled = False
            dep.failed = None
            dep.failures = 0
            dep.last_crash = ""
            dep.next_spawn_at = -math.inf
        logger.info(
            "event=deploy deployment=%s generation=%d replicas=%d warm=%d",
            key,
            dep.generation,
            replicas,
            warm,
        )
        self._reconcile(dep)

    async def scale(self, key: DeploymentKey, replicas: int) -> None:
        if replicas < 0:
            raise ValueError(f"{key}: replica count must not be negative, got {replicas}")
        dep = self._get(key)
        dep.desired = replicas
        self._reconcile(dep)

    async def delete(self, key: DeploymentKey) -> None:
        dep = self._get(key)
        del self._deployments[key]
        dep.deleted = True
        if dep.wakeup is not None:
            dep.wakeup.cancel()
        tasks = [r.task for r in dep.replicas.values() if r.task is not None]
        for replica in list(dep.replicas.values()):
            self._stop(dep, replica, drain=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        shutil.rmtree(dep.directory, ignore_errors=True)
        logger.info("event=deleted deployment=%s", key)

    def status(self, key: DeploymentKey) -> DeploymentStatus:
        dep = self._get(key)
        live = [r for r in dep.replicas.values() if not r.stopping]
        ready = sum(1 for r in dep.replicas.values() if r.serving)
        current = [r for r in live if r.generation == dep.generation]
        starting = sum(1 for r in current if r.state is ReplicaState.STARTING)
        warm = sum(1 for r in current if r.state is ReplicaState.READY and not r.serving)
        state, message = DeploymentState.HEALTHY, ""
        if dep.failed is not None:
            state, message = DeploymentState.FAILED, dep.failed
        elif self._crash_looping(dep):
            state, message = DeploymentState.FAILED, dep.last_crash
        elif not dep.settled:
            state = DeploymentState.TRANSITIONING
        elif dep.desired > 0 and ready == 0:
            state, message = DeploymentState.UNHEALTHY, dep.last_crash or "no replica is ready"
        return DeploymentStatus(state, ready, starting, warm, dep.desired, message)

    def ready_count(self, key: DeploymentKey) -> int:
        return sum(1 for r in self._get(key).replicas.values() if r.serving)

    async def close(self) -> None:
        """Stop every replica at once (SIGTERM, SIGKILL after the grace) and wait for them."""
        self._closing = True
        tasks: list[asyncio.Task[None]] = []
        for dep in self._deployments.values():
            if dep.wakeup is not None:
                dep.wakeup.cancel()
            for replica in list(dep.replicas.values()):
                if replica.task is not None:
                    tasks.append(replica.task)
                replica.hurry.set()
                self._stop(dep, replica, drain=False)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._deployments.clear()

    # -- beyond the interface --------------------------------------------------------------

    def recycle(self, key: DeploymentKey, replica_id: str) -> bool:
        """Replace a replica that is stuck (a request on it outlived the scoring timeout).

        The router knows which requests timed out; the backend does not see them. A warm
        standby takes its place at once and a replacement starts. False if the replica is
        unknown or already stopping.
        """
        dep = self._deployments.get(key)
        replica = dep.replicas.get(replica_id) if dep else None
        if dep is None or replica is None or replica.stopping:
            return False
        logger.info("event=recycle deployment=%s replica=%s", key, replica_id)
        self._stop(dep, replica, drain=True)
        self._reconcile(dep)
        return True

    def replicas(self, key: DeploymentKey) -> tuple[ReplicaInfo, ...]:
        """Every replica not yet gone, stopping ones included."""
        return tuple(r.info() for r in self._get(key).replicas.values())

    async def logs(self, key: DeploymentKey, tail: int = 100) -> tuple[ReplicaLog, ...]:
        """The last `tail` lines of each replica's log, in the order they were started.

        A replica's `<id>.log` stays beside its socket after it stopped, until the version
        is deleted, so a failed init()'s traceback stays readable (state Stopped or Failed).
        """
        dep = self._deployments.get(key)
        running = {r.id: r.info() for r in dep.replicas.values()} if dep else {}
        directory = self.state_dir / "replicas" / key.service / key.version
        return await asyncio.to_thread(_read_logs, directory, running, tail)

    # -- deciding --------------------------------------------------------------------------

    def _reconcile(self, dep: _Deployment) -> None:
        """Bring the replicas in line with the desired and warm counts; never awaits."""
        if dep.deleted or self._closing:
            return
        live = [r for r in dep.replicas.values() if not r.stopping]
        current = [r for r in live if r.generation == dep.generation]
        old = [r for r in live if r.generation != dep.generation]
        serving = [r for r in current if r.serving]
        warm = sorted(
            (r for r in current if r.state is ReplicaState.READY and not r.serving),
            key=_ready_at,
        )
        starting = [r for r in current if r.state is ReplicaState.STARTING]

        if dep.failed is not None:
            # This generation cannot start; the previous one, if any, keeps serving.
            for replica in starting + warm:
                self._stop(dep, replica, drain=False)
            return

        while len(serving) < dep.desired and warm:
            replica = warm.pop(0)
            self._promote(dep, replica)
            serving.append(replica)
        if len(serving) >= dep.desired:
            dep.settled = True

        # The previous generation leaves as this one takes over, never sooner.
        old_serving = sorted((r for r in old if r.serving), key=_serving_since)
        keep_old = max(0, dep.desired - len(serving))
        for replica in old_serving[: max(0, len(old_serving) - keep_old)]:
            self._stop(dep, replica, drain=True)
        for replica in old:
            if not replica.serving:
                self._stop(dep, replica, drain=False)

        # Too many in rotation: drain the youngest (the oldest have proven themselves).
        serving.sort(key=_serving_since)
        while len(serving) > dep.desired:
            self._stop(dep, serving.pop(), drain=True)

        # Starting and standby replicas cover the rest of the desired count plus the warm
        # pool. Beyond that, stop the youngest, those still starting first.
        spare_wanted = dep.desired - len(serving) + dep.warm
        spare = sorted(starting, key=_started_at, reverse=True) + warm[::-1]
        for replica in spare[: max(0, len(spare) - spare_wanted)]:
            self._stop(dep, replica, drain=False)

        missing = spare_wanted - len(spare)
        if missing <= 0:
            return
        delay = dep.next_spawn_at - self._clock()
        if delay > 0:
            if dep.wakeup is None:
                dep.wakeup = asyncio.get_running_loop().call_later(delay, self._wake, dep)
            return
        for _ in range(missing):
            self._start(dep)

    def _wake(self, dep: _Deployment) -> None:
        dep.wakeup = None
        self._reconcile(dep)

    def _crash_looping(self, dep: _Deployment) -> bool:
        recent = self._clock() - dep.last_failure_at < self.stable_after
        return recent and dep.failures >= self.crash_loop_after

    # -- acting ----------------------------------------------------------------------------

    def _start(self, dep: _Deployment) -> None:
        replica_id = f"r{dep.next_id}"
        dep.next_id += 1
        replica = _Replica(
            id=replica_id,
            generation=dep.generation,
            template=dep.template,
            socket_path=dep.directory / f"{replica_id}.sock",
            log_path=dep.directory / f"{replica_id}.log",
            started_at=self._clock(),
        )
        dep.replicas[replica_id] = replica
        replica.task = asyncio.create_task(
            self._run_replica(dep, replica), name=f"replica {dep.key} {replica_id}"
        )

    def _promote(self, dep: _Deployment, replica: _Replica) -> None:
        replica.serving = True
        replica.serving_since = self._clock()
        logger.info("event=replica-serving deployment=%s replica=%s", dep.key, replica.id)
        notify_sink(self.sink.replica_ready, dep.key, replica.id, replica.address)

    def _stop(self, dep: _Deployment, replica: _Replica, *, drain: bool) -> None:
        """Ask a replica to stop; one in rotation first stops getting new work."""
        if replica.stopping:
            return
        replica.stopping = True
        if replica.serving and drain:
            replica.state = ReplicaState.DRAINING
            replica.drained = notify_sink(self.sink.replica_draining, dep.key, replica.id)
        replica.stop_requested.set()

    def _removed(self, dep: _Deployment, replica: _Replica) -> None:
        if replica.serving:
            replica.serving = False
            notify_sink(self.sink.replica_removed, dep.key, replica.id)

    # -- one replica's life ----------------------------------------------------------------

    async def _run_replica(self, dep: _Deployment, replica: _Replica) -> None:
        try:
            await self._live(dep, replica)
        except Exception:
            logger.exception("event=replica-error deployment=%s replica=%s", dep.key, replica.id)
        finally:
            # Also reached when the task is cancelled (the loop is going away): no orphans.
            if replica.process is not None:
                _signal_group(replica.process.pid, signal.SIGKILL)
            self._removed(dep, replica)
            if replica.state is not ReplicaState.FAILED:
                replica.state = ReplicaState.STOPPED
            replica.socket_path.unlink(missing_ok=True)
            dep.replicas.pop(replica.id, None)
            self._reconcile(dep)

    async def _live(self, dep: _Deployment, replica: _Replica) -> None:
        try:
            process = await self._spawn(replica)
        except OSError as exc:
            replica.state = ReplicaState.FAILED
            self._fail(dep, replica, f"replica {replica.id} could not be started: {exc}")
            return
        replica.process = process
        logger.info(
            "event=replica-starting deployment=%s replica=%s pid=%d",
            dep.key,
            replica.id,
            process.pid,
        )
        exited = asyncio.ensure_future(process.wait())
        stop = asyncio.ensure_future(replica.stop_requested.wait())
        try:
            if replica.stop_requested.is_set():
                outcome = "stop"
            else:
                outcome = await self._wait_ready(replica, exited, stop)
            if outcome == "ready":
                replica.state = ReplicaState.READY
                replica.ready_at = self._clock()
                if replica.generation == dep.generation:
                    dep.generation_ready = True
                logger.info("event=replica-ready deployment=%s replica=%s", dep.key, replica.id)
                self._reconcile(dep)
                await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            elif outcome == "timeout":
                _signal_group(process.pid, signal.SIGKILL)
                await exited
                replica.state = ReplicaState.FAILED
                message = (
                    f"replica {replica.id} did not answer GET / within "
                    f"{self.ready_timeout:g} s{self._tail_suffix(replica)}"
                )
                self._crashed(dep, replica, message, final=not dep.generation_ready)
                return
            if replica.stopping:
                await self._stop_process(dep, replica, exited)
                return
            code = exited.result()
            replica.state = ReplicaState.FAILED
            _signal_group(process.pid, signal.SIGKILL)  # whatever it left in its group
            init_failed = code == INIT_FAILED and replica.ready_at is None
            if init_failed:
                what = "failed to start: loading the entry script or init() raised (exit code 3)"
            else:
                what = _exit_reason(code)
            message = f"replica {replica.id} {what}{self._tail_suffix(replica)}"
            self._crashed(dep, replica, message, final=init_failed and not dep.generation_ready)
        finally:
            stop.cancel()
            if not exited.done():
                exited.cancel()

    async def _spawn(self, replica: _Replica) -> asyncio.subprocess.Process:
        template = replica.template
        assert template.entry_script is not None
        entry_script = os.path.abspath(template.entry_script)
        command = [self.python, "-m", "scoring_runtime", "--entry-script", entry_script]
        if template.source_dir is not None:
            command += ["--source-dir", os.path.abspath(template.source_dir)]
        if template.model_dir is not None:
            command += ["--model-dir", os.path.abspath(template.model_dir)]
        for model in template.models:
            command += ["--model", model.as_flag()]
        command += [
            "--uds",
            str(replica.socket_path),
            "--max-concurrent",
            str(template.slots),
            "--scoring-timeout-ms",
            str(template.scoring_timeout_ms),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_ENV_PREFIX)}
        env.update(template.environment)
        env["MLFE_MAX_CONCURRENT"] = str(template.slots)
        env["PYTHONUNBUFFERED"] = "1"  # a crash's last lines must reach the log
        # Azure runs the entry script from its source directory.
        cwd = template.source_dir or os.path.dirname(entry_script)
        replica.socket_path.unlink(missing_ok=True)
        with open(replica.log_path, "ab") as log:
            replica.log_offset = log.tell()
            return await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=_replica_preexec(os.getpid()),
            )

    async def _wait_ready(
        self, replica: _Replica, exited: asyncio.Future[Any], stop: asyncio.Future[Any]
    ) -> Outcome:
        """How waiting for readiness ended: GET / answered 200, or the process exited, or a
        stop was asked for, or the ready timeout passed."""
        deadline = self._clock() + self.ready_timeout
        delay = PROBE_FIRST_DELAY
        while True:
            if await probe(replica.socket_path):
                return "ready"
            remaining = deadline - self._clock()
            if remaining <= 0:
                return "timeout"
            await asyncio.wait(  # a sleep that ends early when the process exits
                {exited, stop}, timeout=min(delay, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            if stop.done():
                return "stop"
            if exited.done():
                return "exited"
            delay = min(delay * 2, PROBE_MAX_DELAY)

    async def _stop_process(
        self, dep: _Deployment, replica: _Replica, exited: asyncio.Future[int]
    ) -> None:
        """Drain (bounded by the scoring timeout), SIGTERM, SIGKILL after the grace."""
        assert replica.process is not None
        if replica.drained is not None:
            bound = replica.template.scoring_timeout + DRAIN_MARGIN
            logger.info(
                "event=replica-draining deployment=%s replica=%s bound=%.1fs",
                dep.key,
                replica.id,
                bound,
            )
            drained = asyncio.ensure_future(replica.drained)
            hurry = asyncio.ensure_future(replica.hurry.wait())
            await asyncio.wait({drained, hurry}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            if not drained.done():
                logger.warning("event=drain-timeout deployment=%s replica=%s", dep.key, replica.id)
        replica.state = ReplicaState.DRAINING
        pid = replica.process.pid
        _signal_group(pid, signal.SIGTERM)
        done, _ = await asyncio.wait({exited}, timeout=self.stop_grace)
        if not done:
            logger.warning("event=replica-kill deployment=%s replica=%s", dep.key, replica.id)
            _signal_group(pid, signal.SIGKILL)
            await exited
        _signal_group(pid, signal.SIGKILL)  # anything it started in its group
        self._removed(dep, replica)
        replica.state = ReplicaState.STOPPED
        logger.info("event=replica-stopped deployment=%s replica=%s", dep.key, replica.id)

    def _crashed(self, dep: _Deployment, replica: _Replica, message: str, *, final: bool) -> None:
        """A replica ended without being asked to: out of rotation now, replaced later."""
        self._removed(dep, replica)
        logger.warning(
            "event=replica-exited deployment=%s replica=%s message=%r",
            dep.key,
            replica.id,
            message.partition("\n")[0],
        )
        if replica.generation != dep.generation or dep.deleted or self._closing:
            return
        if final:
            self._fail(dep, replica, message)
            return
        now = self._clock()
        if now - dep.last_failure_at >= self.stable_after:
            dep.failures = 0
        dep.failures += 1
        dep.last_failure_at = now
        dep.last_crash = message
        delay = min(self.restart_backoff * 2 ** (dep.failures - 1), self.max_restart_backoff)
        dep.next_spawn_at = now + delay
        logger.info(
            "event=restart-backoff deployment=%s failures=%d delay=%.1fs",
            dep.key,
            dep.failures,
            delay,
        )

    def _fail(self, dep: _Deployment, replica: _Replica, message: str) -> None:
        """This generation cannot run: say why and start nothing more until redeployed."""
        if replica.generation != dep.generation or dep.failed is not None:
            return
        dep.failed = message
        logger.error(
            "event=deployment-failed deployment=%s message=%r",
            dep.key,
            message.partition("\n")[0],
        )

    # -- helpers ---------------------------------------------------------------------------

    def _get(self, key: DeploymentKey) -> _Deployment:
        try:
            return self._deployments[key]
        except KeyError:
            raise LookupError(f"no local deployment {key}") from None

    def _directory(self, key: DeploymentKey) -> Path:
        directory = self.state_dir / "replicas" / key.service / key.version
        longest = directory / "r999999.sock"
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"state directory {self.state_dir} is too long for Unix socket paths "
                f"(a replica socket of {key} would be {len(os.fsencode(longest))} bytes, "
                f"the limit is {MAX_SOCKET_PATH}); choose a shorter one"
            )
        return directory

    def _tail_suffix(self, replica: _Replica) -> str:
        tail = log_tail(replica.log_path, replica.log_offset)
        return f"; last lines of {replica.log_path}:\n{tail}" if tail else ""


async def probe(socket_path: Path, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the runtime on `socket_path` answers `GET /` with 200."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), timeout
        )
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.split(None, 2)
        return len(parts) >= 2 and parts[1] == b"200"
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines written to `path` after `offset`."""
    chunk = 64 * 1024
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            start = max(offset, size - chunk)
            log.seek(start)
            data = log.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])


def _read_logs(
    directory: Path, running: dict[str, ReplicaInfo], tail: int
) -> tuple[ReplicaLog, ...]:
    paths = {path.stem: path for path in directory.glob("*.log")}
    for replica in running.values():
        paths.setdefault(replica.id, replica.log_path)
    found = []
    for replica_id in sorted(paths, key=_replica_order):
        info = running.get(replica_id)
        state = info.state.value if info is not None else ReplicaState.STOPPED.value
        if info is not None and info.state is ReplicaState.READY and not info.serving:
            state = "Warm"  # a standby: ready, out of rotation
        found.append(ReplicaLog(replica_id, state, log_tail(paths[replica_id], 0, tail)))
    return tuple(found)


def _replica_order(replica_id: str) -> tuple[int, str]:
    digits = _REPLICA_NUMBER.search(replica_id)
    return (int(digits.group()) if digits else 0, replica_id)


def _exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _ready_at(replica: _Replica) -> float:
    return replica.ready_at if replica.ready_at is not None else math.inf


def _serving_since(replica: _Replica) -> float:
    return replica.serving_since


def _started_at(replica: _Replica) -> float:
    return replica.started_at


def _signal_group(pid: int, signum: int) -> None:
    """Signal a replica's whole process group (its pgid is its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _replica_preexec(parent: int) -> Callable[[], None]:
    """A preexec_fn giving the replica its own process group, to be signalled as a whole,
    and on Linux making the kernel SIGKILL it when mlfe dies, even by SIGKILL.

    The group, not a new session: with the kernel's autogroup scheduling (on by default in
    most distributions) every session is its own scheduling group, and a replica in a
    group of its own shared one core with the router in up to 70% of the samples on a
    two-core machine, costing up to a fifth of the requests per second; in mlfe's session
    they share one far less often (benchmarks/README.md, "Where the replicas run"). The
    death signal follows the thread that forked: asyncio forks on the thread running the
    event loop, which lives as long as mlfe does.
    """
    # Loaded here, before fork: the child must not dlopen between fork and exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def preexec() -> None:
        os.setpgid(0, 0)
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            # mlfe died between fork and prctl: nobody would deliver the signal.
            os._exit(1)

    return preexec
