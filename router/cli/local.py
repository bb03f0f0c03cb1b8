"""The commands that run something on this machine: `mlfe serve` and `mlfe run-local`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from router import serve_settings
from router.cli.deployment import read_json_file
from router.cli.errors import CliError, UsageError

LocalCommand = Callable[[argparse.Namespace], int]


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the router in the foreground until SIGINT or SIGTERM."""
    # Imported here: the server pulls in uvicorn, Starlette and the backends, which
    # every other command would pay for at start.
    from router.serve import run

    try:
        settings = serve_settings.settings_from(args, os.environ)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return run(settings)


def run_local_argv(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The `python -m scoring_runtime` command line and environment for `mlfe run-local`."""
    from router.config import ConfigError, parse_deployment_config, parse_inference_config

    argv = [sys.executable, "-m", "scoring_runtime"]
    environment = dict(os.environ)
    entry_script, source_dir = args.entry_script, args.source_dir
    max_concurrent, timeout_ms = args.max_concurrent, args.scoring_timeout_ms
    try:
        if args.ic:
            inference = parse_inference_config(
                read_json_file(args.ic, "inference configuration"),
                base_dir=Path(args.ic).absolute().parent,
            )
            if inference.replica_urls:
                raise CliError(
                    f"run-local runs an entry script, but {args.ic} lists replicaUrls"
                    " (replicas that run elsewhere): deploy it with `mlfe deploy` instead"
                )
            entry_script = entry_script or str(inference.entry_script)
            source_dir = source_dir or str(inference.source_directory)
            environment.update(inference.environment_variables)
        if args.dc:
            deployment = parse_deployment_config(
                read_json_file(args.dc, "deployment configuration")
            )
            max_concurrent = max_concurrent or deployment.max_concurrent_requests_per_container
            timeout_ms = timeout_ms or deployment.scoring_timeout_ms
            environment.update(deployment.environment_variables)
    except ConfigError as error:
        raise CliError(str(error)) from None
    if not entry_script:
        raise UsageError("run-local: give --entry-script or --ic")
    argv += ["--entry-script", entry_script]
    if source_dir:
        argv += ["--source-dir", source_dir]
    if args.model_dir:
        argv += ["--model-dir", args.model_dir]
    for model in args.models:
        argv += ["--model", model]
    if args.uds:
        argv += ["--uds", args.uds]
    else:
        argv += ["--port", str(args.port)]
        if args.host:
            argv += ["--host", args.host]
    if max_concurrent:
        argv += ["--max-concurrent", str(max_concurrent)]
    if timeout_ms:
        argv += ["--scoring-timeout-ms", str(timeout_ms)]
    if args.cors_origins is not None:
        argv += ["--cors-origins", args.cors_origins]
    return argv, environment


def cmd_run_local(args: argparse.Namespace) -> int:
    """One replica in the foreground: the scoring runtime replaces this process."""
    argv, environment = run_local_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":
        # Windows has no exec that keeps the console's signals; wait on a child instead.
        return subprocess.call(argv, env=environment)
    os.execve(sys.executable, argv, environment)
