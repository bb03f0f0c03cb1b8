"""A whole fake cluster in a background thread: API server, controllers, scheduler, kubelet.

    with start_cluster(tmp_path) as cluster:
        api = cluster.api_client()          # the real kubernetes client, over plain HTTP
        ...
        cluster.make_unschedulable("app=web")
        cluster.restart_apiserver()

The cluster owns its event loop in its own thread, so sync tests, async tests and the
code under test (which may run its own loop) all talk to it over HTTP like to a real
cluster. Knobs are thread-safe: they run on the cluster's loop and return when done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from tests.kube import resources as kinds
from tests.kube.apiserver import ApiServer
from tests.kube.controllers import Controller, GarbageCollector
from tests.kube.deployments import DeploymentController
from tests.kube.endpointslices import EndpointSliceController
from tests.kube.faults import CRASH, UNSCHEDULABLE, Fault, Faults
from tests.kube.kubelet import Kubelet, KubeletConfig
from tests.kube.registry import Registry
from tests.kube.scheduler import Scheduler
from tests.kube.selectors import LabelSelector, parse_label_selector
from tests.kube.store import Store
from tests.kube.watch import WatchDropped, WatchHub

logger = logging.getLogger("tests.kube")

T = TypeVar("T")

NODE_NAME = "mlfe-test-node"
DEFAULT_UNSCHEDULABLE_MESSAGE = (
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)
_START_TIMEOUT_S = 10.0
_CALL_TIMEOUT_S = 60.0


class _HideDroppedWatches(logging.Filter):
    """uvicorn logs the exception we raise to cut a watch connection; that is intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], WatchDropped))


def _random_pod_subnet() -> str:
    # A random 127.a.b.0/24 per cluster: clusters of concurrent test runs never share pod IPs.
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}."


def _selector(selector: str | Mapping[str, str]) -> LabelSelector:
    if isinstance(selector, str):
        return parse_label_selector(selector)
    return parse_label_selector(",".join(f"{k}={v}" for k, v in selector.items()))


class Cluster:
    """A running fake cluster. Start it with `start_cluster()`."""

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        namespaces: Iterable[str] = ("default",),
        ready_delay_s: float = 0.0,
        crash_backoff_s: tuple[float, float] = (1.0, 10.0),
        bookmark_interval_s: float = 2.0,
        history_limit: int = 2000,
        volume_claims: Mapping[str, str | Path] | None = None,
        images: Mapping[str, Iterable[str]] | None = None,
        pod_subnet: str | None = None,
        stop_grace_cap_s: float = 2.0,
    ) -> None:
        self._own_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="mlfe-kube-")) if work_dir is None else Path(work_dir)
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig_path = self.work_dir / "kubeconfig"
        self.node_name = NODE_NAME
        self.pod_subnet = pod_subnet or _random_pod_subnet()
        self.namespace = "default"
        self._namespaces = tuple(
            dict.fromkeys(("default", "kube-system", "kube-public", "kube-node-lease", *namespaces))
        )
        self._bookmark_interval_s = bookmark_interval_s
        self._history_limit = history_limit
        self._ready_delay_s = ready_delay_s
        self._kubelet_config = KubeletConfig(
            node_name=NODE_NAME,
            work_dir=self.work_dir / "pods",
            pod_subnet=self.pod_subnet,
            backoff_base_s=crash_backoff_s[0],
            backoff_cap_s=crash_backoff_s[1],
            images={name: tuple(entrypoint) for name, entrypoint in (images or {}).items()},
            volume_claims={name: str(path) for name, path in (volume_claims or {}).items()},
            stop_grace_cap_s=stop_grace_cap_s,
        )
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._controllers: list[Controller] = []
        self._log_filter = _HideDroppedWatches()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The API server's URL (what the kubeconfig points at)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Cluster:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="mlfe-test-cluster", daemon=True
        )
        self._thread.start()
        try:
            ready.result(_START_TIMEOUT_S)
        except BaseException:
            self._thread.join(_START_TIMEOUT_S)
            self._loop = None
            raise
        self._write_kubeconfig()
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)
        logger.info("event=cluster_started host=%s pod_subnet=%s0/24", self.host, self.pod_subnet)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CALL_TIMEOUT_S)
            self._loop = None
            logging.getLogger("uvicorn.error").removeFilter(self._log_filter)
            if self._own_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self if self._loop is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Cluster:
        return self if self._loop is not None else await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                await self._boot()
            except BaseException as error:
                ready.set_exception(error)
                loop.stop()
                raise
            ready.set_result(None)

        boot_task = loop.create_task(boot())
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop) | {boot_task}:
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _boot(self) -> None:
        self.store = Store(self._history_limit)
        self.registry = Registry(self.store)
        self.faults = Faults()
        for name in self._namespaces:
            self.registry.create(kinds.NAMESPACES, "", {"metadata": {"name": name}})
        self.kubelet = Kubelet(
            self.registry, self.faults, self._kubelet_config, self._ready_delay_s
        )
        controllers: list[Controller] = [
            Scheduler(self.registry, self.faults, NODE_NAME, self._kubelet_config.volume_claims),
            DeploymentController(self.registry),
            EndpointSliceController(self.registry),
            GarbageCollector(self.registry),
            self.kubelet,
        ]
        self._controllers = controllers
        self._tasks = [asyncio.ensure_future(controller.run()) for controller in controllers]
        self.watch_hub = WatchHub(self.store, self._bookmark_interval_s)
        self.apiserver = ApiServer(self.registry, self.kubelet, self.watch_hub)
        await self._start_server()

    async def _start_server(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.apiserver,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="httptools",
            ws="none",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=60,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._server_task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            if self._server_task.done():
                self._server_task.result()
                raise RuntimeError("the test API server stopped while starting")
            await asyncio.sleep(0.005)

    async def _stop_server(self, abrupt: bool) -> None:
        if self._server is None or self._server_task is None:
            return
        if abrupt:
            self.apiserver.drop_watches()
        else:
            self.apiserver.end_watches()
        self._server.should_exit = True
        await self._server_task
        self._server = None
        self._server_task = None

    async def _shutdown(self) -> None:
        await self._stop_server(abrupt=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.kubelet.shutdown()

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "mlfe-test", "cluster": {"server": self.host}}],
            "users": [{"name": "mlfe-test", "user": {"token": "mlfe-test-token"}}],
            "contexts": [
                {
                    "name": "mlfe-test",
                    "context": {
                        "cluster": "mlfe-test",
                        "user": "mlfe-test",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "mlfe-test",
        }
        self.kubeconfig_path.write_text(json.dumps(config, indent=2))

    # -- calling into the cluster's loop ------------------------------------------------

    def _call(self, coroutine: Awaitable[T]) -> T:
        if self._loop is None:
            raise RuntimeError("the cluster is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "cluster knobs are for tests, not for code on the cluster's own loop"
            )

        async def wrapper() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(_CALL_TIMEOUT_S)

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the cluster's loop (to read the store consistently) and return its result."""

        async def run() -> T:
            return function()

        return self._call(run())

    # -- clients -----------------------------------------------------------------------

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient loaded from this cluster's kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig_path))

    # -- knobs -------------------------------------------------------------------------

    def make_unschedulable(
        self,
        selector: str | Mapping[str, str],
        *,
        namespace: str | None = None,
        message: str = DEFAULT_UNSCHEDULABLE_MESSAGE,
    ) -> Fault:
        """Pods matching `selector` (now and later) stay Pending with FailedScheduling until cleared."""
        fault = Fault(
            UNSCHEDULABLE, _selector(selector), namespace, message, _clear=self._clear_fault
        )

        def apply() -> None:
            self.faults.add(fault)
            self._poke()

        self.call(apply)
        return fault

    def make_crash(
        self,
        selector: str | Mapping[str, str],
        *,
        namespace: str | None = None,
        once: bool = False,
        exit_code: int = 1,
    ) -> Fault:
        """Kill the containers of matching pods; unless `once`, every restart exits with `exit_code` too.

        Returns the fault; `fault.clear()` lets the next restart run the real command.
        """
        fault = Fault(
            CRASH,
            _selector(selector),
            namespace,
            "injected crash",
            exit_code=exit_code,
            _clear=self._clear_fault,
        )

        def apply() -> None:
            if not once:
                self.faults.add(fault)
            self.kubelet.kill_matching(fault)
            self._poke()

        self.call(apply)
        return fault

    def _clear_fault(self, fault: Fault) -> None:
        if self._loop is None:
            return  # the cluster is gone, and its faults with it

        def remove() -> None:
            self.faults.remove(fault)
            self._poke()

        self.call(remove)

    def _poke(self) -> None:
        for controller in self._controllers:
            controller.poke()

    def clear_faults(self) -> None:
        def clear() -> None:
            self.faults.clear()
            self._poke()

        self.call(clear)

    def set_ready_delay(self, seconds: float) -> None:
        """Containers become Ready no sooner than this after they start (probe permitting)."""

        def apply() -> None:
            self.kubelet.ready_delay_s = seconds

        self.call(apply)

    def drop_watches(self, *, abrupt: bool = True) -> int:
        """Cut every open watch connection (abrupt) or end the streams cleanly; returns how many."""
        return self.call(self.apiserver.drop_watches if abrupt else self.apiserver.end_watches)

    def restart_apiserver(self, downtime_s: float = 0.0) -> None:
        """Stop the API server (cutting watches), wait `downtime_s`, start it on the same port.

        The store survives, like etcd: resourceVersions continue and watches can resume.
        """
        self._call(self._restart(downtime_s))

    async def restart_apiserver_async(self, downtime_s: float = 0.0) -> None:
        """`restart_apiserver` without blocking the caller's event loop."""
        await asyncio.to_thread(self.restart_apiserver, downtime_s)

    async def _restart(self, downtime_s: float) -> None:
        await self._stop_server(abrupt=True)
        await asyncio.sleep(downtime_s)
        await self._start_server()
        logger.info("event=apiserver_restarted host=%s", self.host)

    def compact(self, resource_version: int | str | None = None) -> int:
        """Forget watch history up to `resource_version` (default: all of it); returns the floor.

        A watch from an older resourceVersion then gets 410 Expired.
        """
        revision = None if resource_version is None else int(resource_version)
        return self.call(lambda: self.store.compact(revision))

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        return self.call(lambda: self.store.revision)

    def api_usage(self) -> set[tuple[str, str, str]]:
        """Every (verb, apiGroup, resource[/subresource]) a client has called so far."""
        return self.call(lambda: set(self.apiserver.usage))

    def pod_processes(self) -> dict[str, int]:
        """PID of each running container process, keyed `namespace/pod/container`."""

        def collect() -> dict[str, int]:
            found = {}
            for worker in list(self.kubelet._workers.values()):
                for run in worker.runs:
                    if run.process is not None and run.process.returncode is None:
                        found[f"{worker.namespace}/{worker.name}/{run.name}"] = run.process.pid
            return found

        return self.call(collect)

    def wait_for(
        self, predicate: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.05
    ) -> T:
        """Poll `predicate` (in the caller's thread) until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout_s} s")
            time.sleep(interval_s)


def start_cluster(work_dir: Path | str | None = None, **options: Any) -> Cluster:
    """Start a fake cluster (in well under a second); use it as a context manager.

    Options: namespaces, ready_delay_s, crash_backoff_s=(base, cap), bookmark_interval_s,
    history_limit, volume_claims={claim: folder}, images={image: entrypoint argv},
    pod_subnet ("127.a.b."), stop_grace_cap_s. See `Cluster`.
    """
    return Cluster(Path(work_dir) if work_dir is not None else None, **options).start()
