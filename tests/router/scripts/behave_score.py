"""A replica whose behaviour each request chooses: sleep, record, exit, echo."""

import json
import os
import time


def init():
    pass


def run(raw_data):
    request = json.loads(raw_data) if raw_data else {}
    if "record" in request:
        with open(request["record"], "a") as log:
            log.write(f"{request.get('echo')}\n")
    if "sleep" in request:
        time.sleep(request["sleep"])
    if request.get("exit"):
        os._exit(1)
    return {
        "pid": os.getpid(),
        "version": os.environ.get("MLFE_TEST_VERSION"),
        "echo": request.get("echo"),
    }
