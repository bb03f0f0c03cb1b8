"""Bring your own replicas: a version served by fixed URLs that someone else runs.

For example existing Azure inference-server containers. Nothing is started or scaled;
each URL is health-checked with `GET /` every probe interval, taken out of rotation after
`failure_threshold` failed probes in a row and put back on the first good one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import httpx

from autoscaler.backends.base import (
    DeploymentKey,
    DeploymentState,
    DeploymentStatus,
    ReplicaLog,
    ReplicaSink,
    ReplicaTemplate,
)

logger = logging.getLogger("mlfe.autoscaler.static")


@dataclass(frozen=True)
class StaticReplica:
    """One replica URL: `http://host[:port]` (the router speaks plain HTTP/1.1 to it)."""

    url: str
    address: str  # "host:port" as the router's upstream pool takes it

    @classmethod
    def parse(cls, url: str) -> StaticReplica:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"replica url {url!r} is not a URL: {exc}") from None
        if parsed.scheme != "http" or not parsed.host:
            raise ValueError(f"replica url {url!r} must look like http://host:port")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise ValueError(
                f"replica url {url!r} must have no path: the router calls /score on it"
            )
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        port = parsed.port or 80
        return cls(url=f"http://{host}:{port}", address=f"{host}:{port}")

    @property
    def id(self) -> str:
        return self.address


@dataclass(eq=False)
class _Health:
    replica: StaticReplica
    in_rotation: bool = False
    failures: int = 0
    last_error: str = "not probed yet"


@dataclass(eq=False)
class _StaticDeployment:
    key: DeploymentKey
    health: dict[str, _Health] = field(default_factory=dict)
    probed: bool = False  # one full round of probes has run
    task: asyncio.Task[None] | None = None
    slots: int = 1


class StaticBackend:
    """Health-checks fixed replica URLs and keeps the healthy ones in rotation."""

    def __init__(
        self,
        sink: ReplicaSink,
        *,
        probe_interval: float = 5.0,
        probe_timeout: float = 2.0,
        failure_threshold: int = 2,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self.sink = sink
        self.probe_interval = probe_interval
        self.failure_threshold = failure_threshold
        self._owns_client = client is None
        # Probes must not go through a proxy from the environment, nor follow redirects.
        self._client = client or httpx.AsyncClient(timeout=probe_timeout, trust_env=False)
        self._deployments: dict[DeploymentKey, _StaticDeployment] = {}

    async def deploy(
        self, key: DeploymentKey, template: ReplicaTemplate, replicas: int, warm: int
    ) -> None:
        """Serve `key` from `template.urls`; `replicas` and `warm` do not apply."""
        if not template.urls:
            raise ValueError(f"{key}: a static deployment needs replica urls")
        wanted = {r.id: r for r in map(StaticReplica.parse, template.urls)}
        dep = self._deployments.get(key)
        if dep is None:
            dep = _StaticDeployment(key, slots=template.slots)
            self._deployments[key] = dep
        for replica_id in [i for i in dep.health if i not in wanted]:
            self._take_out(dep, dep.health.pop(replica_id), "no longer listed")
        if template.slots != dep.slots:
            # The router starts a new pool for a new slot count (the replicas of other
            # backends restart with it): the healthy replicas go into it at once.
            dep.slots = template.slots
            for health in dep.health.values():
                if health.in_rotation:
                    self.sink.replica_removed(key, health.replica.id)
                    self.sink.replica_ready(key, health.replica.id, health.replica.address)
        for replica_id, replica in wanted.items():
            dep.health.setdefault(replica_id, _Health(replica))
        logger.info("event=deploy deployment=%s urls=%d", key, len(wanted))
        if dep.task is None:
            dep.task = asyncio.create_task(self._watch(dep), name=f"static probes {key}")

    async def scale(self, key: DeploymentKey, replicas: int) -> None:
        """Nothing to do: a static deployment has the replicas it lists."""
        self._get(key)

    async def delete(self, key: DeploymentKey) -> None:
        dep = self._get(key)
        self.untrack(key)
        await _cancel(dep.task)

    def untrack(self, key: DeploymentKey) -> None:
        """Stop probing `key` and take its replicas out of rotation, at once (the probe
        task ends in the background): the replicas are not ours to stop."""
        dep = self._deployments.pop(key, None)
        if dep is None:
            return
        if dep.task is not None:
            dep.task.cancel()
        for health in dep.health.values():
            self._take_out(dep, health, "deleted")

    def status(self, key: DeploymentKey) -> DeploymentStatus:
        dep = self._get(key)
        ready = sum(1 for h in dep.health.values() if h.in_rotation)
        down = [
            f"{h.replica.url}: {h.last_error}" for h in dep.health.values() if not h.in_rotation
        ]
        message = "; ".join(down)
        if not dep.probed:
            state = DeploymentState.TRANSITIONING
        elif ready == 0:
            state = DeploymentState.UNHEALTHY
        else:
            state = DeploymentState.HEALTHY
        return DeploymentStatus(state, ready, 0, 0, len(dep.health), message)

    def ready_count(self, key: DeploymentKey) -> int:
        return sum(1 for h in self._get(key).health.values() if h.in_rotation)

    async def logs(self, key: DeploymentKey, tail: int = 100) -> tuple[ReplicaLog, ...]:
        """Each URL and its health: the replicas' logs are where they run, not here."""
        found = []
        for health in self._get(key).health.values():
            state = "Ready" if health.in_rotation else "Unhealthy"
            note = "mlfe does not run this replica: its log is where it runs"
            if health.last_error:
                note += f"\nlast health check: {health.last_error}"
            found.append(ReplicaLog(health.replica.url, state, note))
        return tuple(found)

    async def close(self) -> None:
        for dep in self._deployments.values():
            await _cancel(dep.task)
        self._deployments.clear()
        if self._owns_client:
            await self._client.aclose()

    async def probe_now(self, key: DeploymentKey) -> None:
        """Probe every URL of `key` once, now (the periodic probes go on as well)."""
        await self._probe_round(self._get(key))

    async def _watch(self, dep: _StaticDeployment) -> None:
        while True:
            try:
                await self._probe_round(dep)
            except Exception:
                logger.exception("event=probe-error deployment=%s", dep.key)
            await asyncio.sleep(self.probe_interval)

    async def _probe_round(self, dep: _StaticDeployment) -> None:
        checks = list(dep.health.values())
        results = await asyncio.gather(*(self._probe(h.replica) for h in checks))
        if self._deployments.get(dep.key) is not dep:
            return  # deleted while being probed
        for health, error in zip(checks, results, strict=True):
            if dep.health.get(health.replica.id) is not health:
                continue  # dropped by a redeploy while being probed
            if error is None:
                health.failures = 0
                health.last_error = ""
                if not health.in_rotation:
                    health.in_rotation = True
                    logger.info(
                        "event=replica-healthy deployment=%s url=%s", dep.key, health.replica.url
                    )
                    self.sink.replica_ready(dep.key, health.replica.id, health.replica.address)
                continue
            health.failures += 1
            health.last_error = error
            if health.in_rotation and health.failures >= self.failure_threshold:
                self._take_out(dep, health, error)
        dep.probed = True

    async def _probe(self, replica: StaticReplica) -> str | None:
        """None when `GET /` answers 200, otherwise what went wrong."""
        try:
            response = await self._client.get(f"{replica.url}/")
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if response.status_code != 200:
            return f"GET / answered {response.status_code}"
        return None

    def _take_out(self, dep: _StaticDeployment, health: _Health, reason: str) -> None:
        """Out of rotation; requests already on it finish or fail on their own."""
        if not health.in_rotation:
            return
        health.in_rotation = False
        logger.warning(
            "event=replica-unhealthy deployment=%s url=%s reason=%r",
            dep.key,
            health.replica.url,
            reason,
        )
        self.sink.replica_removed(dep.key, health.replica.id)

    def _get(self, key: DeploymentKey) -> _StaticDeployment:
        try:
            return self._deployments[key]
        except KeyError:
            raise LookupError(f"no static deployment {key}") from None


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    # wait() rather than await: the task's cancellation is not ours to re-raise.
    await asyncio.wait({task})
