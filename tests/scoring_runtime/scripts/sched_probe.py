"""Reports the Linux scheduling policy of the thread running init() and of the one
running run()."""

import os

state = {}


def _policy():
    return "batch" if os.sched_getscheduler(0) == os.SCHED_BATCH else "other"


def init():
    state["init"] = _policy()


def run(raw_data):
    return {**state, "run": _policy()}
