"""What mlfe's own HTTP protocol saves: mlfe's router on uvicorn's httptools protocol
against the same router on `scoring_runtime.http_protocol`, in one run.

    .venv/bin/python benchmarks/http_protocol.py [--duration 10] [--rounds 5]

Both routers serve the same service (key auth, two versions split 90/10, metrics on) in
front of one `python -m scoring_runtime` replica on loopback TCP, which runs the
mlfe's protocol in both cases; only the router's protocol differs. The same
closed-loop load of 32 connections (benchmarks/loadgen.py) alternates between the two
routers, round after round, so drift on a shared machine hits both. Reported: requests/s
and the router's CPU per request (from /proc), the median round of each, and their ratios.
Results are printed and written to benchmarks/results/http_protocol.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not only as `python -m benchmarks....`
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    free_port,
    machine_info,
    median,
    running,
    save_report,
)
from benchmarks.router_overhead import (  # noqa: E402
    ReplicaAddress,
    measure,
    replica_spec,
    router_spec,
)

RESULT_FILE = ROOT / "benchmarks" / "results" / "http_protocol.json"
PROTOCOLS = ("httptools", "mlfe")


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlfe-bench-"))
    replica = ReplicaAddress(uds=None, port=free_port())
    ports = {name: free_port() for name in PROTOCOLS}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in PROTOCOLS}
    try:
        with (
            running(replica_spec(replica, "replica"), workdir) as replica_server,
            running(
                router_spec(ports["httptools"], replica, "httptools", "httptools"), workdir
            ) as stock,
            running(router_spec(ports["mlfe"], replica, "mlfe", "mlfe"), workdir) as own,
        ):
            routers = {"httptools": stock, "mlfe": own}
            for round_no in range(args.rounds):
                for name, router in routers.items():
                    url = f"http://127.0.0.1:{ports[name]}/api/v1/service/bench/score"
                    pids = [replica_server.pid, router.pid]
                    run = await measure(url, 32, args.duration, args.warmup, pids)
                    load, cpu = run.load, run.server_cpu_s
                    figures = {
                        "rps": round(load.rps, 1),
                        "router_cpu_us_per_request": round(cpu[1] * 1e6 / load.completed, 1),
                        "replica_cpu_us_per_request": round(cpu[0] * 1e6 / load.completed, 1),
                        "p50_ms": load.latency.p50_ms,
                        "p99_ms": load.latency.p99_ms,
                    }
                    rounds[name].append(figures)
                    print(f"round {round_no + 1} {name:<12} {figures}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = {
        name: {
            key: median([r[key] for r in runs])
            for key in ("rps", "router_cpu_us_per_request", "p50_ms", "p99_ms")
        }
        for name, runs in rounds.items()
    }
    before, after = summary["httptools"], summary["mlfe"]
    return {
        "benchmark": "http_protocol",
        "command": "python benchmarks/http_protocol.py " + " ".join(args.argv),
        "machine": machine_info(),
        "connections": 32,
        "duration_s": args.duration,
        "rounds": rounds,
        "median": summary,
        "mlfe_over_httptools": {
            "rps": round(after["rps"] / before["rps"], 3),
            "router_cpu_us_per_request": round(
                after["router_cpu_us_per_request"] / before["router_cpu_us_per_request"], 3
            ),
        },
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULT_FILE)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    report = uvloop.run(benchmark(args))
    save_report(args.output, report)
    for name, figures in report["median"].items():
        print(f"{name:<12} {figures}")
    print(f"mlfe / httptools: {report['mlfe_over_httptools']}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
