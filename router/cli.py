"""`mlfe`: serve, deploy and roll out scoring services from the command line.

    mlfe serve [--port 8080] [--state-dir DIR]
    mlfe serve --backend kubernetes [--kubeconfig FILE] [--namespace NS]
    mlfe deploy -n diabetes --ic inferenceconfig.json --dc deploymentconfig.json -m model:1:./model
    mlfe service list|show|keys|regen-key|get-access-token|logs|update|delete ...
    mlfe endpoint create-version|update-version|delete-version ...
    mlfe run-local --entry-script score.py [--model-dir DIR] [--port 5001]

Everything but `serve` and `run-local` is a thin client of the management API
(/api/v1/manage): it reads the configuration files a user already has for Azure ML,
makes their paths absolute (the local backend runs replicas on this machine), sends them,
and shows the answer as text or, with `--json`, as the API's own JSON. Commands that
change replicas wait for the service to settle, printing progress to stderr the way
Azure's `wait_for_deployment(show_output=True)` does, and exit 0 only when it is Healthy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from router import serve_settings

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PORT = 8080
DEFAULT_RUN_LOCAL_PORT = 5001
DEFAULT_WAIT_TIMEOUT_S = 600.0
DEFAULT_LOG_TAIL = 100
MANAGE_PATH = "/api/v1/manage"
ADMIN_KEY_FILE = "admin.key"
# Management calls answer at once (202 and settle in the background); this only bounds
# a server that stopped answering.
REQUEST_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.25
DOT_INTERVAL_S = 1.0
FAILURE_LOG_LINES = 20
FAILURE_LOG_REPLICAS = 2

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

SETTLING = "Transitioning"
HEALTHY = "Healthy"


class CliError(Exception):
    """A failure the user can act on: printed as one message, never as a traceback."""


class UsageError(CliError):
    """A flag combination argparse cannot express: exit code 2, like argparse's own."""


class ApiError(CliError):
    """The management API answered with an error status and a {"message"}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- where the API is and how to get in --------------------------------------------------


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """The folder `mlfe serve` keeps its state in: MLFE_STATE_DIR, else ~/.mlfe."""
    return Path(environ.get("MLFE_STATE_DIR") or Path.home() / ".mlfe").expanduser()


def resolve_admin_key(flag: str | None, state_dir: str | None, environ: Mapping[str, str]) -> str:
    """--admin-key, else MLFE_ADMIN_KEY, else STATE/admin.key written by `mlfe serve`."""
    if flag:
        return flag
    from_environment = environ.get("MLFE_ADMIN_KEY", "").strip()
    if from_environment:
        return from_environment
    folder = Path(state_dir).expanduser() if state_dir else default_state_dir(environ)
    path = folder / ADMIN_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        raise CliError(
            f"no admin key: {path} does not exist. `mlfe serve` writes it on first start;"
            " pass --state-dir if the server uses another folder, or give the key with"
            " --admin-key or MLFE_ADMIN_KEY"
        ) from None
    except OSError as error:
        raise CliError(f"cannot read the admin key from {path}: {error.strerror}") from None
    if not key:
        raise CliError(f"the admin key file {path} is empty")
    return key


class ManageClient:
    """The management API over httpx: JSON in and out, `CliError` for every failure."""

    def __init__(
        self,
        url: str,
        admin_key: str | Callable[[], str],
        *,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        # A callable is read at the first request, so a usage error found while building
        # the request is reported before a missing key file is.
        self._admin_key = admin_key
        self._http = httpx.Client(base_url=self.url + MANAGE_PATH, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManageClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        if "Authorization" not in self._http.headers:
            key = self._admin_key() if callable(self._admin_key) else self._admin_key
            self._http.headers["Authorization"] = f"Bearer {key}"
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.ConnectError:
            raise CliError(f"cannot reach mlfe at {self.url}: is `mlfe serve` running?") from None
        except httpx.TimeoutException:
            raise CliError(f"mlfe at {self.url} did not answer in time") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise CliError(f"cannot talk to mlfe at {self.url}: {error}") from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise CliError(
                    f"{self.url} answered {method} {path} with something that is not JSON:"
                    " is it mlfe?"
                ) from None
        raise ApiError(response.status_code, self._error_message(response))

    def _error_message(self, response: httpx.Response) -> str:
        try:
            message = response.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code} from {self.url}: {response.text[:200]}"
        if response.status_code == 401:
            message += " (check --admin-key, MLFE_ADMIN_KEY or the admin.key of --state-dir)"
        return str(message)

    # The routes, one method each, so commands read as what they do.

    def services(self) -> list[dict[str, Any]]:
        answer = self.call("GET", "/services")
        if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
            raise CliError(f"{self.url} answered GET /services with something that is not mlfe's")
        return answer

    def service(self, name: str) -> dict[str, Any]:
        return self._object("GET", _path("services", name))

    def create_service(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/services", body=body)

    def update_service(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", _path("services", name), body=body)

    def delete_service(self, name: str) -> dict[str, Any]:
        return self._object("DELETE", _path("services", name))

    def keys(self, name: str) -> dict[str, Any]:
        return self._object("GET", _path("services", name, "keys"))

    def regenerate_key(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", _path("services", name, "regenerate-key"), body=body)

    def token(self, name: str) -> dict[str, Any]:
        return self._object("POST", _path("services", name, "token"))

    def create_version(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", _path("services", name, "versions"), body=body)

    def update_version(self, name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", _path("services", name, "versions", version), body=body)

    def delete_version(self, name: str, version: str) -> dict[str, Any]:
        return self._object("DELETE", _path("services", name, "versions", version))

    def logs(self, name: str, version: str | None, tail: int) -> dict[str, Any]:
        params: dict[str, str | int] = {"tail": tail}
        if version:
            params["version"] = version
        return self._object("GET", _path("services", name, "logs"), params=params)

    def _object(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        answer = self.call(method, path, **options)
        if not isinstance(answer, dict):
            raise CliError(f"{self.url} answered {method} {path} with something that is not mlfe's")
        return answer


def _path(*segments: str) -> str:
    # A name is one path segment whatever it contains; the server judges whether it is valid.
    return "".join("/" + quote(segment, safe="") for segment in segments)


# -- reading the user's files ------------------------------------------------------------


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


# -- output --------------------------------------------------------------------------------


def print_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    )


def pairs(items: Sequence[tuple[str, Any]]) -> str:
    width = max(len(label) for label, _ in items)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in items)


def format_percent(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:g}%"
    return "-"


def format_replicas(replicas: Mapping[str, Any]) -> str:
    text = f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)} ready"
    extras = [f"{replicas[kind]} {kind}" for kind in ("starting", "warm") if replicas.get(kind)]
    return text + (f" ({', '.join(extras)})" if extras else "")


def format_service(view: Mapping[str, Any]) -> str:
    """`mlfe service show`: what a person checks after a deploy or a rollout."""
    header = pairs(
        [
            ("service", view.get("name")),
            ("state", view.get("state")),
            ("scoring URI", view.get("scoringUri")),
            ("swagger URI", view.get("swaggerUri")),
            ("auth", view.get("authMode")),
            ("created", view.get("createdTime")),
            ("updated", view.get("updatedTime")),
        ]
    )
    rows = []
    errors = []
    for version in view.get("versions", []):
        configured = version.get("trafficPercentile")
        effective = version.get("effectiveTrafficPercentile")
        traffic = format_percent(effective)
        if configured and configured != effective:
            # The default version also gets what the others leave unassigned.
            traffic += f" (set {format_percent(configured)})"
        rows.append(
            [
                str(version.get("name")),
                "yes" if version.get("isDefault") else "",
                "yes" if version.get("isControl") else "",
                traffic,
                str(version.get("state")),
                format_replicas(version.get("replicas") or {}),
            ]
        )
        if version.get("error"):
            errors.append(f"version {version.get('name')} error: {version['error']}")
    if view.get("error") and not errors:
        errors.append(f"error: {view['error']}")
    versions = table(["VERSION", "DEFAULT", "CONTROL", "TRAFFIC", "STATE", "REPLICAS"], rows)
    return "\n\n".join([header, versions, *errors])


def format_service_list(views: Sequence[Mapping[str, Any]]) -> str:
    if not views:
        return "no services: deploy one with `mlfe deploy`"
    rows = [
        [
            str(view.get("name")),
            str(view.get("state")),
            str(view.get("authMode")),
            str(len(view.get("versions", []))),
            str(view.get("scoringUri")),
        ]
        for view in views
    ]
    return table(["NAME", "STATE", "AUTH", "VERSIONS", "SCORING URI"], rows)


def format_logs(logs: Mapping[str, Any]) -> str:
    replicas = logs.get("replicas") or []
    if not replicas:
        return f"version {logs.get('version')} has no replicas"
    parts = []
    for replica in replicas:
        parts.append(
            f"==> version {logs.get('version')} replica {replica.get('id')}"
            f" ({replica.get('state')}) <=="
        )
        parts.append(str(replica.get("log") or "").rstrip("\n"))
    return "\n".join(parts)


@dataclass
class Output:
    """Where results go: the API's JSON with --json, text a person reads otherwise."""

    as_json: bool
    out: TextIO
    err: TextIO

    def result(self, data: Any, human: Callable[[Any], str]) -> None:
        if self.as_json:
            print_json(data, self.out)
        else:
            self.out.write(human(data) + "\n")
        self.out.flush()


# -- waiting for a service to settle ---------------------------------------------------------


class Progress:
    """Dots and state lines on stderr, as Azure's `wait_for_deployment(show_output=True)`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._mid_line = False

    def begin(self, text: str) -> None:
        """Start a line the dots that follow extend: "Running....."."""
        if self._mid_line:
            self._stream.write("\n")
        self._stream.write(text)
        self._stream.flush()
        self._mid_line = True

    def dot(self) -> None:
        self._stream.write(".")
        self._stream.flush()
        self._mid_line = True

    def line(self, text: str) -> None:
        if self._mid_line:
            self._stream.write("\n")
        self._stream.write(text + "\n")
        self._stream.flush()
        self._mid_line = False


def version_summary(version: Mapping[str, Any]) -> str:
    return f"{version.get('state')}, replicas {format_replicas(version.get('replicas') or {})}"


def wait_until_settled(
    client: ManageClient,
    name: str,
    *,
    timeout: float,
    progress: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the service until its state is no longer Transitioning; its last view.

    Prints "Running", a dot a second and a line whenever a version's state or replica
    counts change; nothing when the service has settled already (a traffic change).
    """
    deadline = clock() + timeout
    shown: dict[str, str] = {}
    next_dot = clock() + DOT_INTERVAL_S
    while True:
        view = client.service(name)
        settled = view.get("state") != SETTLING
        if settled and not shown:
            return view
        if not shown:
            progress.begin("Running")
        for version in view.get("versions", []):
            summary = version_summary(version)
            if shown.get(version.get("name")) != summary:
                shown[version.get("name")] = summary
                progress.line(
                    f"{time.strftime('%H:%M:%S')} version {version.get('name')}: {summary}"
                )
        if settled:
            return view
        now = clock()
        if now >= deadline:
            raise CliError(
                f"gave up waiting after {timeout:g} s: service {name} is still {SETTLING};"
                f" follow it with `mlfe service show {name}`"
            )
        if now >= next_dot:
            progress.dot()
            next_dot = now + DOT_INTERVAL_S
        time.sleep(POLL_INTERVAL_S)


def report_outcome(client: ManageClient, view: Mapping[str, Any], progress: Progress) -> int:
    """Succeeded (exit 0) only for Healthy; otherwise why, with the replicas' last lines."""
    name = view.get("name")
    state = view.get("state")
    if state == HEALTHY:
        progress.line("Succeeded")
        progress.line(f"service {name} is {HEALTHY}: {view.get('scoringUri')}")
        return EXIT_OK
    progress.line("Failed")
    progress.line(f"service {name} is {state}")
    troubled = [version for version in view.get("versions", []) if version.get("state") != HEALTHY]
    if view.get("error") and not any(version.get("error") for version in troubled):
        progress.line(f"error: {view['error']}")
    for version in troubled:
        error = str(version.get("error") or "")
        if error:
            progress.line(f"version {version.get('name')} is {version.get('state')}: {error}")
        if "\n" not in error:
            # A one-line reason (or none) says little: show what the replicas printed.
            show_log_tail(client, str(name), str(version.get("name")), progress)
    return EXIT_FAILED


def show_log_tail(client: ManageClient, name: str, version: str, progress: Progress) -> None:
    try:
        logs = client.logs(name, version, FAILURE_LOG_LINES)
    except CliError as error:
        progress.line(f"(no log of version {version}: {error})")
        return
    with_output = [replica for replica in logs.get("replicas") or [] if replica.get("log")]
    for replica in with_output[:FAILURE_LOG_REPLICAS]:
        progress.line(
            f"last lines of the log of version {version} replica {replica.get('id')}"
            f" ({replica.get('state')}):"
        )
        progress.line(str(replica["log"]).rstrip("\n"))


def settle(
    client: ManageClient, args: argparse.Namespace, output: Output, view: dict[str, Any]
) -> int:
    """After a change: return at once with --no-wait, else wait, report and show."""
    name = str(view.get("name"))
    if args.no_wait:
        output.result(view, format_service)
        return EXIT_OK
    progress = Progress(output.err)
    final = wait_until_settled(client, name, timeout=args.timeout, progress=progress)
    code = report_outcome(client, final, progress)
    if code == EXIT_OK or output.as_json:
        # A failure was just explained on stderr; the same text again helps nobody.
        output.result(final, format_service)
    return code


# -- commands ------------------------------------------------------------------------------


def cmd_deploy(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    body = {"name": args.name, **deployment_body(args)}
    return settle(client, args, output, client.create_service(body))


def cmd_service_list(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    output.result(client.services(), format_service_list)
    return EXIT_OK


def cmd_service_show(client: ManageClient, args: argparse.Namespace, output: Output) -> int:
    output.result(client.service(args.name), format_service)
    return EXIT_OK


def format_keys(keys: Mapping[str, Any]) -> str:
    return pairs(
        [("primaryKey", keys.get("primaryKey")), ("secondaryKey", keys.get("secondaryKey"))]
    )


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
        progress = Progress(output.err)
        progress.begin(f"Deleting {args.name}")
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                client.service(args.name)
            except ApiError as error:
                if error.status != 404:
                    raise
                break
            if time.monotonic() >= deadline:
                raise CliError(
                    f"gave up waiting after {args.timeout:g} s: service {args.name} still exists"
                )
            progress.dot()
            time.sleep(POLL_INTERVAL_S)
        progress.line("Succeeded")
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


# -- commands that run something here ----------------------------------------------------------


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


# -- the argument parser ---------------------------------------------------------------------

ClientCommand = Callable[[ManageClient, argparse.Namespace, Output], int]
LocalCommand = Callable[[argparse.Namespace], int]


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
        help="inferenceconfig.json (entryScript, sourceDirectory, environment)",
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


if __name__ == "__main__":
    sys.exit(main())
