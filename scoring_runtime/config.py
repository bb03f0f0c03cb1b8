"""Command-line flags and Azure ML environment variables, parsed once into a frozen config.

Flags win over environment variables, which win over defaults; the rest of the runtime
only ever sees `RuntimeConfig`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Azure's inference server waits an hour for run() unless SCORING_TIMEOUT_MS says otherwise.
DEFAULT_SCORING_TIMEOUT_MS = 3_600_000
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ModelSpec:
    """One registered model given as `--model NAME:VERSION:PATH`."""

    name: str
    version: str
    path: Path


@dataclass(frozen=True)
class RuntimeConfig:
    entry_script: Path
    source_dir: Path
    # Exactly one of model_dir / models is used; model_dir may also come from the env var.
    model_dir: str | None
    models: tuple[ModelSpec, ...]
    host: str
    port: int | None
    uds: Path | None
    max_concurrent: int
    scoring_timeout_ms: int
    cors_origins: tuple[str, ...]
    service_name: str
    service_version: str


class ConfigError(ValueError):
    """A flag or variable holds a value the runtime cannot use."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scoring_runtime",
        description="Serve an Azure ML entry script (init()/run()) over HTTP.",
    )
    parser.add_argument("--entry-script", help="score.py to load (env AZUREML_ENTRY_SCRIPT)")
    parser.add_argument(
        "--source-dir",
        help="folder put on sys.path (env AZUREML_SOURCE_DIRECTORY; default: the script's folder)",
    )
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model-dir", help="folder AZUREML_MODEL_DIR points to")
    models.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME:VERSION:PATH",
        help="a registered model, laid out as Azure does; repeatable",
    )
    listen = parser.add_mutually_exclusive_group(required=True)
    listen.add_argument("--port", type=int, help="TCP port (0 picks a free one)")
    listen.add_argument("--uds", help="Unix socket path")
    parser.add_argument("--host", help=f"TCP address to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="run() calls at once (env MLFE_MAX_CONCURRENT; default 1)",
    )
    parser.add_argument(
        "--scoring-timeout-ms",
        type=int,
        help=f"run() time limit (env SCORING_TIMEOUT_MS; default {DEFAULT_SCORING_TIMEOUT_MS})",
    )
    parser.add_argument(
        "--cors-origins", help="comma-separated allowed origins (env AML_CORS_ORIGINS)"
    )
    return parser


def parse_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> RuntimeConfig:
    """Parse flags and variables; argparse exits with code 2 on malformed flags."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return _resolve(args, environ)
    except ConfigError as error:
        parser.error(str(error))
        raise  # parser.error exits; this keeps type checkers content


def _resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> RuntimeConfig:
    script_arg = args.entry_script or environ.get("AZUREML_ENTRY_SCRIPT")
    if not script_arg:
        raise ConfigError("--entry-script (or AZUREML_ENTRY_SCRIPT) is required")
    source_arg = args.source_dir or environ.get("AZUREML_SOURCE_DIRECTORY") or None
    entry_script = _locate_script(script_arg, source_arg)
    source_dir = Path(source_arg).absolute() if source_arg else entry_script.parent

    models = tuple(_parse_model(text) for text in args.model)
    seen = {(m.name, m.version) for m in models}
    if len(seen) != len(models):
        raise ConfigError("--model lists the same NAME:VERSION twice")
    if models:
        model_dir = None
    elif args.model_dir:
        model_dir = str(Path(args.model_dir).absolute())
    else:
        model_dir = environ.get("AZUREML_MODEL_DIR") or None

    if args.port is not None and not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {args.port}")
    if args.uds is not None and args.host is not None:
        raise ConfigError("--host applies to --port, not --uds")

    max_concurrent = _pick_int(args.max_concurrent, environ, "MLFE_MAX_CONCURRENT", 1)
    if max_concurrent < 1:
        raise ConfigError(
            f"the number of concurrent run() calls must be at least 1, not {max_concurrent}"
        )
    timeout_ms = _pick_int(
        args.scoring_timeout_ms, environ, "SCORING_TIMEOUT_MS", DEFAULT_SCORING_TIMEOUT_MS
    )
    if timeout_ms < 1:
        raise ConfigError(f"the scoring timeout must be at least 1 ms, not {timeout_ms}")

    cors_text = (
        args.cors_origins if args.cors_origins is not None else environ.get("AML_CORS_ORIGINS", "")
    )
    cors_origins = tuple(origin.strip() for origin in cors_text.split(",") if origin.strip())

    return RuntimeConfig(
        entry_script=entry_script,
        source_dir=source_dir,
        model_dir=model_dir,
        models=models,
        host=args.host or DEFAULT_HOST,
        port=args.port,
        uds=Path(args.uds).absolute() if args.uds is not None else None,
        max_concurrent=max_concurrent,
        scoring_timeout_ms=timeout_ms,
        cors_origins=cors_origins,
        service_name=environ.get("SERVICE_NAME") or "ML service",
        service_version=environ.get("SERVICE_VERSION") or "1.0",
    )


def _locate_script(script: str, source_dir: str | None) -> Path:
    """The absolute script path.

    A relative path is taken from the working directory, or else from the source
    directory, because Azure's inference config names the script relative to it.
    """
    path = Path(script)
    if not path.is_absolute() and source_dir and not path.exists():
        candidate = Path(source_dir) / path
        if candidate.exists():
            path = candidate
    return path.absolute()


def _parse_model(text: str) -> ModelSpec:
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"--model {text!r} is not NAME:VERSION:PATH")
    name, version, path = parts
    for label, value in (("name", name), ("version", version)):
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ConfigError(f"--model {text!r}: the {label} {value!r} cannot be a folder name")
    return ModelSpec(name=name, version=version, path=Path(path).absolute())


def _pick_int(flag: int | None, environ: Mapping[str, str], variable: str, default: int) -> int:
    if flag is not None:
        return flag
    raw = environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is not an integer") from None
