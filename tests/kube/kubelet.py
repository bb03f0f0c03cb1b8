"""The fake kubelet: runs each pod's containers as real local processes.

Pod networking is emulated with one loopback address per pod (`<subnet>.N`, the pod IP);
a container that binds the wildcard with `--host 0.0.0.0` (in a pod, the pod's own
interfaces), or a `python -m scoring_runtime` one that names no address, gets
`--host <podIP>` appended so it listens there, and `python` is this interpreter.
Volumes and paths are mapped as `volumes.py` says. Each container runs in its own process group, which is killed when the pod is
deleted (SIGTERM, then SIGKILL after the grace period) and when the cluster stops.

What a client observes follows the kubelet: the pod goes Pending (ContainerCreating)
→ Running; Ready and ContainersReady follow the readiness probe (HTTP GET on the pod IP)
or the container start when there is none; a container that exits is restarted per
restartPolicy, the first time at once and then with a doubling back-off, during which
it is `waiting` with reason CrashLoopBackOff and `lastState.terminated` holds the exit;
a failing liveness probe kills and restarts it; logs go to a file per run, served by
`pods/{name}/log` (with `previous=true` for the run before).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kube import resources as kinds
from tests.kube.controllers import Controller
from tests.kube.events import EventRecorder
from tests.kube.faults import CRASH, Fault, Faults
from tests.kube.meta import clone, now_time, random_hex
from tests.kube.probes import ProbeFailed, run_probe
from tests.kube.registry import Registry
from tests.kube.status import ApiError, bad_request
from tests.kube.volumes import (
    ContainerConfigError,
    MountError,
    container_mounts,
    expand,
    mount_volumes,
    resolve_env,
    rewrite_path,
)

logger = logging.getLogger("tests.kube")

_PYTHON_NAMES = {
    "python",
    "python3",
    "/usr/bin/python",
    "/usr/bin/python3",
    "/usr/local/bin/python",
    "/usr/local/bin/python3",
}
_PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")
_CRASH_STUB = (
    "import sys; sys.stderr.write('mlfe test cluster: injected crash\\n'); sys.exit({code})"
)
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _host_flag(argv: Sequence[str]) -> str | None:
    """The address a command line binds with `--host` (the last one wins), if any."""
    host: str | None = None
    for index, part in enumerate(argv):
        if part == "--host" and index + 1 < len(argv):
            host = argv[index + 1]
        elif part.startswith("--host="):
            host = part.removeprefix("--host=")
    return host


# A container that ran this long without exiting has its back-off reset (kubelet: 10 min).
_BACKOFF_RESET_FACTOR = 2
_RETRY_S = 1.0


class _ImageNotFound(Exception):
    """No command and an image whose entrypoint the cluster was not told (ErrImagePull)."""


@dataclass(frozen=True)
class KubeletConfig:
    node_name: str
    work_dir: Path
    pod_subnet: str  # e.g. "127.41.7." — pods get .1 to .254
    backoff_base_s: float
    backoff_cap_s: float
    images: Mapping[str, tuple[str, ...]]
    volume_claims: Mapping[str, str]
    stop_grace_cap_s: float


class PodNetwork:
    """Hands out loopback addresses, round-robin so a freed IP is not reused at once."""

    def __init__(self, subnet: str) -> None:
        self.subnet = subnet
        self._in_use: set[str] = set()
        self._next = 1

    def allocate(self, ports: Sequence[int]) -> str:
        unused = []
        for _ in range(254):
            address = f"{self.subnet}{self._next}"
            self._next = self._next % 254 + 1
            if address in self._in_use:
                continue
            if all(_port_free(address, port) for port in ports):
                self._in_use.add(address)
                return address
            unused.append(address)
        if not unused:
            raise RuntimeError(f"no free pod address left in {self.subnet}0/24")
        # Something outside the cluster holds the port on every address (a wildcard
        # listener): hand one out anyway; the container's bind error will say why.
        logger.warning("event=pod_ports_taken subnet=%s0/24 ports=%s", self.subnet, list(ports))
        self._in_use.add(unused[0])
        return unused[0]

    def release(self, address: str) -> None:
        self._in_use.discard(address)


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


@dataclass
class ContainerRun:
    """The kubelet's view of one container: its state, restarts, logs and readiness."""

    spec: dict[str, Any]
    init: bool = False
    restart_count: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    ever_started: bool = False
    container_id: str = ""
    process: asyncio.subprocess.Process | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> dict[str, Any]:
        image = self.spec.get("image", "")
        status: dict[str, Any] = {
            "name": self.name,
            "state": clone(self.state),
            "lastState": clone(self.last_state),
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": image,
            "imageID": f"docker.io/library/{image}@sha256:{'0' * 64}" if self.ever_started else "",
            "started": self.started,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


class PodWorker:
    """Runs one pod from scheduling to removal."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.pod = clone(pod)
        self.spec = self.pod["spec"]
        self.dir = kubelet.config.work_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.ip: str | None = None
        self.start_time: str | None = None
        self.mounts: dict[str, Path] = {}
        self.init_done = not self.spec.get("initContainers")
        self.init_runs = [
            ContainerRun(clone(c), init=True) for c in self.spec.get("initContainers") or []
        ]
        self.runs = [ContainerRun(clone(c)) for c in self.spec["containers"]]
        self.phase = "Pending"
        self.stopping = asyncio.Event()
        self.grace_s = float(self.spec.get("terminationGracePeriodSeconds", 30))
        self.task: asyncio.Task[None] | None = None
        self._condition_times: dict[str, tuple[str, str]] = {}
        self._last_event: dict[str, float] = {}
        self._background: set[asyncio.Future[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self, grace_s: float) -> None:
        self.grace_s = min(self.grace_s, grace_s)
        self.stopping.set()

    async def wait_stop(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the pod is being stopped."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    async def run(self) -> None:
        try:
            await self._run()
        except Exception:
            logger.exception("event=pod_worker_failed pod=%s/%s", self.namespace, self.name)
        finally:
            await self._terminate_all()
            if self.ip is not None:
                self.kubelet.network.release(self.ip)
            pod = self.kubelet.store.peek(kinds.PODS, self.namespace, self.name)
            if (
                pod is not None
                and pod["metadata"]["uid"] == self.uid
                and pod["metadata"].get("deletionTimestamp")
            ):
                self.kubelet.registry.remove(kinds.PODS, self.namespace, self.name)
                logger.info("event=pod_removed pod=%s/%s", self.namespace, self.name)
            if self.kubelet.store.peek(kinds.PODS, self.namespace, self.name) is None:
                shutil.rmtree(self.dir, ignore_errors=True)

    async def _run(self) -> None:
        ports = [
            int(p["containerPort"])
            for c in self.spec["containers"]
            for p in c.get("ports") or []
            if "containerPort" in p
        ]
        self.ip = self.kubelet.network.allocate(ports)
        self.start_time = now_time()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.publish()
        while True:
            try:
                self.mounts = mount_volumes(
                    self.pod, self.kubelet.store, self.dir, self.kubelet.config.volume_claims
                )
                break
            except MountError as error:
                self.event("Warning", "FailedMount", str(error))
                if await self.wait_stop(_RETRY_S):
                    return
        for run in self.init_runs:
            if not await self._run_init(run):
                return
        self.init_done = True
        self.publish()
        await asyncio.gather(*(self._keep_running(run) for run in self.runs))
        if not self.stopping.is_set():
            codes = [run.state.get("terminated", {}).get("exitCode", 1) for run in self.runs]
            self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            self.publish()
            await self.stopping.wait()

    async def _run_init(self, run: ContainerRun) -> bool:
        backoff = self.kubelet.config.backoff_base_s
        while not self.stopping.is_set():
            code = await self._run_once(run)
            if code is None:
                return False
            if code == 0:
                return True
            if self.spec.get("restartPolicy") == "Never":
                self.phase = "Failed"
                self.publish()
                return False
            if await self._back_off(run, backoff):
                return False
            backoff = min(backoff * 2, self.kubelet.config.backoff_cap_s)
        return False

    async def _keep_running(self, run: ContainerRun) -> None:
        config = self.kubelet.config
        backoff = config.backoff_base_s
        first_failure = True
        while not self.stopping.is_set():
            started = time.monotonic()
            code = await self._run_once(run)
            if code is None or self.stopping.is_set():
                return
            policy = self.spec.get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return
            if time.monotonic() - started > config.backoff_cap_s * _BACKOFF_RESET_FACTOR:
                backoff, first_failure = config.backoff_base_s, True
            if first_failure:
                # The kubelet restarts a container the first time without waiting.
                first_failure = False
                run.last_state = {"terminated": run.state.get("terminated", {})}
                run.restart_count += 1
                continue
            if await self._back_off(run, backoff):
                return
            backoff = min(backoff * 2, config.backoff_cap_s)

    async def _back_off(self, run: ContainerRun, backoff: float) -> bool:
        run.last_state = {"terminated": run.state.get("terminated", {})}
        run.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {backoff:g}s restarting failed container={run.name} pod={self.name}_{self.namespace}({self.uid})",
            }
        }
        self.publish()
        self.event(
            "Warning",
            "BackOff",
            "Back-off restarting failed container "
            + run.name
            + f" in pod {self.name}_{self.namespace}({self.uid})",
        )
        if await self.wait_stop(backoff):
            return True
        run.restart_count += 1
        return False

    async def _run_once(self, run: ContainerRun) -> int | None:
        """Start the container and wait for it to exit; None if the pod stopped first."""
        while True:
            try:
                argv, env, cwd = self._command(run)
                break
            except ContainerConfigError as error:
                run.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": str(error)}
                }
                self.publish()
                self.event("Warning", "Failed", f"Error: {error}")
            except _ImageNotFound as error:
                run.state = {"waiting": {"reason": "ErrImagePull", "message": str(error)}}
                self.publish()
                self.event(
                    "Warning", "Failed", f"Failed to pull image {run.spec.get('image')!r}: {error}"
                )
            if await self.wait_stop(_RETRY_S):
                return None
        log_path = self.dir / f"{run.name}-{len(run.logs)}.log"
        run.logs.append(log_path)
        with open(log_path, "wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        run.process = process
        run.container_id = f"containerd://{random_hex(64)}"
        run.ever_started = True
        started_at = now_time()
        run.state = {"running": {"startedAt": started_at}}
        run.started = "startupProbe" not in run.spec
        if self.phase == "Pending" and all(r.ever_started for r in self.runs):
            self.phase = "Running"
        self.publish()
        self.event("Normal", "Started", f"Started container {run.name}")
        logger.info(
            "event=container_started pod=%s/%s container=%s pid=%d ip=%s",
            self.namespace,
            self.name,
            run.name,
            process.pid,
            self.ip,
        )

        probes = (
            [] if run.init else [asyncio.ensure_future(self._probe_container(run, process, env))]
        )
        waiter = asyncio.ensure_future(process.wait())
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                await self._stop_process(process)
            returncode = await waiter
        finally:
            stopper.cancel()
            for probe in probes:
                probe.cancel()
            _kill_group(process.pid, signal.SIGKILL)
        run.process = None
        run.ready = False
        code = _exit_code(returncode)
        reason = "Completed" if code == 0 else "Error"
        run.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": now_time(),
                "containerID": run.container_id,
            }
        }
        if returncode < 0:
            run.state["terminated"]["signal"] = -returncode
        self.publish()
        logger.info(
            "event=container_exited pod=%s/%s container=%s code=%d",
            self.namespace,
            self.name,
            run.name,
            code,
        )
        return code

    async def _stop_process(self, process: asyncio.subprocess.Process) -> None:
        _kill_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.grace_s)
        except asyncio.TimeoutError:
            _kill_group(process.pid, signal.SIGKILL)

    def _command(self, run: ContainerRun) -> tuple[list[str], dict[str, str], str]:
        spec = run.spec
        mounts = container_mounts(spec, self.mounts)
        variables = resolve_env(spec, self.current_pod(), self.kubelet.store)
        variables = {k: rewrite_path(v, mounts) for k, v in variables.items()}
        command = list(spec.get("command") or [])
        args = list(spec.get("args") or [])
        # An image's entrypoint is given by the test as host paths (the venv's python):
        # only what the container spec says names paths inside the container.
        entrypoint: list[str] = []
        if not command:
            image_entrypoint = self.kubelet.image_entrypoint(str(spec.get("image", "")))
            if image_entrypoint is None and not args:
                raise _ImageNotFound(
                    f"image {spec.get('image')!r} is not known to the mlfe test cluster and the container has no command"
                )
            entrypoint = list(image_entrypoint or ())
        argv = entrypoint + [
            rewrite_path(expand(part, variables), mounts) for part in command + args
        ]
        if argv and argv[0] in _PYTHON_NAMES:
            argv[0] = sys.executable
        host = _host_flag(argv)
        if host in _WILDCARD_HOSTS or (host is None and "scoring_runtime" in argv):
            # In a pod, the wildcard address is the pod's own network namespace; here it
            # would be every loopback pod's. mlfe's parsers take the last --host.
            argv += ["--host", str(self.ip)]
        fault = self.kubelet.faults.find(CRASH, self.current_pod())
        if fault is not None:
            argv = [sys.executable, "-c", _CRASH_STUB.format(code=fault.exit_code)]
        rootfs = self.dir / "rootfs"
        rootfs.mkdir(exist_ok=True)
        working_dir = spec.get("workingDir")
        cwd = rewrite_path(working_dir, mounts) if working_dir else str(rootfs)
        if working_dir and cwd == working_dir:
            cwd = str(rootfs / working_dir.lstrip("/"))
        Path(cwd).mkdir(parents=True, exist_ok=True)
        env = {name: os.environ[name] for name in _PASSTHROUGH_ENV if name in os.environ}
        env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE")})
        env.update({"HOME": str(rootfs), "HOSTNAME": self.name, "PYTHONUNBUFFERED": "1"})
        env.update(variables)
        return argv, env, cwd

    # -- probes ------------------------------------------------------------------------

    async def _probe_container(
        self, run: ContainerRun, process: asyncio.subprocess.Process, env: Mapping[str, str]
    ) -> None:
        started = time.monotonic()
        startup = run.spec.get("startupProbe")
        if startup and not await self._probe_until_success(run, process, startup, env, "Startup"):
            return
        run.started = True
        self.publish()
        tasks = [asyncio.ensure_future(self._readiness(run, env, started))]
        liveness = run.spec.get("livenessProbe")
        if liveness:
            tasks.append(asyncio.ensure_future(self._liveness(run, process, liveness, env)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _probe_until_success(
        self,
        run: ContainerRun,
        process: asyncio.subprocess.Process,
        probe: dict[str, Any],
        env: Mapping[str, str],
        kind: str,
    ) -> bool:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            try:
                await run_probe(probe, str(self.ip), run.spec, env)
                return True
            except ProbeFailed as error:
                failures += 1
                self.event("Warning", "Unhealthy", f"{kind} probe failed: {error}")
                if failures >= probe.get("failureThreshold", 3):
                    self._kill_for_probe(run, process, kind)
                    return False
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _readiness(self, run: ContainerRun, env: Mapping[str, str], started: float) -> None:
        probe = run.spec.get("readinessProbe")
        delay = self.kubelet.ready_delay_s
        if probe is None:
            await asyncio.sleep(max(0.0, started + delay - time.monotonic()))
            run.ready = True
            self.publish()
            return
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        successes = failures = 0
        while True:
            try:
                await run_probe(probe, str(self.ip), run.spec, env)
                successes, failures = successes + 1, 0
            except ProbeFailed as error:
                successes, failures = 0, failures + 1
                self.event("Warning", "Unhealthy", f"Readiness probe failed: {error}")
            if not run.ready and successes >= probe.get("successThreshold", 1):
                await asyncio.sleep(max(0.0, started + delay - time.monotonic()))
                run.ready = True
                self.publish()
            elif run.ready and failures >= probe.get("failureThreshold", 3):
                run.ready = False
                self.publish()
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _liveness(
        self,
        run: ContainerRun,
        process: asyncio.subprocess.Process,
        probe: dict[str, Any],
        env: Mapping[str, str],
    ) -> None:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            try:
                await run_probe(probe, str(self.ip), run.spec, env)
                failures = 0
            except ProbeFailed as error:
                failures += 1
                self.event("Warning", "Unhealthy", f"Liveness probe failed: {error}")
                if failures >= probe.get("failureThreshold", 3):
                    self._kill_for_probe(run, process, "liveness")
                    return
            await asyncio.sleep(probe.get("periodSeconds", 10))

    def _kill_for_probe(
        self, run: ContainerRun, process: asyncio.subprocess.Process, kind: str
    ) -> None:
        self.event(
            "Normal",
            "Killing",
            f"Container {run.name} failed {kind.lower()} probe, will be restarted",
        )
        killer = asyncio.ensure_future(self._stop_process(process))
        self._background.add(killer)
        killer.add_done_callback(self._background.discard)

    def current_pod(self) -> dict[str, Any]:
        """The pod as stored now (labels may have changed since it started)."""
        return self.kubelet.store.peek(kinds.PODS, self.namespace, self.name) or self.pod

    def kill_containers(self, signum: int = signal.SIGKILL) -> None:
        for run in self.runs:
            if run.process is not None and run.process.returncode is None:
                _kill_group(run.process.pid, signum)

    async def _terminate_all(self) -> None:
        for run in [*self.init_runs, *self.runs]:
            process = run.process
            if process is not None and process.returncode is None:
                await self._stop_process(process)
                await process.wait()
            if process is not None:
                _kill_group(process.pid, signal.SIGKILL)

    # -- status ------------------------------------------------------------------------

    def event(self, event_type: str, reason: str, message: str) -> None:
        pod = self.kubelet.store.peek(kinds.PODS, self.namespace, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid:
            return
        key = f"{reason}:{message}"
        now = time.monotonic()
        if now - self._last_event.get(key, -10.0) < 1.0:
            return  # at most one repeat a second, like the recorder's rate limit
        self._last_event[key] = now
        self.kubelet.events.record(kinds.PODS, pod, event_type, reason, message)

    def _condition(
        self, kind: str, ok: bool, reason: str = "", message: str = ""
    ) -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self._condition_times.get(kind)
        moment = previous[1] if previous is not None and previous[0] == status else now_time()
        self._condition_times[kind] = (status, moment)
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": moment,
        }
        if not ok and reason:
            condition["reason"], condition["message"] = reason, message
        return condition

    def publish(self) -> None:
        stored = self.kubelet.store.peek(kinds.PODS, self.namespace, self.name)
        if stored is None or stored["metadata"]["uid"] != self.uid:
            return
        status = clone(stored.get("status") or {})
        scheduled = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        unready = [run.name for run in self.runs if not run.ready]
        uninitialised = [
            run.name
            for run in self.init_runs
            if "terminated" not in run.state or run.state["terminated"].get("exitCode") != 0
        ]
        conditions = [
            self._condition("PodReadyToStartContainers", self.ip is not None),
            self._condition(
                "Initialized",
                self.init_done,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(uninitialised)}]",
            ),
            self._condition(
                "Ready",
                not unready,
                "ContainersNotReady",
                f"containers with unready status: [{' '.join(unready)}]",
            ),
            self._condition(
                "ContainersReady",
                not unready,
                "ContainersNotReady",
                f"containers with unready status: [{' '.join(unready)}]",
            ),
        ]
        if scheduled is not None:
            conditions.append(scheduled)
        status.update(
            {
                "phase": self.phase,
                "conditions": conditions,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.start_time,
                "containerStatuses": [run.status() for run in self.runs],
            }
        )
        if self.ip is not None:
            status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
        if self.init_runs:
            status["initContainerStatuses"] = [run.status() for run in self.init_runs]
        self.kubelet.registry.write_status(kinds.PODS, self.namespace, self.name, status)


class Kubelet(Controller):
    name = "kubelet"
    watches = (kinds.PODS,)

    def __init__(
        self, registry: Registry, faults: Faults, config: KubeletConfig, ready_delay_s: float = 0.0
    ) -> None:
        super().__init__(registry)
        self.config = config
        self.faults = faults
        self.network = PodNetwork(config.pod_subnet)
        self.events = EventRecorder(registry, "kubelet", config.node_name)
        self.ready_delay_s = ready_delay_s
        self._workers: dict[str, PodWorker] = {}

    def image_entrypoint(self, image: str) -> tuple[str, ...] | None:
        if image in self.config.images:
            return self.config.images[image]
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        return self.config.images.get(repository)

    def reconcile(self) -> None:
        present = set()
        for pod in self.store.items(kinds.PODS):
            if pod["spec"].get("nodeName") != self.config.node_name:
                continue
            uid = pod["metadata"]["uid"]
            present.add(uid)
            worker = self._workers.get(uid)
            if worker is None:
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                worker.task = asyncio.ensure_future(worker.run())
                worker.task.add_done_callback(functools.partial(self._forget, uid))
            if pod["metadata"].get("deletionTimestamp"):
                worker.request_stop(float(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
        for uid, worker in list(self._workers.items()):
            if uid not in present:
                worker.request_stop(0.0)  # force-deleted: kill at once

    def _forget(self, uid: str, _task: object) -> None:
        self._workers.pop(uid, None)

    def kill_matching(self, fault: Fault) -> int:
        """Kill the running containers of pods the fault matches; returns how many pods."""
        killed = 0
        for worker in self._workers.values():
            if fault.matches(worker.current_pod()):
                worker.kill_containers()
                killed += 1
        return killed

    def worker(self, namespace: str, name: str) -> PodWorker | None:
        for worker in self._workers.values():
            if worker.namespace == namespace and worker.name == name:
                return worker
        return None

    def log_file(
        self, namespace: str, name: str, container: str | None, previous: bool
    ) -> tuple[Path, ContainerRun]:
        worker = self.worker(namespace, name)
        pod = self.store.peek(kinds.PODS, namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        if container is None:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        runs = [] if worker is None else [*worker.init_runs, *worker.runs]
        run = next((r for r in runs if r.name == container), None)
        if container not in names and run is None:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if run is None or not run.logs:
            reason = (
                "ContainerCreating"
                if run is None
                else run.state.get("waiting", {}).get("reason", "ContainerCreating")
            )
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {reason}'
            )
        if previous:
            # Between runs (in CrashLoopBackOff) the previous container is the last one.
            running = run.process is not None
            if len(run.logs) - (1 if running else 0) < 1:
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return run.logs[-2 if running else -1], run
        return run.logs[-1], run

    async def shutdown(self) -> None:
        workers = list(self._workers.values())
        for worker in workers:
            worker.request_stop(self.config.stop_grace_cap_s)
        tasks = [worker.task for worker in workers if worker.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
