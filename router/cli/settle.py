"""Waiting for a change to settle, with progress on stderr, and saying how it ended.

Commands that change replicas return as soon as the server accepts the change (202);
the user still wants to know whether it worked, so the CLI polls the service the way
Azure's `wait_for_deployment(show_output=True)` does and exits 0 only when it is Healthy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from router.cli.client import ManageClient
from router.cli.errors import EXIT_FAILED, EXIT_OK, ApiError, CliError
from router.cli.output import Output, format_replicas, format_service

SETTLING = "Transitioning"
HEALTHY = "Healthy"
POLL_INTERVAL_S = 0.25
DOT_INTERVAL_S = 1.0
FAILURE_LOG_LINES = 20
FAILURE_LOG_REPLICAS = 2


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


def wait_until_deleted(
    client: ManageClient, name: str, *, timeout: float, progress: Progress
) -> None:
    """Poll the service until the API no longer knows it: "Deleting NAME....Succeeded"."""
    progress.begin(f"Deleting {name}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.service(name)
        except ApiError as error:
            if error.status != 404:
                raise
            break
        if time.monotonic() >= deadline:
            raise CliError(f"gave up waiting after {timeout:g} s: service {name} still exists")
        progress.dot()
        time.sleep(POLL_INTERVAL_S)
    progress.line("Succeeded")


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
