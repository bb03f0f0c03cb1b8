"""An entry script whose run() takes 50 ms, like a small model on a CPU."""

import time


def init():
    pass


def run(raw_data):
    time.sleep(0.05)
    return {"result": [0.5]}
