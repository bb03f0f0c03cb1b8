"""The deployment part of a request, read from the Azure ML files a user already has.

The local backend runs replicas on this machine from another working directory, so
every path is made absolute here, against the folder the user gave it from.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from router.cli.errors import CliError


def read_json_file(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read the {what} {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise CliError(f"the {what} {path} is not valid JSON: {error}") from None


def inference_config_for_server(data: Any, config_file: Path) -> Any:
    """`data` with `sourceDirectory` absolute, read against the file's folder as Azure does.

    Without `sourceDirectory` the script's own folder is the source directory, so the
    script is split into that folder and its name. Anything else, including a malformed
    file, is sent unchanged: the server validates and names the key that is wrong.
    """
    if not isinstance(data, dict):
        return data
    base = config_file.absolute().parent
    resolved = dict(data)
    source = data.get("sourceDirectory")
    script = data.get("entryScript")
    if isinstance(source, str) and source:
        resolved["sourceDirectory"] = os.path.normpath(base / source)
    elif not source and isinstance(script, str) and script:
        path = Path(os.path.normpath(base / script))
        resolved["sourceDirectory"] = str(path.parent)
        resolved["entryScript"] = path.name
    return resolved


def model_argument(text: str) -> str:
    """`-m NAME:VERSION:PATH` with the path made absolute (the server has another cwd)."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VERSION:PATH")
    name, version, path = parts
    return f"{name}:{version}:{os.path.abspath(path)}"


def deployment_body(args: argparse.Namespace) -> dict[str, Any]:
    """The inferenceConfig / deploymentConfig / models part of a request, from the flags."""
    body: dict[str, Any] = {}
    if args.ic:
        body["inferenceConfig"] = inference_config_for_server(
            read_json_file(args.ic, "inference configuration"), Path(args.ic)
        )
    if args.dc:
        body["deploymentConfig"] = read_json_file(args.dc, "deployment configuration")
    if args.models:
        body["models"] = list(args.models)
    elif args.model_dir:
        body["modelDir"] = os.path.abspath(args.model_dir)
    return body
