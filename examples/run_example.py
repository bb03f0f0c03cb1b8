"""Serve the diabetes example through mlfe: what `python3 dev.py run` starts.

    python examples/run_example.py [--port 8080] [--state-dir .mlfe]

Trains the model when examples/diabetes/model/diabetes.pkl is missing, starts
`mlfe serve` with its state in .mlfe/ of the repository, deploys examples/diabetes as
the service `diabetes` with `mlfe deploy` (unless an earlier run did: mlfe restores its
services on start), waits until it is Healthy, prints a curl line with the service key,
and serves in the foreground until Ctrl-C or SIGTERM, which it passes on to the server
so no replica outlives it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from router.cli import (
    HEALTHY,
    CliError,
    ManageClient,
    Progress,
    report_outcome,
    resolve_admin_key,
    wait_until_settled,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "diabetes"
MODEL_FILE = EXAMPLE / "model" / "diabetes.pkl"
SERVICE = "diabetes"
SAMPLE_BODY = (
    '{"data": [[0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018], '
    "[-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092]]}"
)
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 90.0
LOG_TAIL_LINES = 30


class Server:
    """`mlfe serve` as a child process that gets exactly the signals this script gets."""

    def __init__(self, host: str, port: int, state_dir: Path) -> None:
        self.url = f"http://{host}:{port}"
        self.log_path = state_dir / "serve.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches this script only, and is
            # forwarded once, rather than reaching the server twice (a second SIGINT
            # would make it skip the graceful shutdown that stops the replicas).
            self.process = subprocess.Popen(
                [
                    *mlfe_command(),
                    "serve",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--state-dir",
                    str(state_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=os.name != "nt",
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CliError(f"mlfe serve exited with code {self.process.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise CliError(f"mlfe serve did not answer on {self.url} in {SERVER_START_TIMEOUT_S:g} s")

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self) -> int:
        """Stop gracefully (the server drains and stops its replicas); its exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])


def mlfe_command() -> list[str]:
    """`mlfe` as this interpreter runs it, so the example works without activating .venv."""
    return [sys.executable, "-m", "router.cli"]


def ensure_model() -> None:
    if not MODEL_FILE.exists():
        subprocess.run(
            [sys.executable, str(EXAMPLE / "train.py"), "--out", str(MODEL_FILE.parent)],
            check=True,
        )


def deploy_argv(url: str, state_dir: Path) -> list[str]:
    return [
        "--url",
        url,
        "--state-dir",
        str(state_dir),
        "deploy",
        "-n",
        SERVICE,
        "--ic",
        str(EXAMPLE / "inferenceconfig.json"),
        "--dc",
        str(EXAMPLE / "deploymentconfig.json"),
        "-m",
        f"diabetes:1:{MODEL_FILE}",
    ]


def ensure_deployed(client: ManageClient, url: str, state_dir: Path) -> bool:
    """Deploy the example unless the server restored it; True once it is Healthy."""
    if SERVICE not in {service["name"] for service in client.services()}:
        argv = deploy_argv(url, state_dir)
        print("+ mlfe " + shlex.join(argv), flush=True)
        return subprocess.call([*mlfe_command(), *argv], stdout=subprocess.DEVNULL) == 0
    print(f"service {SERVICE} was restored from {state_dir}", flush=True)
    progress = Progress(sys.stderr)
    view = wait_until_settled(client, SERVICE, timeout=600.0, progress=progress)
    return report_outcome(client, view, progress) == 0 and view["state"] == HEALTHY


def print_usage(client: ManageClient, url: str, state_dir: Path) -> None:
    view = client.service(SERVICE)
    key = client.keys(SERVICE)["primaryKey"]
    scoring_uri = view["scoringUri"]
    print(
        f"\nmlfe serves the diabetes example at {scoring_uri}\n"
        "score two rows:\n"
        f"  curl -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json'"
        f" -d '{SAMPLE_BODY}' {scoring_uri}\n"
        "its OpenAPI document:\n"
        f"  curl {view['swaggerUri']}\n"
        "manage it with the CLI:\n"
        f"  export MLFE_URL={url} MLFE_STATE_DIR={shlex.quote(str(state_dir))}\n"
        f"  .venv/bin/mlfe service show {SERVICE}\n"
        f"server log: {state_dir / 'serve.log'}; Ctrl-C stops mlfe"
        " (the service is kept and restored on the next run)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=ROOT / ".mlfe",
        help="mlfe's state folder (default: .mlfe in the repository)",
    )
    args = parser.parse_args()
    state_dir = args.state_dir.absolute()
    ensure_model()

    server = Server(args.host, args.port, state_dir)
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        server.signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    try:
        server.wait_ready()
        admin_key = resolve_admin_key(None, str(state_dir), os.environ)
        with ManageClient(server.url, admin_key) as client:
            if not ensure_deployed(client, server.url, state_dir):
                raise CliError(
                    f"service {SERVICE} is not Healthy (see above); to deploy it afresh:"
                    f" .venv/bin/mlfe --state-dir {shlex.quote(str(state_dir))}"
                    f" --url {server.url} service delete {SERVICE}"
                )
            print_usage(client, server.url, state_dir)
        code = server.process.wait()
    except CliError as error:
        if not stopping:
            print(f"error: {error}", file=sys.stderr)
            tail = server.log_tail()
            if tail:
                print(f"last lines of {server.log_path}:\n{tail}", file=sys.stderr)
        code = 1
    finally:
        # Whatever happened, no server (and so no replica) is left behind.
        stopped = server.stop()
    if stopping:
        return 0 if stopped in (0, -signal.SIGTERM, -signal.SIGINT) else stopped
    return code


if __name__ == "__main__":
    sys.exit(main())
