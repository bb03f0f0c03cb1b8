"""A replica whose init() takes a while (SLOW_INIT_SECONDS, default 1), so a deployment
stays Transitioning long enough to be seen."""

import json
import os
import time


def init():
    time.sleep(float(os.environ.get("SLOW_INIT_SECONDS", "1")))


def run(raw_data):
    return {"pid": os.getpid(), "echo": json.loads(raw_data or "{}").get("echo")}
