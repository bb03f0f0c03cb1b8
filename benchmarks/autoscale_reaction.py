"""How fast mlfe's autoscaler reacts to a load step, on local replicas.

    .venv/bin/python benchmarks/autoscale_reaction.py [--high 20] [--hold 20] [--after 75]

`mlfe serve` runs in its own process with a service whose run() takes 50 ms
(benchmarks/scripts/slow_score.py), autoscaling 1..10 replicas at 70% target, one slot
each, one warm standby, the default 60 s scale-down window. A closed-loop load of 1 client
steps to `--high` clients, is held, then drops back to 1. Every 100 ms the script records
the load, the demand the router sees (in flight + waiting) and the replicas wanted, ready
and warm. It reports: load step -> decision, decision -> first new replica serving,
failed requests, load drop -> scale-down, and reversals; and writes
benchmarks/results/autoscale_reaction.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not only as `python -m benchmarks....`
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    ServerSpec,
    free_port,
    machine_info,
    running,
    save_report,
)
from benchmarks.loadgen import LoadConfig, LoadResult, run_load  # noqa: E402

ENTRY_SCRIPT = ROOT / "benchmarks" / "scripts" / "slow_score.py"
RESULTS = ROOT / "benchmarks" / "results" / "autoscale_reaction"
ADMIN_KEY = "benchmark-admin-key-0123456789abcdef012345"
SERVICE = "reaction"
SCALE_DOWN_WINDOW_S = (58.0, 62.0)
TARGETS: dict[str, object] = {
    "decision_s": 1.0,
    "serving_after_decision_s": 0.1,
    "failed_requests": 0,
    "scale_down_s": SCALE_DOWN_WINDOW_S,
    "reversals": 0,
}
DEPLOYMENT_CONFIG = {
    "autoScaler": {
        "autoscaleEnabled": True,
        "minReplicas": 1,
        "maxReplicas": 10,
        "targetUtilization": 70,
        "refreshPeriodInSeconds": 1,
    },
    "authEnabled": False,
    "maxConcurrentRequestsPerContainer": 1,
    # At the step, 20 clients queue on one replica for up to a second while the
    # autoscaler decides; a 50 ms model behind a 2 s queue wait is a reasonable setting.
    "maxQueueWaitMs": 2000,
}


@dataclass
class Sample:
    t: float
    clients: int
    demand: float
    wanted: int
    ready: int
    warm: int
    starting: int


class Recorder:
    """Polls the router every 100 ms for demand and replica counts."""

    def __init__(self, base_url: str, started: float) -> None:
        self.base_url = base_url
        self.started = started
        self.clients = 0
        self.samples: list[Sample] = []

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=5) as http:
            next_at = time.monotonic()
            while not stop.is_set():
                view = (await http.get(f"/api/v1/manage/services/{SERVICE}")).json()
                metrics = (await http.get("/metrics")).text
                replicas = view["versions"][0]["replicas"]
                self.samples.append(
                    Sample(
                        t=round(time.monotonic() - self.started, 3),
                        clients=self.clients,
                        demand=_gauge(metrics, "mlfe_in_flight_requests")
                        + _gauge(metrics, "mlfe_waiting_requests"),
                        wanted=replicas["desired"],
                        ready=replicas["ready"],
                        warm=replicas["warm"],
                        starting=replicas["starting"],
                    )
                )
                next_at += 0.1
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def _gauge(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and f'service="{SERVICE}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def load_phase(url: str, clients: int, seconds: float, recorder: Recorder) -> LoadResult:
    recorder.clients = clients
    config = LoadConfig(
        url=url,
        method="POST",
        body=b'{"data": [[1, 2, 3]]}',
        headers=(("Content-Type", "application/json"),),
        connections=clients,
        duration=seconds,
        timeout=30.0,
    )
    return await run_load(config)


async def deploy(base_url: str, workdir: Path) -> None:
    source = workdir / "src"
    source.mkdir()
    shutil.copy(ENTRY_SCRIPT, source / "score.py")
    body = {
        "name": SERVICE,
        "inferenceConfig": {"entryScript": "score.py", "sourceDirectory": str(source)},
        "deploymentConfig": DEPLOYMENT_CONFIG,
        "models": [],
    }
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as http:
        created = await http.post("/api/v1/manage/services", json=body)
        if created.status_code >= 300:
            raise RuntimeError(f"deploy failed: {created.status_code} {created.text}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = (await http.get(f"/api/v1/manage/services/{SERVICE}")).json()
            if view["state"] == "Healthy" and view["versions"][0]["replicas"]["warm"] >= 1:
                return
            if view["state"] == "Failed":
                raise RuntimeError(f"deploy failed: {view.get('error')}")
            await asyncio.sleep(0.2)
    raise RuntimeError("service not Healthy with a warm standby within 120 s")


def analyse(samples: list[Sample], step_at: float, drop_at: float) -> dict[str, Any]:
    """The figures the issue asks for, read off the recorded time series."""
    before = [s for s in samples if s.t < step_at]
    base_wanted = before[-1].wanted if before else 1
    base_ready = before[-1].ready if before else 1
    decision = next((s for s in samples if s.t >= step_at and s.wanted > base_wanted), None)
    serving = None
    if decision is not None:
        serving = next((s for s in samples if s.t >= decision.t and s.ready > base_ready), None)
    peak = max((s.wanted for s in samples if step_at <= s.t < drop_at), default=base_wanted)
    down = next((s for s in samples if s.t >= drop_at and s.wanted < peak), None)
    reversals = 0
    direction = 0
    # A reversal is a change of direction while the load stays the same; the scale-down
    # after the drop follows a change of load and is the expected answer to it.
    for prev, cur in itertools.pairwise(samples):
        if cur.clients != prev.clients:
            direction = 0
        change = (cur.wanted > prev.wanted) - (cur.wanted < prev.wanted)
        if change:
            if direction and change != direction:
                reversals += 1
            direction = change
    return {
        "step_to_decision_s": round(decision.t - step_at, 3) if decision else None,
        "decision_to_first_new_replica_serving_s": (
            round(serving.t - decision.t, 3) if decision and serving else None
        ),
        "replicas_wanted_peak": peak,
        "drop_to_scale_down_s": round(down.t - drop_at, 3) if down else None,
        "reversals": reversals,
    }


def plot(samples: list[Sample], figures: dict[str, Any], step_at: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    fig, load_axis = plt.subplots(figsize=(10, 4.5))
    load_axis.fill_between(
        t,
        [s.clients for s in samples],
        step="post",
        alpha=0.15,
        color="tab:gray",
        label="clients (load)",
    )
    load_axis.plot(
        t,
        [s.demand for s in samples],
        color="tab:gray",
        linewidth=0.8,
        label="demand (in flight + waiting)",
    )
    load_axis.set_xlabel("seconds")
    load_axis.set_ylabel("clients / demand")
    replica_axis = load_axis.twinx()
    replica_axis.step(
        t, [s.wanted for s in samples], where="post", color="tab:blue", label="replicas wanted"
    )
    replica_axis.step(
        t, [s.ready for s in samples], where="post", color="tab:green", label="replicas ready"
    )
    replica_axis.step(
        t,
        [s.warm for s in samples],
        where="post",
        color="tab:orange",
        linestyle="--",
        label="warm standby",
    )
    replica_axis.set_ylabel("replicas")
    if figures["step_to_decision_s"] is not None:
        replica_axis.axvline(
            step_at + figures["step_to_decision_s"],
            color="tab:red",
            linestyle=":",
            label="scale-up decision",
        )
    handles = load_axis.get_legend_handles_labels()
    more = replica_axis.get_legend_handles_labels()
    load_axis.legend(handles[0] + more[0], handles[1] + more[1], loc="center right", fontsize=8)
    load_axis.set_title("mlfe autoscaler: 1 -> 20 clients of a 50 ms model, then back to 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlfe-as-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    argv = (
        sys.executable,
        "-m",
        "router.serve",
        "--port",
        str(port),
        "--state-dir",
        str(workdir / "state"),
    )
    spec = ServerSpec(
        "mlfe-serve", argv, f"{base_url}/healthz", env=(("MLFE_ADMIN_KEY", ADMIN_KEY),)
    )
    try:
        with running(spec, workdir):
            await deploy(base_url, workdir)
            started = time.monotonic()
            recorder = Recorder(base_url, started)
            stop = asyncio.Event()
            recording = asyncio.create_task(recorder.run(stop))
            url = f"{base_url}/api/v1/service/{SERVICE}/score"
            phases = []
            phases.append(await load_phase(url, 1, args.before, recorder))
            step_at = time.monotonic() - started
            phases.append(await load_phase(url, args.high, args.hold, recorder))
            drop_at = time.monotonic() - started
            phases.append(await load_phase(url, 1, args.after, recorder))
            stop.set()
            await recording
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    figures = analyse(recorder.samples, step_at, drop_at)
    failed = sum(
        n for phase in phases for code, n in phase.status_counts.items() if int(code) != 200
    ) + sum(sum(phase.errors.values()) for phase in phases)
    figures["failed_requests"] = failed
    figures["requests"] = sum(phase.completed for phase in phases)
    low, high = SCALE_DOWN_WINDOW_S
    down = figures["drop_to_scale_down_s"]
    decision = figures["step_to_decision_s"]
    serving = figures["decision_to_first_new_replica_serving_s"]
    figures["meets_targets"] = {
        "decision_s": decision is not None and decision <= TARGETS["decision_s"],
        "serving_after_decision_s": serving is not None
        and serving <= TARGETS["serving_after_decision_s"],
        "failed_requests": failed == 0,
        "scale_down_s": down is not None and low <= down <= high,
        "reversals": figures["reversals"] == 0,
    }
    return {
        "benchmark": "autoscale_reaction",
        "command": "python benchmarks/autoscale_reaction.py " + " ".join(args.argv),
        "machine": machine_info(),
        "settings": {
            "entry_script": "benchmarks/scripts/slow_score.py (run() sleeps 50 ms)",
            "deploymentconfig": DEPLOYMENT_CONFIG,
            "load": {
                "low_clients": 1,
                "high_clients": args.high,
                "before_s": args.before,
                "hold_s": args.hold,
                "after_s": args.after,
            },
            "sample_interval_s": 0.1,
        },
        "figures": figures,
        "targets": TARGETS,
        "phases": [phase.to_dict() for phase in phases],
        "step_at_s": round(step_at, 3),
        "drop_at_s": round(drop_at, 3),
        "samples": [asdict(s) for s in recorder.samples],
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--high", type=int, default=20, help="clients during the step")
    parser.add_argument("--before", type=float, default=10.0, help="seconds at 1 client first")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds at --high clients")
    parser.add_argument("--after", type=float, default=75.0, help="seconds at 1 client after")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    report = uvloop.run(benchmark(args))
    json_path = args.output.with_suffix(".json")
    save_report(json_path, report)
    plot(
        [Sample(**s) for s in report["samples"]],
        report["figures"],
        report["step_at_s"],
        args.output.with_suffix(".png"),
    )
    print(json.dumps(report["figures"], indent=2))
    print(f"wrote {json_path} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
