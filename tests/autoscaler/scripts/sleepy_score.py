"""A replica whose init() takes INIT_SECONDS and whose run() sleeps as each request asks.

With CRASH_AFTER set, the process exits with code 1 that many seconds after init().
With GRANDCHILD_PIDFILE set, init() also starts a long `sleep` process of its own and
appends its pid to that file, so tests can check that a replica's whole group is stopped.
"""

import json
import os
import subprocess
import threading
import time


def init():
    time.sleep(float(os.environ.get("INIT_SECONDS", "0")))
    pidfile = os.environ.get("GRANDCHILD_PIDFILE")
    if pidfile:
        grandchild = subprocess.Popen(["sleep", "60"])
        with open(pidfile, "a") as out:
            out.write(f"{grandchild.pid}\n")
    crash_after = os.environ.get("CRASH_AFTER")
    if crash_after:
        threading.Timer(float(crash_after), os._exit, (1,)).start()


def run(raw_data):
    request = json.loads(raw_data) if raw_data else {}
    time.sleep(float(request.get("sleep", 0)))
    return {"pid": os.getpid(), "tag": os.environ.get("TAG")}
