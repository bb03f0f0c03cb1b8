"""The runtime's log: one line per event, `key=value`, on stderr.

Entry scripts log through the root logger too (Azure's server shows their `logging`
output), so the handler sits on the root logger at INFO.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("scoring_runtime")


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # uvicorn's own startup chatter would duplicate the ready line.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    # print() in an entry script should reach a piped log as it happens.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def format_fields(**fields: Any) -> str:
    """`key=value` pairs; values with spaces are quoted so the line stays parseable."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def log_event(event: str, level: int = logging.INFO, exc_info: Any = None, **fields: Any) -> None:
    line = f"event={event} {format_fields(**fields)}" if fields else f"event={event}"
    logger.log(level, "%s", line, exc_info=exc_info)
