"""`mlfe serve`: the whole product in one process on one machine, or one router pod.

The router (data plane, management API, /metrics), the autoscaler's control loop and the
replica backend, wired around a store in the state directory:

    STATE/admin.key    the management API's key (mode 0600), unless MLFE_ADMIN_KEY is set
    STATE/mlfe.db      services, versions, keys, replica counts (SQLite)
    STATE/replicas/    the local backend's sockets and replica logs

On start every stored service is restored; on SIGTERM or SIGINT the router stops taking
requests, lets those in flight finish, then stops every replica, so nothing outlives it.
A SIGKILL loses nothing either: the store is committed per change, and replicas die with
their parent (the local backend sets a parent-death signal).

    python -m router.serve --state-dir /tmp/mlfe --port 8080

With `--backend kubernetes` (router/serve_kubernetes.py) the store and the replicas are
in the cluster and outlive the router: several routers share them, one of them runs the
autoscaler, and a restart takes the running Deployments over as they are.

    python -m router.serve --backend kubernetes --kubeconfig ~/.kube/config --namespace mlfe
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.routing import BaseRoute, Mount

from autoscaler.backends.base import ReplicaBackend
from autoscaler.backends.local import LocalBackend
from autoscaler.backends.mixed import MixedBackend
from autoscaler.backends.static import StaticBackend
from autoscaler.loop import ControlLoop
from router.app import create_app
from router.auth import generate_key
from router.dataplane import DataPlane
from router.manage import PREFIX, create_manage_app
from router.metrics import RouterMetrics
from router.registry import Registry
from router.replicas import RegistryReplicaSink
from router.serve_settings import (
    BACKENDS,
    ServeError,
    ServeSettings,
    add_arguments,
    settings_from,
)
from router.server import uvicorn_server
from router.services import ServiceManager
from router.store import SqliteStore, Store, StoreError
from scoring_runtime.heap import freeze_startup_heap
from scoring_runtime.listen import bind_tcp, raise_open_files_limit

if TYPE_CHECKING:
    from router.serve_kubernetes import ClusterRouter

__all__ = ["Assembly", "ServeError", "ServeSettings", "assemble", "main", "run", "serve"]

logger = logging.getLogger("mlfe.serve")

ADMIN_KEY_ENV = "MLFE_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"
STORE_FILE = "mlfe.db"


@dataclass(eq=False)
class Backing:
    """What `--backend` decides: where state lives, where replicas run, who scales."""

    store: Store
    backend: ReplicaBackend
    control_loop: ControlLoop
    cluster: ClusterRouter | None = None  # the Kubernetes pieces

    @property
    def routes(self) -> tuple[BaseRoute, ...]:
        return self.cluster.routes if self.cluster is not None else ()


@dataclass(eq=False)
class Assembly:
    """The running pieces of one router, in the order they are closed."""

    app: DataPlane
    manager: ServiceManager
    control_loop: ControlLoop
    backend: ReplicaBackend
    store: Store
    registry: Registry
    admin_key: str
    state_dir: Path
    cluster: ClusterRouter | None = None

    async def close(self) -> None:
        """Stop the autoscaler (handing its Lease over), then the backend (the local
        one stops every replica), then close the store."""
        try:
            await self.manager.close()
            await self.control_loop.close()
            if self.cluster is not None:
                await self.cluster.close()
        finally:
            try:
                await self.backend.close()
            finally:
                self.store.close()
                if self.cluster is not None:
                    self.cluster.disconnect()


def prepare_state_dir(path: Path) -> Path:
    """The state directory, absolute, created private (0700) if it does not exist."""
    state_dir = path.expanduser().absolute()
    if not state_dir.exists():
        try:
            state_dir.mkdir(mode=0o700, parents=True)
        except OSError as error:
            raise ServeError(f"cannot create the state directory {state_dir}: {error}") from None
    elif not state_dir.is_dir():
        raise ServeError(f"the state directory {state_dir} is not a folder")
    return state_dir


def load_admin_key(state_dir: Path, environ: Mapping[str, str] = os.environ) -> str:
    """MLFE_ADMIN_KEY, else STATE/admin.key, generated (mode 0600) on first start."""
    from_env = environ.get(ADMIN_KEY_ENV, "").strip()
    if from_env:
        return from_env
    path = state_dir / ADMIN_KEY_FILE
    try:
        # O_EXCL: of two routers starting at once, one writes the key, both read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as error:
        raise ServeError(f"cannot create {path}: {error}") from None
    else:
        with os.fdopen(fd, "w") as file:
            file.write(generate_key() + "\n")
        logger.info("event=admin-key-created path=%s", path)
    try:
        key = path.read_text().strip()
        if path.stat().st_mode & 0o077:
            logger.warning("event=admin-key-readable-by-others path=%s fix='chmod 600'", path)
    except OSError as error:
        raise ServeError(f"cannot read the admin key from {path}: {error}") from None
    if not key:
        raise ServeError(f"{path} is empty: delete it to have a new admin key generated")
    return key


def open_backend(
    settings: ServeSettings, state_dir: Path, registry: Registry, admin_key: str
) -> Backing:
    """The store, replica backend and control loop for `settings.backend`.

    Local: a SQLite file and child processes, and a control loop that always acts.
    Kubernetes: the cluster store and Deployments, and a control loop that acts only
    while this router holds the Lease, on the demand of every router pod.
    """
    if settings.backend == "local":
        sink = RegistryReplicaSink(registry)
        try:
            store = SqliteStore(state_dir / STORE_FILE)
        except StoreError as error:
            raise ServeError(str(error)) from None
        # Versions listing replica urls are probed; the others run as child processes.
        backend = MixedBackend(LocalBackend(state_dir, sink), StaticBackend(sink))
        return Backing(store, backend, ControlLoop(backend, sink))
    if settings.backend == "kubernetes":
        from router.serve_kubernetes import ClusterRouter  # loads the kubernetes client

        cluster = ClusterRouter(settings.kubernetes, registry, admin_key)
        return Backing(cluster.store, cluster.backend, cluster.control_loop, cluster)
    raise ServeError(f"unknown backend {settings.backend!r}: use one of {', '.join(BACKENDS)}")


async def assemble(settings: ServeSettings, *, public_url: str) -> Assembly:
    """Every piece of the router, with the stored services restored (replicas starting)."""
    state_dir = prepare_state_dir(settings.state_dir)
    if settings.backend == "kubernetes" and not os.environ.get(ADMIN_KEY_ENV, "").strip():
        raise ServeError(
            f"{ADMIN_KEY_ENV} is not set: every router pod must share one admin key (the"
            " Secret deploy/kubernetes/kustomization.yaml generates)"
        )
    admin_key = load_admin_key(state_dir)
    registry = Registry(RouterMetrics())
    backing = open_backend(settings, state_dir, registry, admin_key)
    manager = ServiceManager(
        backing.store, registry, backing.control_loop, backing.backend, public_url=public_url
    )
    routes: list[BaseRoute] = [Mount(PREFIX, app=create_manage_app(manager, admin_key))]
    assembly = Assembly(
        app=create_app(
            registry, max_body=settings.max_body, extra_routes=[*routes, *backing.routes]
        ),
        manager=manager,
        control_loop=backing.control_loop,
        backend=backing.backend,
        store=backing.store,
        registry=registry,
        admin_key=admin_key,
        state_dir=state_dir,
        cluster=backing.cluster,
    )
    try:
        if backing.cluster is not None:
            await backing.cluster.start(manager)
        await manager.restore()
    except BaseException:
        await assembly.close()
        raise
    return assembly


def public_url_for(host: str, port: int) -> str:
    """http://HOST:PORT as a client should write it."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(settings: ServeSettings) -> None:
    """Run the router until SIGTERM or SIGINT, then shut down without orphans."""
    before, after = raise_open_files_limit()
    if after != before:
        logger.info("event=open-files-limit-raised before=%d after=%d", before, after)
    try:
        sock = bind_tcp(settings.host, settings.port)
    except OSError as error:
        raise ServeError(f"cannot listen on {settings.host}:{settings.port}: {error}") from None
    port = sock.getsockname()[1]
    public_url = settings.public_url or public_url_for(settings.host, port)
    stop = _StopSignals()
    with contextlib.closing(sock), stop.installed():
        assembly = await assemble(settings, public_url=public_url)
        freeze_startup_heap()
        try:
            server = uvicorn_server(assembly.app, log_level=settings.log_level)
            stop.server = server
            logger.info(
                "event=serving url=%s state_dir=%s backend=%s services=%d",
                public_url,
                assembly.state_dir,
                settings.backend,
                len(assembly.manager.list_views()),
            )
            if not stop.requested:
                await server.serve(sockets=[sock])
        finally:
            logger.info("event=stopping")
            sock.close()  # no new connections while the replicas stop
            await assembly.close()
            logger.info("event=stopped")


class _StopSignals:
    """SIGTERM and SIGINT ask the server to exit, before it runs too.

    uvicorn handles both while it serves, and afterwards re-raises what it caught; these
    handlers are what it restores, so a re-raised signal cannot cut the shutdown short.
    """

    def __init__(self) -> None:
        self.requested = False
        self.server: uvicorn.Server | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            logger.info("event=signal signal=%s", signal.Signals(signum).name)
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {s: signal.signal(s, self.handle) for s in signals}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # One line per request: the leader's demand polls are no event worth a line each.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def run(settings: ServeSettings) -> int:
    """`serve` on uvloop; the exit code for a command line."""
    import uvloop

    configure_logging(settings.log_level)
    try:
        uvloop.run(serve(settings))
    except (ServeError, StoreError) as error:
        logger.error("event=cannot-start error=%s", error)
        print(f"mlfe serve: {error}", file=sys.stderr)
        return 1
    return 0


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> ServeSettings:
    parser = argparse.ArgumentParser(
        prog="mlfe serve", description="Run the mlfe router, autoscaler and replicas."
    )
    add_arguments(parser)
    try:
        return settings_from(parser.parse_args(argv), environ)
    except ValueError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
