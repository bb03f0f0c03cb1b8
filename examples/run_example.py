"""Serve the diabetes example on the scoring runtime: what `python3 dev.py run` starts.

    python examples/run_example.py [--port 5001]

Trains the model first when examples/diabetes/model/diabetes.pkl is missing, prints a
curl line that scores two rows, then replaces itself with the runtime process so Ctrl-C
and SIGTERM reach the server directly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent / "diabetes"
MODEL_DIR = EXAMPLE / "model"
SAMPLE_BODY = (
    '{"data": [[0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018], '
    "[-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092]]}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5001, help="TCP port (default: 5001)")
    port = parser.parse_args().port

    if not (MODEL_DIR / "diabetes.pkl").exists():
        subprocess.run(
            [sys.executable, str(EXAMPLE / "train.py"), "--out", str(MODEL_DIR)], check=True
        )

    print(
        f"scoring the diabetes example on http://localhost:{port}/score; try:\n"
        f"  curl -d '{SAMPLE_BODY}' -H 'Content-Type: application/json' "
        f"localhost:{port}/score\n"
        f"  curl 'localhost:{port}/swagger.json?version=3'",
        flush=True,
    )
    argv = [
        sys.executable,
        "-m",
        "scoring_runtime",
        "--entry-script",
        str(EXAMPLE / "score.py"),
        "--model-dir",
        str(MODEL_DIR),
        "--port",
        str(port),
    ]
    if os.name == "nt":
        # Windows has no exec that keeps the console's signals; wait on a child instead.
        sys.exit(subprocess.call(argv))
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
