"""What the router costs: the same load straight to a replica, through mlfe and through
nginx, in one run.

    .venv/bin/python benchmarks/router_overhead.py [--replica-transport tcp|uds]
                                                   [--duration 10] [--connections 32]
                                                   [--slots 8] [--rounds 5]
                                                   [--open-loads 0.25,0.5] [--open-rounds 3]

One `python -m scoring_runtime` replica serves a no-op entry script on loopback TCP (or
on a Unix socket, as mlfe's local backend runs replicas). The same load
(benchmarks/loadgen.py) goes (1) to the replica directly, (2) through mlfe's router (key
auth, two versions split 90/10, metrics on), (3) through the same router to a second,
identical replica started in a session of its own (as mlfe's local backend started
replicas until it kept them in its session: under the kernel's autogroup scheduling each
session is a scheduling group), (4) through the router run as plain Python, without the
modules setup.py compiles (when they are compiled here), and (5) through nginx as a
keep-alive reverse proxy, when nginx is installed. Every other server stays in the
benchmark's session. Closed-loop rounds at 32 connections give requests/s, the proxy's
CPU time per request (from /proc) and the latency each proxy adds, on which the router's
targets are checked. Open-loop rounds then send the same steady arrival rate to every
system, at a quarter and at half of mlfe's closed-loop rate, for the latency each proxy
adds below saturation. The systems alternate in rounds so drift on a shared machine hits
all of them; the median round is reported. Each round also records how often the proxy
and the replica were on the same CPU, which on a two-core machine moves a proxy's
throughput by up to 2x (PlacementMeter). Results are printed and written to
benchmarks/results/router_overhead_TRANSPORT.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not only as `python -m benchmarks....`
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    CpuMeter,
    MachineMeter,
    PlacementMeter,
    RunningServer,
    ServerSpec,
    busiest_process,
    free_port,
    machine_info,
    median,
    running,
    runtime_argv,
    save_report,
)
from benchmarks.loadgen import LoadConfig, LoadResult, run_load  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "router_overhead"
KEY = "benchmark-primary-key-0123456789abcdef0123"
BODY = b'{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}'
SLOTS = 8
TARGETS = {"router_cpu_us": 100.0, "rps_ratio": 0.6, "added_p50_ms": 0.5, "added_p99_ms": 2.0}

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream replica {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "Healthy"; }}
        location /score {{
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


async def serve_router(port: int, replica: str, http: str = "mlfe", slots: int = SLOTS) -> None:
    """The router process: mlfe's app with one service of two versions on `replica`.

    `http="httptools"` swaps in uvicorn's own protocol (benchmarks/http_protocol.py)."""
    from router.app import create_app
    from router.metrics import RouterMetrics
    from router.registry import Registry, ServiceSpec, VersionSpec
    from router.server import uvicorn_server
    from scoring_runtime.heap import freeze_startup_heap
    from scoring_runtime.listen import bind_tcp

    registry = Registry(RouterMetrics())
    versions = tuple(
        VersionSpec(name, traffic_percentile=share, slots_per_replica=slots, max_queue_wait=5.0)
        for name, share in (("blue", 90.0), ("green", 10.0))
    )
    registry.set_service(
        ServiceSpec("bench", versions, "blue", "key", primary_key=KEY, secondary_key=KEY[::-1])
    )
    for version in ("blue", "green"):
        registry.add_replica("bench", version, "r1", replica)
    server = uvicorn_server(create_app(registry))
    if http == "httptools":
        server.config.http = http  # read when the server starts
    freeze_startup_heap()  # as router/serve.py does
    await server.serve(sockets=[bind_tcp("127.0.0.1", port)])


@dataclass(frozen=True)
class ReplicaAddress:
    """Where the replica listens, in the forms each client names it."""

    uds: Path | None
    port: int | None

    @property
    def runtime_args(self) -> tuple[str, ...]:
        return ("--uds", str(self.uds)) if self.uds else ("--port", str(self.port))

    @property
    def ready_url(self) -> str:
        return f"unix:{self.uds}" if self.uds else f"http://127.0.0.1:{self.port}/"

    @property
    def score_url(self) -> str:
        """For the load generator."""
        return f"unix:{self.uds}:/score" if self.uds else f"http://127.0.0.1:{self.port}/score"

    @property
    def upstream(self) -> str:
        """For mlfe's router and nginx."""
        return f"unix:{self.uds}" if self.uds else f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Round:
    """One measured load: what the clients saw and where the machine's CPU went."""

    load: LoadResult
    server_cpu_s: list[float]  # the replica's, then the proxy's when there is one
    machine_busy: float  # share of both cores' time spent busy, by anything
    # Share of the round the proxy and the replica were last seen on one CPU (None: direct).
    shared_core: float | None = None

    def us_per_request(self, cpu_s: float) -> float:
        return round(cpu_s * 1e6 / max(self.load.completed, 1), 1)


def replica_spec(
    replica: ReplicaAddress, name: str, slots: int = SLOTS, own_session: bool = False
) -> ServerSpec:
    argv = runtime_argv(*replica.runtime_args, "--max-concurrent", str(slots))
    return ServerSpec(name, argv, replica.ready_url, own_session=own_session)


@dataclass(frozen=True)
class Replica:
    address: ReplicaAddress
    server: RunningServer


@dataclass(frozen=True)
class System:
    """What one system's rounds load: its URL, the replica behind it and the proxy, if any."""

    url: str
    replica: RunningServer
    proxy: RunningServer | None


def router_spec(
    port: int,
    replica: ReplicaAddress,
    http: str = "mlfe",
    name: str = "mlfe",
    slots: int = SLOTS,
    script: Path = Path(__file__),
) -> ServerSpec:
    """`script` is this file, or its copy in a plain-Python tree (plain_python_copy)."""
    argv = (
        *(sys.executable, str(script), "--serve-router", str(port)),
        *(replica.upstream, http, str(slots)),
    )
    return ServerSpec(name, argv, f"http://127.0.0.1:{port}/healthz")


def nginx_spec(port: int, replica: ReplicaAddress, workdir: Path) -> ServerSpec | None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        return None
    conf = workdir / "nginx.conf"
    # nginx drops root for its worker (to nobody), which could not open the replica's socket.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, dir=workdir, upstream=replica.upstream, port=port))
    return ServerSpec(
        "nginx",
        (nginx, "-c", str(conf), "-e", str(workdir / "nginx-error.log")),
        f"http://127.0.0.1:{port}/",
    )


async def measure(
    url: str,
    connections: int,
    duration: float,
    warmup: float,
    pids: Sequence[int],
    rate: float | None = None,
) -> Round:
    def config(seconds: float) -> LoadConfig:
        return LoadConfig(
            url=url,
            method="POST",
            body=BODY,
            headers=(("Content-Type", "application/json"), ("Authorization", f"Bearer {KEY}")),
            connections=connections,
            rate=rate,
            duration=seconds,
        )

    await run_load(config(warmup))
    placement = PlacementMeter(busiest_process(pids[1]), pids[0]) if len(pids) > 1 else None
    meter, machine = CpuMeter(pids), MachineMeter()
    result = await run_load(config(duration))
    shared_core = placement.shared_share() if placement is not None else None
    measured = Round(result, meter.seconds(), machine.busy_share(), shared_core)
    failed = {code: n for code, n in result.status_counts.items() if int(code) != 200}
    if failed or result.errors:
        raise RuntimeError(f"{url} did not answer 200: statuses {failed}, errors {result.errors}")
    return measured


def summarize(name: str, runs: list[Round]) -> dict[str, Any]:
    """The median round of one system (by requests/s), with CPU per request."""
    middle = sorted(runs, key=lambda run: run.load.rps)[len(runs) // 2]
    load = middle.load
    summary = {
        "system": name,
        "rps": round(load.rps, 1),
        "p50_ms": load.latency.p50_ms,
        "p99_ms": load.latency.p99_ms,
        "completed": load.completed,
        "status_counts": load.status_counts,
        "errors": load.errors,
        "replica_cpu_us_per_request": middle.us_per_request(middle.server_cpu_s[0]),
        "client_cpu_us_per_request": middle.us_per_request(load.client_cpu_s),
        "machine_busy_share": round(middle.machine_busy, 3),
        "rps_all_rounds": [round(run.load.rps, 1) for run in runs],
    }
    if len(middle.server_cpu_s) > 1:
        summary["proxy_cpu_us_per_request"] = middle.us_per_request(middle.server_cpu_s[1])
        summary["proxy_cpu_us_all_rounds"] = [
            run.us_per_request(run.server_cpu_s[1]) for run in runs
        ]
        summary["shared_core_share_all_rounds"] = [round(run.shared_core or 0.0, 2) for run in runs]
    return summary


def plain_python_copy(workdir: Path) -> Path | None:
    """This benchmark and mlfe's packages as plain Python, without the modules setup.py
    compiled: the router started from it is mlfe as installed where there is no C
    compiler. None when mlfe is not compiled here: both routers would be the same."""
    import router.dataplane

    if not router.dataplane.__file__ or router.dataplane.__file__.endswith(".py"):
        return None
    copy = workdir / "plain"
    for package in ("router", "scoring_runtime", "autoscaler", "benchmarks"):
        shutil.copytree(
            ROOT / package,
            copy / package,
            ignore=shutil.ignore_patterns("*.so", "__pycache__", ".envs", "results"),
        )
    return copy


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlfe-bench-"))
    runs: dict[str, list[Round]] = {}
    open_runs: dict[float, dict[str, list[Round]]] = {}  # by share of mlfe's rate
    try:
        with contextlib.ExitStack() as stack:

            def start(spec: ServerSpec) -> RunningServer:
                return stack.enter_context(running(spec, workdir))

            def start_replica(name: str, own_session: bool = False) -> Replica:
                address = ReplicaAddress(
                    uds=workdir / f"{name}.sock" if args.replica_transport == "uds" else None,
                    port=free_port() if args.replica_transport == "tcp" else None,
                )
                return Replica(address, start(replica_spec(address, name, args.slots, own_session)))

            def start_router(name: str, replica: Replica, script: Path = Path(__file__)) -> System:
                port = free_port()
                spec = router_spec(
                    port, replica.address, name=name, slots=args.slots, script=script
                )
                url = f"http://127.0.0.1:{port}/api/v1/service/bench/score"
                return System(url, replica.server, start(spec))

            replica = start_replica("replica")
            servers = {
                "direct": System(replica.address.score_url, replica.server, None),
                "mlfe": start_router("mlfe", replica),
                "mlfe-replica-own-session": start_router(
                    "mlfe-replica-own-session",
                    start_replica("replica-own-session", own_session=True),
                ),
            }
            plain = plain_python_copy(workdir)
            if plain is not None:
                script = plain / "benchmarks" / Path(__file__).name
                servers["mlfe-python"] = start_router("mlfe-python", replica, script)
            nginx_port = free_port()
            spec = nginx_spec(nginx_port, replica.address, workdir)
            nginx_note = "nginx not installed: skipped" if spec is None else "measured"
            if spec is None:
                print(nginx_note, flush=True)
            else:
                url = f"http://127.0.0.1:{nginx_port}/score"
                servers["nginx"] = System(url, replica.server, start(spec))
            open_rates = await all_rounds(servers, runs, open_runs, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    systems = {name: summarize(name, result) for name, result in runs.items()}
    direct = systems["direct"]
    for name, summary in systems.items():
        if name == "direct":
            continue
        summary["rps_ratio_to_direct"] = round(summary["rps"] / direct["rps"], 3)
        # Each round against the direct round just before it: the machine's drift over a
        # run shows here, where the medians above can come from different minutes.
        summary["rps_ratio_by_round"] = [
            round(run.load.rps / direct_run.load.rps, 3)
            for run, direct_run in zip(runs[name], runs["direct"], strict=True)
        ]
        summary["added_p50_ms"] = round(summary["p50_ms"] - direct["p50_ms"], 3)
        summary["added_p99_ms"] = round(summary["p99_ms"] - direct["p99_ms"], 3)
    open_loop = [
        {"load": load, "rate_per_s": rate, "systems": summarize_open(open_runs[load])}
        for load, rate in open_rates.items()
    ]
    mlfe = systems["mlfe"]
    report: dict[str, Any] = {
        "benchmark": "router_overhead",
        "command": "python benchmarks/router_overhead.py " + " ".join(args.argv),
        "machine": machine_info(),
        "connections": args.connections,
        "replica_transport": args.replica_transport,
        "slots": args.slots,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "nginx": nginx_note,
        "systems": systems,
        "open_loop": open_loop,
        "targets": TARGETS,
        "meets_targets": {
            "router_cpu_us": mlfe["proxy_cpu_us_per_request"] <= TARGETS["router_cpu_us"],
            "rps_ratio": mlfe["rps_ratio_to_direct"] >= TARGETS["rps_ratio"],
            "added_p50_ms": mlfe["added_p50_ms"] <= TARGETS["added_p50_ms"],
            "added_p99_ms": mlfe["added_p99_ms"] <= TARGETS["added_p99_ms"],
        },
        "notes": [
            "The targets are checked as they are stated, on the closed loop at "
            f"{args.connections} connections: every connection sends its next request as soon "
            "as an answer arrives, so each system runs flat out, and its latency is "
            "connections / throughput plus the proxy's stalls.",
            "The open loop sends one steady arrival rate to every system (a share of what "
            "mlfe sustained closed-loop), counting latency from each request's intended send "
            "time: what each proxy adds below saturation. It has no target.",
        ],
    }
    if "mlfe-python" in systems:
        python = systems["mlfe-python"]
        report["compiled_to_plain_python"] = {
            "rps": round(mlfe["rps"] / python["rps"], 3),
            "router_cpu": round(
                mlfe["proxy_cpu_us_per_request"] / python["proxy_cpu_us_per_request"], 3
            ),
        }
    else:
        report["compiled_to_plain_python"] = "mlfe is installed as plain Python here"
    apart = systems["mlfe-replica-own-session"]
    report["replica_own_session_to_same_session"] = {
        "rps": round(apart["rps"] / mlfe["rps"], 3),
        "rps_by_round": [
            round(alone.load.rps / together.load.rps, 3)
            for alone, together in zip(runs["mlfe-replica-own-session"], runs["mlfe"], strict=True)
        ],
        "shared_core_share_by_round": {
            "replica in its own session": apart["shared_core_share_all_rounds"],
            "replica in the router's session": mlfe["shared_core_share_all_rounds"],
        },
    }
    if "nginx" in systems:
        report["mlfe_cpu_to_nginx_cpu"] = round(
            mlfe["proxy_cpu_us_per_request"] / systems["nginx"]["proxy_cpu_us_per_request"], 2
        )
    return report


def summarize_open(runs: dict[str, list[Round]]) -> dict[str, Any]:
    """Per system, the median p50 and p99 over its open-loop rounds at one rate, with
    what each proxy adds to the direct calls' medians."""
    summaries: dict[str, Any] = {}
    for name, rounds_of_system in runs.items():
        summary = {
            "p50_ms": median(run.load.latency.p50_ms for run in rounds_of_system),
            "p99_ms": median(run.load.latency.p99_ms for run in rounds_of_system),
            "rps_all_rounds": [round(run.load.rps, 1) for run in rounds_of_system],
            "p99_ms_all_rounds": [run.load.latency.p99_ms for run in rounds_of_system],
        }
        if name != "direct":
            summary["shared_core_share_all_rounds"] = [
                round(run.shared_core or 0.0, 2) for run in rounds_of_system
            ]
            summary["proxy_cpu_us_all_rounds"] = [
                run.us_per_request(run.server_cpu_s[1]) for run in rounds_of_system
            ]
            direct = summaries["direct"]
            summary["added_p50_ms"] = round(summary["p50_ms"] - direct["p50_ms"], 3)
            summary["added_p99_ms"] = round(summary["p99_ms"] - direct["p99_ms"], 3)
        summaries[name] = summary
    return summaries


async def all_rounds(
    systems: dict[str, System],
    runs: dict[str, list[Round]],
    open_runs: dict[float, dict[str, list[Round]]],
    args: argparse.Namespace,
) -> dict[float, float]:
    """Closed-loop rounds, then open-loop rounds at each share of mlfe's closed-loop rate;
    returns the rate of each share."""
    await rounds(systems, runs, args.rounds, args, None)
    mlfe_rps = median(run.load.rps for run in runs["mlfe"])
    rates = {load: float(max(100, round(mlfe_rps * load, -2))) for load in args.open_loads}
    for load, rate in rates.items():
        await rounds(systems, open_runs.setdefault(load, {}), args.open_rounds, args, rate)
    return rates


async def rounds(
    systems: dict[str, System],
    runs: dict[str, list[Round]],
    count: int,
    args: argparse.Namespace,
    rate: float | None,
) -> None:
    mode = "closed" if rate is None else f"open {rate:.0f}/s"
    width = max(map(len, systems))
    for round_no in range(count):
        for name, system in systems.items():
            pids = [system.replica.pid] + ([system.proxy.pid] if system.proxy else [])
            run = await measure(
                system.url, args.connections, args.duration, args.warmup, pids, rate
            )
            runs.setdefault(name, []).append(run)
            load = run.load
            shared = "" if run.shared_core is None else f", one core {run.shared_core:.0%}"
            print(
                f"round {round_no + 1} {mode:<12} {name:<{width}} {load.rps:9.0f} req/s "
                f"p50 {load.latency.p50_ms:.2f} ms p99 {load.latency.p99_ms:.2f} ms "
                f"machine {run.machine_busy:.0%} busy{shared}",
                flush=True,
            )


def print_table(report: dict[str, Any]) -> None:
    width = max(map(len, report["systems"]))
    print(
        f"\n{'system':<{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'proxy CPU µs/req':>17} {'rps/direct':>11}"
    )
    for name, s in report["systems"].items():
        cpu = s.get("proxy_cpu_us_per_request", "")
        ratio = s.get("rps_ratio_to_direct", "")
        print(
            f"{name:<{width}} {s['rps']:>9} {s['p50_ms']:>8} {s['p99_ms']:>8} {cpu!s:>17} "
            f"{ratio!s:>11}"
        )
    for open_loop in report["open_loop"]:
        rate, load = open_loop["rate_per_s"], open_loop["load"]
        print(f"\nopen loop at {rate:.0f} req/s ({load} of mlfe's closed loop):")
        for name, s in open_loop["systems"].items():
            added = (
                f"  added p50 {s['added_p50_ms']} p99 {s['added_p99_ms']}"
                if name != "direct"
                else ""
            )
            print(f"{name:<{width}} p50 {s['p50_ms']:>7} ms  p99 {s['p99_ms']:>7} ms{added}")
    print(f"targets met (closed loop): {report['meets_targets']}")


def _shares(text: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not all(0 < share <= 1 for share in shares):
        raise argparse.ArgumentTypeError(f"shares must be in (0, 1]: {text!r}")
    return shares


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--slots",
        type=int,
        default=SLOTS,
        help="the replica's --max-concurrent and the router's slots per replica",
    )
    parser.add_argument(
        "--open-loads",
        type=_shares,
        default=(0.25, 0.5),
        help="open-loop arrival rates, as shares of mlfe's closed-loop requests/s "
        "(comma-separated; default 0.25,0.5)",
    )
    parser.add_argument("--open-rounds", type=int, default=3, help="open-loop rounds per rate")
    parser.add_argument(
        "--replica-transport",
        choices=("tcp", "uds"),
        default="tcp",
        help="how every client reaches the replica: loopback TCP (as the load generator "
        "reaches the proxies) or a Unix socket (as mlfe's local backend runs replicas)",
    )
    parser.add_argument(
        "--output", type=Path, help="default: benchmarks/results/router_overhead_TRANSPORT.json"
    )
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.output is None:
        args.output = RESULTS.with_name(f"router_overhead_{args.replica_transport}.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-router"]:
        uvloop.run(serve_router(int(argv[1]), argv[2], argv[3], int(argv[4])))
        return 0
    args = parse_args(argv)
    report = uvloop.run(benchmark(args))
    save_report(args.output, report)
    print_table(report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
