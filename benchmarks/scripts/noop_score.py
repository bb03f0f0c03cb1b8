"""A trivial Azure ML entry script: the cost of serving it is the server's alone.

Undecorated on purpose (no inference-schema), as many Azure scripts are: run() gets the
request body as a string.
"""

from __future__ import annotations


def init() -> None:
    """Nothing to load."""


def run(raw_data: str) -> dict[str, list[float]]:
    return {"result": [0.5]}
