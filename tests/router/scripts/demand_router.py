"""A stand-in router pod for demand aggregation: serves `GET /internal/demand` with the
JSON in $DEMAND, and `GET /` for its readiness probe. With MODE=silent it accepts the
demand request and never answers, like a router pod that hangs.

    python demand_router.py --host 127.0.0.1 --port 8080
"""

import argparse
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/internal/demand"):
            if os.environ.get("MODE") == "silent":
                time.sleep(30)
                return
            body = os.environ.get("DEMAND", "{}").encode()
        else:
            body = b"Healthy"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
