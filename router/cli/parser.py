"""The `mlfe` command line's grammar: commands, their flags, and the function each runs.

Client commands take --url, --admin-key, --state-dir and --json before or after the
command name; `serve` and `run-local` run here and take their own flags.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from router import serve_settings
from router.cli.client import DEFAULT_URL
from router.cli.commands import (
    ClientCommand,
    cmd_create_version,
    cmd_delete_version,
    cmd_deploy,
    cmd_service_delete,
    cmd_service_keys,
    cmd_service_list,
    cmd_service_logs,
    cmd_service_regen_key,
    cmd_service_show,
    cmd_service_token,
    cmd_service_update,
    cmd_update_version,
)
from router.cli.deployment import model_argument
from router.cli.local import cmd_run_local, cmd_serve

DEFAULT_RUN_LOCAL_PORT = 5001
DEFAULT_WAIT_TIMEOUT_S = 600.0
DEFAULT_LOG_TAIL = 100


def percent(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage")
    return int(value) if value.is_integer() else value


def key_type(text: str) -> str:
    for choice in ("Primary", "Secondary"):
        if text.lower() == choice.lower():
            return choice
    raise argparse.ArgumentTypeError(f"{text!r} is not Primary or Secondary")


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The flags every client command takes, before or after the command name.

    On the subcommands they default to SUPPRESS so that a flag given before the command
    is not overwritten by the subcommand's default.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--url",
        default=default(None),
        help=f"the mlfe router (env MLFE_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--admin-key",
        default=default(None),
        help="the management API key (env MLFE_ADMIN_KEY; default: STATE/admin.key)",
    )
    parser.add_argument(
        "--state-dir",
        default=default(None),
        help="the folder of `mlfe serve` (env MLFE_STATE_DIR; default ~/.mlfe)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of text",
    )


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait", action="store_true", help="return at once instead of waiting to settle"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT_S,
        help=f"seconds to wait for the service to settle (default {DEFAULT_WAIT_TIMEOUT_S:g})",
    )


def _deployment_flags(parser: argparse.ArgumentParser, *, require_ic: bool) -> None:
    parser.add_argument(
        "--ic",
        "--inference-config",
        dest="ic",
        required=require_ic,
        metavar="FILE",
        help="inferenceconfig.json (entryScript, sourceDirectory, environment; or"
        " replicaUrls of replicas that run elsewhere, with no models)",
    )
    parser.add_argument(
        "--dc",
        "--deployment-config",
        dest="dc",
        metavar="FILE",
        help="deploymentconfig.json (Azure's AKS keys)",
    )
    models = parser.add_mutually_exclusive_group()
    models.add_argument(
        "-m",
        "--model",
        dest="models",
        action="append",
        default=[],
        type=model_argument,
        metavar="NAME:VERSION:PATH",
        help="a model laid out as Azure registers it; repeatable",
    )
    models.add_argument("--model-dir", metavar="DIR", help="the folder AZUREML_MODEL_DIR names")


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    _connection_flags(connection, suppress=True)

    parser = argparse.ArgumentParser(
        prog="mlfe",
        description="Real-time model scoring: serve, deploy and roll out Azure ML entry scripts.",
    )
    _connection_flags(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the router and autoscaler in the foreground (replicas here, or in a cluster)",
    )
    serve.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        help="services, keys and replica logs (env MLFE_STATE_DIR; default ~/.mlfe)",
    )
    serve_settings.add_arguments(serve, state_dir=False)
    serve.set_defaults(local=cmd_serve, parser=serve)

    deploy = commands.add_parser(
        "deploy", parents=[connection], help="deploy a new service and wait until it is Healthy"
    )
    deploy.add_argument("-n", "--name", required=True, help="the service name")
    _deployment_flags(deploy, require_ic=True)
    _wait_flags(deploy)
    deploy.set_defaults(client=cmd_deploy)

    service = commands.add_parser("service", help="inspect and manage services")
    service_commands = service.add_subparsers(dest="action", metavar="ACTION", required=True)

    def service_command(name: str, run: ClientCommand, help: str) -> argparse.ArgumentParser:
        sub = service_commands.add_parser(name, parents=[connection], help=help)
        if name != "list":
            sub.add_argument("name", help="the service name")
        sub.set_defaults(client=run, parser=sub)
        return sub

    service_command("list", cmd_service_list, "every service and its state")
    service_command("show", cmd_service_show, "state, URIs, auth and versions of a service")
    service_command("keys", cmd_service_keys, "the primary and secondary keys")
    regen = service_command("regen-key", cmd_service_regen_key, "regenerate a key")
    regen.add_argument("--key", required=True, type=key_type, metavar="Primary|Secondary")
    regen.add_argument("--value", help="the new key (default: a random one)")
    service_command("get-access-token", cmd_service_token, "a JWT for a service in token auth mode")
    logs = service_command("logs", cmd_service_logs, "the last lines of each replica's log")
    logs.add_argument("--version", help="the version (default: the default version)")
    logs.add_argument("--tail", type=int, default=DEFAULT_LOG_TAIL, help="lines per replica")
    update = service_command(
        "update", cmd_service_update, "change the default version's configuration or models"
    )
    _deployment_flags(update, require_ic=False)
    _wait_flags(update)
    delete = service_command("delete", cmd_service_delete, "delete a service and its replicas")
    _wait_flags(delete)

    endpoint = commands.add_parser("endpoint", help="roll out versions of a service")
    endpoint_commands = endpoint.add_subparsers(dest="action", metavar="ACTION", required=True)

    def endpoint_command(name: str, run: ClientCommand, help: str) -> argparse.ArgumentParser:
        sub = endpoint_commands.add_parser(name, parents=[connection], help=help)
        sub.add_argument("name", help="the service name")
        sub.add_argument("--version", required=True, help="the version name")
        sub.set_defaults(client=run, parser=sub)
        return sub

    create = endpoint_command("create-version", cmd_create_version, "add a version")
    _deployment_flags(create, require_ic=True)
    create.add_argument("--traffic", type=percent, metavar="PERCENT", help="share of traffic")
    create.add_argument("--default", action="store_true", help="make it the default version")
    create.add_argument("--control", action="store_true", help="make it the control version")
    _wait_flags(create)
    change = endpoint_command(
        "update-version", cmd_update_version, "change a version's traffic, role or deployment"
    )
    change.add_argument("--traffic", type=percent, metavar="PERCENT", help="share of traffic")
    change.add_argument("--default", action="store_true", help="make it the default version")
    change.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make it (or, with --no-control, stop it being) the control version",
    )
    _deployment_flags(change, require_ic=False)
    _wait_flags(change)
    remove = endpoint_command("delete-version", cmd_delete_version, "delete a version")
    _wait_flags(remove)

    local = commands.add_parser(
        "run-local", help="one replica of an entry script in the foreground, for debugging"
    )
    local.add_argument("--entry-script", help="score.py (or take it from --ic)")
    local.add_argument("--source-dir", help="folder put on sys.path (default: the script's)")
    local.add_argument("--ic", metavar="FILE", help="inferenceconfig.json to take the script from")
    local.add_argument("--dc", metavar="FILE", help="deploymentconfig.json for slots and timeout")
    local_models = local.add_mutually_exclusive_group()
    local_models.add_argument("--model-dir", metavar="DIR", help="AZUREML_MODEL_DIR")
    local_models.add_argument(
        "-m",
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME:VERSION:PATH",
        help="a model laid out as Azure registers it; repeatable",
    )
    local.add_argument(
        "--port", type=int, default=DEFAULT_RUN_LOCAL_PORT, help=f"default {DEFAULT_RUN_LOCAL_PORT}"
    )
    local.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    local.add_argument("--uds", help="listen on this Unix socket instead of a port")
    local.add_argument("--max-concurrent", type=int, help="run() calls at once")
    local.add_argument("--scoring-timeout-ms", type=int, help="run() time limit")
    local.add_argument("--cors-origins", help="comma-separated allowed origins")
    local.set_defaults(local=cmd_run_local, parser=local)
    return parser
