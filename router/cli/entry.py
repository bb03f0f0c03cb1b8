"""The console script: parse, run one command, and turn every failure into an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from router.cli.client import DEFAULT_URL, ManageClient, resolve_admin_key
from router.cli.commands import ClientCommand
from router.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, CliError, UsageError
from router.cli.local import LocalCommand
from router.cli.output import Output
from router.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except UsageError as error:
        # The failing command's own parser, so the usage line shown is the one that helps.
        failing: argparse.ArgumentParser = getattr(args, "parser", parser)
        failing.error(str(error))
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # A change already sent goes on in the server; only the waiting stops.
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    local: LocalCommand | None = getattr(args, "local", None)
    if local is not None:
        return local(args)
    command: ClientCommand = args.client
    environ = os.environ
    url = args.url or environ.get("MLFE_URL") or DEFAULT_URL
    output = Output(as_json=args.json, out=sys.stdout, err=sys.stderr)

    def admin_key() -> str:
        return resolve_admin_key(args.admin_key, args.state_dir, environ)

    with ManageClient(url, admin_key) as client:
        return command(client, args, output)
