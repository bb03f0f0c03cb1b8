"""What a failure looks like to the user: one message and an exit code, never a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure the user can act on: printed as one message, never as a traceback."""


class UsageError(CliError):
    """A flag combination argparse cannot express: exit code 2, like argparse's own."""


class ApiError(CliError):
    """The management API answered with an error status and a {"message"}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
