"""run(seconds) sleeps; it reports how many calls overlapped and when calls ended."""

import threading
import time

lock = threading.Lock()
state = {"in_flight": 0, "max_in_flight": 0, "last_end": None}


def init():
    pass


def run(raw_data):
    seconds = float(raw_data or 0)
    started = time.monotonic()
    with lock:
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        previous_end = state["last_end"]
    time.sleep(seconds)
    with lock:
        state["in_flight"] -= 1
        state["last_end"] = time.monotonic()
        max_in_flight = state["max_in_flight"]
    return {
        "started": started,
        "previous_end": previous_end,
        "max_in_flight": max_in_flight,
    }
