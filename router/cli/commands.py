"""The commands that talk to the management API: one function each, flags to request.

Each takes the client, the parsed flags and where output goes, and returns the exit
code, so the parser can name it and the entry point can run it the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from router.cli.client import ManageClient
from router.cli.deployment import deployment_body
from router.cli.errors import EXIT_OK, UsageError
from router.cli.output import (
    Output,
    format_keys,
    format_logs,
    format_service,
    format_service_list,
    pairs,
)
from router.cli.settle import Progress, settle, wait_until_deleted

ClientCommand = Callable[[ManageClient, argparse.Namespace, Output], int]


def cmd_deploy(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    body = {"name": args.name, **deployment_body(args)}
    return settle(client, args, output, client.create_service(body))


def cmd_service_list(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    output.result(client.services(), format_service_list)
    return EXIT_OK


def cmd_service_show(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    output.result(client.service(args.name), format_service)
    return EXIT_OK


def cmd_service_keys(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    output.result(client.keys(args.name), format_keys)
    return EXIT_OK


def cmd_service_regen_key(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    body: dict[str, Any] = {"keyType": args.key}
    if args.value is not None:
        body["keyValue"] = args.value
    output.result(client.regenerate_key(args.name, body), format_keys)
    return EXIT_OK


def cmd_service_token(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    fields = ("accessToken", "tokenType", "refreshAfter", "expiryOn")
    output.result(client.token(args.name), lambda token: pairs([(f, token.get(f)) for f in fields]))
    return EXIT_OK


def cmd_service_logs(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    output.result(client.logs(args.name, args.version, args.tail), format_logs)
    return EXIT_OK


def cmd_service_update(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    body = deployment_body(args)
    if not body:
        raise UsageError("service update: give at least one of --dc, --ic, -m or --model-dir")
    return settle(client, args, output, client.update_service(args.name, body))


def cmd_service_delete(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    answer = client.delete_service(args.name)
    if not args.no_wait:
        wait_until_deleted(client, args.name, timeout=args.timeout, progress=Progress(output.err))
    output.result(answer, lambda data: str(data.get("message") or f"deleted {args.name}"))
    return EXIT_OK


def cmd_create_version(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    body: dict[str, Any] = {
        "version": args.version,
        **deployment_body(args),
        "isDefault": args.default,
        "isControl": args.control,
    }
    if args.traffic is not None:
        body["trafficPercentile"] = args.traffic
    return settle(client, args, output, client.create_version(args.name, body))


def cmd_update_version(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    body = deployment_body(args)
    if args.traffic is not None:
        body["trafficPercentile"] = args.traffic
    if args.default:
        body["isDefault"] = True
    if args.control is not None:
        body["isControl"] = args.control
    if not body:
        raise UsageError(
            "endpoint update-version: give at least one of --traffic, --default,"
            " --control/--no-control, --dc, --ic, -m or --model-dir"
        )
    return settle(client, args, output, client.update_version(args.name, args.version, body))


def cmd_delete_version(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    return settle(client, args, output, client.delete_version(args.name, args.version))
