"""`python -m scoring_runtime`: one replica serving one Azure ML entry script.

Order matters: configuration, model layout, script import and init() all happen before
the socket is bound, so a replica that accepts connections is ready. Any failure before
that logs its traceback and exits with code 3 (as Azure's server does) without binding.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scoring_runtime import azureml_shim
from scoring_runtime.config import RuntimeConfig, parse_config
from scoring_runtime.cors import CorsPolicy
from scoring_runtime.heap import freeze_startup_heap
from scoring_runtime.invoke import Invoker
from scoring_runtime.listen import bind_tcp, bind_unix, raise_open_files_limit, serve
from scoring_runtime.loader import EntryScript, ScriptLoadError, load_entry_script, run_init
from scoring_runtime.log import configure_logging, log_event
from scoring_runtime.metrics import RuntimeMetrics
from scoring_runtime.models import ModelLayoutError, model_directory
from scoring_runtime.server import ScoringApp
from scoring_runtime.slots import ScoringSlots
from scoring_runtime.swagger_documents import SwaggerDocuments, SwaggerFileError

EXIT_STARTUP_FAILED = 3
EXIT_BIND_FAILED = 1
# Every in-flight request answers within the scoring timeout (result or 500), so a
# shutdown waits that long, but never more than this for a replica told to stop.
_GRACEFUL_SHUTDOWN_CAP_S = 60.0
_MODEL_LISTING_LIMIT = 50


class _StopRequested(BaseException):
    """SIGTERM/SIGINT arrived before serving started (the server handles them after)."""


def _stop_requested(signum: int, frame: object) -> None:
    raise _StopRequested


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv, os.environ)
    configure_logging()
    # A replica told to stop while init() runs must still remove its model folder.
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    try:
        with model_directory(config.model_dir, config.models) as model_dir:
            return _run(config, model_dir)
    except ModelLayoutError as error:
        log_event("startup_failed", logging.ERROR, reason=error)
        return EXIT_STARTUP_FAILED
    except _StopRequested:
        log_event("stopped", pid=os.getpid(), before="ready")
        return 0


def _run(config: RuntimeConfig, model_dir: str | None) -> int:
    if model_dir is not None:
        os.environ["AZUREML_MODEL_DIR"] = model_dir
    # Azure's server exposes the script's absolute path the same way.
    os.environ["AZUREML_ENTRY_SCRIPT"] = str(config.entry_script)
    shimmed = azureml_shim.install()

    try:
        script = load_entry_script(config.entry_script, config.source_dir)
    except ScriptLoadError as error:
        log_event("load_failed", logging.ERROR, exc_info=error.__cause__, reason=error)
        return EXIT_STARTUP_FAILED
    log_event(
        "script_loaded",
        script=config.entry_script,
        mode=script.mode.value,
        azureml_shim=",".join(shimmed) or "none",
    )
    try:
        run_init(script)
    except _StopRequested:
        raise
    except BaseException as error:
        log_event("init_failed", logging.ERROR, exc_info=error, script=config.entry_script)
        _list_model_dir(model_dir)
        return EXIT_STARTUP_FAILED
    try:
        swagger = SwaggerDocuments(
            script.run, config.source_dir, config.service_name, config.service_version
        )
    except SwaggerFileError as error:
        log_event("swagger_file_invalid", logging.ERROR, reason=error)
        return EXIT_STARTUP_FAILED
    return _serve(config, script, swagger)


def _serve(config: RuntimeConfig, script: EntryScript, swagger: SwaggerDocuments) -> int:
    slots = ScoringSlots(config.max_concurrent, config.scoring_timeout_ms / 1000.0)
    app = ScoringApp(
        invoker=Invoker(script),
        mode=script.mode,
        slots=slots,
        swagger=swagger,
        metrics=RuntimeMetrics(slots),
        cors=CorsPolicy.from_origins(config.cors_origins),
        scoring_timeout_ms=config.scoring_timeout_ms,
    )
    before, after = raise_open_files_limit()
    if after != before:
        log_event("open_files_limit_raised", logging.DEBUG, before=before, after=after)
    try:
        sock = _bind(config)
    except OSError as error:
        log_event("bind_failed", logging.ERROR, reason=error)
        return EXIT_BIND_FAILED
    where: dict[str, Any]
    if config.uds is not None:
        where = {"uds": config.uds}
    else:
        host, port = sock.getsockname()[:2]
        where = {"host": host, "port": port}

    def on_ready() -> None:
        log_event(
            "ready",
            pid=os.getpid(),
            **where,
            mode=script.mode.value,
            slots=config.max_concurrent,
            timeout_ms=config.scoring_timeout_ms,
        )

    freeze_startup_heap()  # the model init() loaded included
    try:
        graceful_s = min(config.scoring_timeout_ms / 1000.0 + 1.0, _GRACEFUL_SHUTDOWN_CAP_S)
        serve(app, sock, on_ready, graceful_s)
    finally:
        slots.close()
        sock.close()
        if config.uds is not None:
            with contextlib.suppress(OSError):
                os.unlink(config.uds)
    log_event("stopped", pid=os.getpid())
    return 0


def _bind(config: RuntimeConfig) -> socket.socket:
    if config.uds is not None:
        return bind_unix(config.uds)
    assert config.port is not None
    return bind_tcp(config.host, config.port)


def _list_model_dir(model_dir: str | None) -> None:
    """Show what init() could see: most init() failures are a model path that is wrong."""
    if not model_dir or not os.path.isdir(model_dir):
        log_event("model_dir", logging.INFO, path=model_dir or "unset", exists=False)
        return
    root = Path(model_dir)
    entries = (path for path in sorted(root.rglob("*")) if path.is_file() or path.is_symlink())
    for path in itertools.islice(entries, _MODEL_LISTING_LIMIT):
        log_event("model_dir_file", path=path.relative_to(root))


if __name__ == "__main__":
    sys.exit(main())
