"""mlfe's scoring runtime against Azure's azureml-inference-server-http, in one run.

    .venv/bin/python benchmarks/runtime_vs_azmlinfsrv.py [--duration 10] [--warmup 2]
                                                         [--rounds 3]

Both servers run the same trivial entry script (benchmarks/scripts/noop_score.py) with
one worker each, and get the same closed-loop load (1 and 8 connections) from
benchmarks/loadgen.py, alternating between the two so drift on a shared machine hits
both, for several rounds. The server's CPU time comes from /proc (utime + stime of its
whole process tree: gunicorn's master and worker count together) and is divided by the
responses served. Each round's ratios compare two measurements taken seconds apart; the
verdict uses the median round, because one round can land on a noisy moment of a shared
machine.

Azure's server is installed from the package index into benchmarks/.envs/azmlinfsrv on
first use. Results are printed and written to benchmarks/results/runtime_vs_azmlinfsrv.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file, not only as `python -m benchmarks....`
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    NOOP_SCRIPT,
    CpuMeter,
    RunningServer,
    ServerSpec,
    free_port,
    machine_info,
    median,
    running,
    runtime_argv,
    save_report,
)
from benchmarks.loadgen import LoadConfig, LoadResult, run_load  # noqa: E402

ENTRY_SCRIPT = NOOP_SCRIPT
AZURE_ENV = ROOT / "benchmarks" / ".envs" / "azmlinfsrv"
AZURE_PACKAGE = "azureml-inference-server-http"
RESULT_FILE = ROOT / "benchmarks" / "results" / "runtime_vs_azmlinfsrv.json"
BODY = b'{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}'
HEADERS = (("Content-Type", "application/json"),)
CPU_TARGET_RATIO = 0.25


# ---------------------------------------------------------------------------------------
# Azure's server, installed on demand


class InstallError(RuntimeError):
    """Azure's server could not be installed; the message says why."""


def ensure_azmlinfsrv() -> Path:
    """Return the azmlinfsrv executable, creating its own virtualenv when missing."""
    executable = AZURE_ENV / "bin" / "azmlinfsrv"
    if executable.exists():
        return executable
    print(f"installing {AZURE_PACKAGE} into {AZURE_ENV.relative_to(ROOT)}", flush=True)
    # Built from the interpreter running this script, so both servers run the same Python.
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(AZURE_ENV)],
        [str(AZURE_ENV / "bin" / "python"), "-m", "pip", "install", "-q", AZURE_PACKAGE],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise InstallError(f"{' '.join(step)} failed (exit {done.returncode}):\n{tail}")
    if not executable.exists():
        raise InstallError(f"{AZURE_PACKAGE} installed but {executable} is missing")
    return executable


def package_version(python: Path | str, package: str) -> str:
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------------------
# Servers under test


def mlfe_spec(port: int, model_dir: Path) -> ServerSpec:
    argv = runtime_argv("--model-dir", str(model_dir), "--port", str(port))
    return ServerSpec("mlfe", argv, f"http://127.0.0.1:{port}/")


def azure_spec(executable: Path, port: int, model_dir: Path) -> ServerSpec:
    argv: tuple[str, ...] = (
        str(executable),
        "--entry_script",
        str(ENTRY_SCRIPT),
        "--model_dir",
        str(model_dir),
    )
    argv += ("--port", str(port), "--worker_count", "1")
    return ServerSpec("azmlinfsrv", argv, f"http://127.0.0.1:{port}/")


def base_url(server: RunningServer) -> str:
    return server.spec.ready_url.rstrip("/")


# ---------------------------------------------------------------------------------------
# Measurement


@dataclass(frozen=True)
class Measurement:
    server: str
    connections: int
    round: int
    load: LoadResult
    server_cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s * 1e6 / max(self.load.completed, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "connections": self.connections,
            "round": self.round,
            "rps": round(self.load.rps, 1),
            "p50_ms": self.load.latency.p50_ms,
            "p99_ms": self.load.latency.p99_ms,
            "cpu_us_per_request": round(self.cpu_us_per_request, 1),
            "server_cpu_s": round(self.server_cpu_s, 3),
            "server_cpu_cores": round(self.server_cpu_s / self.load.elapsed_s, 3),
            "load": self.load.to_dict(),
        }


async def measure(
    server: RunningServer, connections: int, round_no: int, warmup_s: float, duration_s: float
) -> Measurement:
    def config(duration: float) -> LoadConfig:
        return LoadConfig(
            url=base_url(server) + "/score",
            method="POST",
            body=BODY,
            headers=HEADERS,
            connections=connections,
            duration=duration,
        )

    # Warmup is its own run so the CPU snapshot brackets exactly the measured requests.
    await run_load(config(warmup_s))
    meter = CpuMeter([server.pid])
    load = await run_load(config(duration_s))
    return Measurement(server.spec.name, connections, round_no, load, meter.seconds()[0])


def check_answers(server: RunningServer) -> dict[str, Any]:
    """One request by hand, so a misconfigured server fails loudly instead of fast."""
    response = httpx.post(
        base_url(server) + "/score", content=BODY, headers=dict(HEADERS), timeout=10.0
    )
    if response.status_code != 200:
        raise RuntimeError(
            f"{server.spec.name} answered {response.status_code}: {response.text[:300]}"
        )
    return {"status": response.status_code, "body": response.text}


def ratios(mlfe: Measurement, azure: Measurement) -> dict[str, float]:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else float("nan")

    return {
        "cpu_per_request": ratio(mlfe.cpu_us_per_request, azure.cpu_us_per_request),
        "rps": ratio(mlfe.load.rps, azure.load.rps),
        "p50": ratio(mlfe.load.latency.p50_ms, azure.load.latency.p50_ms),
        "p99": ratio(mlfe.load.latency.p99_ms, azure.load.latency.p99_ms),
    }


def median_ratios(measurements: list[Measurement], connections: int) -> dict[str, Any]:
    """Each round's mlfe/azure ratios at `connections`, and their medians."""
    by_round: dict[int, dict[str, Measurement]] = {}
    for m in measurements:
        if m.connections == connections:
            by_round.setdefault(m.round, {})[m.server] = m
    rounds = [ratios(pair["mlfe"], pair["azmlinfsrv"]) for _, pair in sorted(by_round.items())]
    row: dict[str, Any] = {key: median(r[key] for r in rounds) for key in rounds[0]}
    row["cpu_per_request_all_rounds"] = [r["cpu_per_request"] for r in rounds]
    return row


def median_figures(
    measurements: list[Measurement], server: str, connections: int
) -> dict[str, float]:
    """One server's medians over the rounds at `connections`."""
    runs = [m for m in measurements if m.server == server and m.connections == connections]
    return {
        "rps": median(m.load.rps for m in runs),
        "p50_ms": median(m.load.latency.p50_ms for m in runs),
        "p99_ms": median(m.load.latency.p99_ms for m in runs),
        "cpu_us_per_request": round(median(m.cpu_us_per_request for m in runs), 1),
    }


def print_table(
    medians: dict[int, dict[str, dict[str, float]]], ratio_rows: dict[int, dict[str, Any]]
) -> None:
    header = (
        f"{'conns':>5}  {'server':<11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}"
    )
    print(f"medians over the rounds\n{header}")
    print("-" * len(header))
    for connections, row in ratio_rows.items():
        for server, m in medians[connections].items():
            print(
                f"{connections:>5}  {server:<11} {m['rps']:>9.1f} {m['p50_ms']:>8.3f} "
                f"{m['p99_ms']:>8.3f} {m['cpu_us_per_request']:>11.1f}"
            )
        print(
            f"{connections:>5}  {'mlfe/azure':<11} {row['rps']:>8.2f}x {row['p50']:>7.2f}x "
            f"{row['p99']:>7.2f}x {row['cpu_per_request']:>10.3f}x"
            f"   rounds: {', '.join(f'{r:.3f}' for r in row['cpu_per_request_all_rounds'])}"
        )


async def benchmark(args: argparse.Namespace) -> int:
    try:
        azure_executable = ensure_azmlinfsrv()
    except InstallError as exc:
        print(f"cannot install {AZURE_PACKAGE}: {exc}", file=sys.stderr)
        return 2
    info = machine_info()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="mlfe-bench-") as scratch:
        work = Path(scratch)
        model_dir = work / "model"
        model_dir.mkdir()
        specs = [
            mlfe_spec(free_port(), model_dir),
            azure_spec(azure_executable, free_port(), model_dir),
        ]
        with contextlib.ExitStack() as stack:
            servers = []
            for spec in specs:
                servers.append(stack.enter_context(running(spec, work)))
            answers = {server.spec.name: check_answers(server) for server in servers}
            for round_no in range(1, args.rounds + 1):
                for index, connections in enumerate(args.connections):
                    # ABBA order: whichever server goes second gets the other's drift as often.
                    order = servers if (round_no + index) % 2 else list(reversed(servers))
                    for server in order:
                        m = await measure(server, connections, round_no, args.warmup, args.duration)
                        measurements.append(m)
                        print(
                            f"round {round_no} {server.spec.name:<10} connections={connections} "
                            f"{m.load.rps:8.0f} req/s {m.cpu_us_per_request:7.1f} CPU µs/req",
                            flush=True,
                        )
    ratio_rows = {c: median_ratios(measurements, c) for c in args.connections}
    medians = {
        c: {name: median_figures(measurements, name, c) for name in ("mlfe", "azmlinfsrv")}
        for c in args.connections
    }
    print_table(medians, ratio_rows)
    worst = max(row["cpu_per_request"] for row in ratio_rows.values())
    met = worst <= CPU_TARGET_RATIO
    print(
        f"target: mlfe CPU/request <= {CPU_TARGET_RATIO} x azmlinfsrv (median round): "
        f"worst {worst:.3f} -> {'met' if met else 'MISSED'}"
    )
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document = {
        "benchmark": "runtime_vs_azmlinfsrv",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "versions": {
            AZURE_PACKAGE: package_version(AZURE_ENV / "bin" / "python", AZURE_PACKAGE),
            "gunicorn": package_version(AZURE_ENV / "bin" / "python", "gunicorn"),
            "mlfe": package_version(sys.executable, "mlfe"),
            "uvicorn": package_version(sys.executable, "uvicorn"),
        },
        "settings": {
            "entry_script": str(ENTRY_SCRIPT.relative_to(ROOT)),
            "request": {"method": "POST", "path": "/score", "body": BODY.decode()},
            "mode": "closed loop",
            "connections": list(args.connections),
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "workers": 1,
            "cpu": "utime+stime (+ reaped children) of the server's process tree, /proc",
            "client": "benchmarks/loadgen.py in this process (uvloop); its CPU is not counted",
        },
        "notes": [
            "azmlinfsrv runs gunicorn's sync worker, which closes the connection after every"
            " response, so its clients open one socket per request (see load.sockets_opened);"
            " mlfe's runtime keeps connections alive. Both are what any client of each gets.",
            "The machine may be shared: compare the ratios, measured minutes apart in one run,"
            " rather than absolute figures across runs.",
        ],
        "answers": answers,
        "medians": {str(c): row for c, row in medians.items()},
        "ratios_mlfe_over_azure": {str(c): row for c, row in ratio_rows.items()},
        "runs": [m.to_dict() for m in measurements],
        "target": {"cpu_per_request_ratio_max": CPU_TARGET_RATIO, "worst": worst, "met": met},
    }
    save_report(args.output, document)
    print(f"wrote {args.output}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="mlfe scoring runtime vs azmlinfsrv")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median one counts")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 8],
        help="comma-separated closed-loop connection counts (default 1,8)",
    )
    parser.add_argument("--output", type=Path, default=RESULT_FILE)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(benchmark(args))
    return uvloop.run(benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
