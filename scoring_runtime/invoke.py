"""One /score call: request -> run() arguments -> run() -> response, on a worker thread.

Decoding the body, calling run() and encoding its result all happen here, off the
event loop, so a large payload never delays health probes. Messages and status codes
follow Azure's inference server.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from scoring_runtime.aml_request import AMLRequest, HeaderMap
from scoring_runtime.aml_response import AMLResponse
from scoring_runtime.encoding import error_json, to_json
from scoring_runtime.loader import HEADERS_PARAMETER, EntryScript, InputMode
from scoring_runtime.log import log_event

RUN_FAILED_MESSAGE = "An unexpected error occurred in scoring script. Check the logs for more info."

CONTENT_TYPE = b"content-type"
JSON_TYPE = b"application/json"
RUN_FAILED = b"x-ms-run-function-failed"
# Shared by every Outcome that uses them: never mutated, only copied into responses.
_JSON_OK = [(CONTENT_TYPE, JSON_TYPE), (RUN_FAILED, b"False")]
_JSON_RUN_FAILED = [(CONTENT_TYPE, JSON_TYPE), (RUN_FAILED, b"True")]
# The server frames the body itself; a length set by run() would contradict it.
_FRAMING_HEADERS = frozenset((b"content-length", b"transfer-encoding", b"connection"))


@dataclass(slots=True)
class ScoreRequest:
    """What the loop read from the connection; plain values, safe to hand to a thread."""

    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    content_type: bytes
    body: bytes
    scheme: str
    client: tuple[str, int] | None
    root_path: str


@dataclass(slots=True)
class Outcome:
    status: int
    # Includes content-type; the server adds length, request ids, timing and CORS.
    headers: list[tuple[bytes, bytes]]
    body: bytes
    run_ms: float | None


class InputError(Exception):
    """The request cannot be turned into run() arguments (400 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_query(query_string: bytes) -> dict[str, Any]:
    """Query parameters as Azure reads them: each value parsed as JSON when it is JSON,
    kept as a string otherwise; a repeated key becomes a list."""
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return {
        key: _json_or_text(values[0]) if len(values) == 1 else [_json_or_text(v) for v in values]
        for key, values in grouped.items()
    }


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_json_content_type(content_type: bytes) -> bool:
    mimetype = content_type.split(b";", 1)[0].strip().lower()
    return mimetype == JSON_TYPE or (
        mimetype.startswith(b"application/") and mimetype.endswith(b"+json")
    )


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # json accepts what Python clients send and orjson refuses (NaN, huge ints, UTF-16).
        return json.loads(body)


class Invoker:
    """Calls one entry script's run(); `__call__` runs on a worker thread."""

    def __init__(self, script: EntryScript) -> None:
        self._run = script.run
        self._mode = script.mode
        self._input_parameter = script.input_parameter
        self._parameters = script.parameters
        self._wants_headers = script.wants_request_headers
        self._arguments: Callable[[ScoreRequest], dict[str, Any]] = {
            InputMode.TEXT: self._text_arguments,
            InputMode.SCHEMA: self._schema_arguments,
            InputMode.RAW: self._raw_arguments,
        }[script.mode]

    def __call__(self, request: ScoreRequest) -> Outcome:
        try:
            arguments = self._arguments(request)
        except InputError as error:
            return Outcome(error.status, _JSON_OK, error_json(error.message), None)
        if self._wants_headers:
            arguments[HEADERS_PARAMETER] = HeaderMap.from_asgi(request.headers)

        started = time.perf_counter()
        try:
            result = self._run(**arguments)
        except BaseException as error:  # a worker thread never sees KeyboardInterrupt
            run_ms = (time.perf_counter() - started) * 1000.0
            log_event("run_failed", logging.ERROR, exc_info=error, ms=f"{run_ms:.3f}")
            return Outcome(500, _JSON_RUN_FAILED, error_json(RUN_FAILED_MESSAGE), run_ms)
        run_ms = (time.perf_counter() - started) * 1000.0
        return _respond(result, run_ms)

    # -- request -> arguments, one method per input mode --

    def _text_arguments(self, request: ScoreRequest) -> dict[str, Any]:
        if request.method == "GET":
            # Azure hands an undecorated run() the query re-encoded as a JSON string.
            return {self._input_parameter: json.dumps(parse_query(request.query_string))}
        try:
            return {self._input_parameter: request.body.decode("utf-8")}
        except UnicodeDecodeError as error:
            raise InputError(400, f"Input cannot be decoded as UTF-8: {error}") from None

    def _schema_arguments(self, request: ScoreRequest) -> dict[str, Any]:
        if request.method == "GET":
            return self._extract(parse_query(request.query_string))
        if not _is_json_content_type(request.content_type):
            raise InputError(415, "Expects Content-Type to be application/json")
        body = request.body
        if not body.strip():
            raise InputError(400, "POST body is empty. Expecting a JSON dictionary.")
        try:
            document = _load_json(body)
        except ValueError as error:
            raise InputError(400, f"POST body could not be decoded as JSON: {error}") from None
        if not isinstance(document, dict):
            raise InputError(400, "POST body should be a JSON dictionary.")
        return self._extract(document)

    def _extract(self, document: dict[str, Any]) -> dict[str, Any]:
        arguments = {}
        for parameter in self._parameters:
            value = document.get(parameter.name, parameter.default)
            if value is inspect.Parameter.empty:
                raise InputError(
                    400, f"A value is not provided for the {parameter.name!r} parameter."
                )
            arguments[parameter.name] = value
        return arguments

    def _raw_arguments(self, request: ScoreRequest) -> dict[str, Any]:
        aml_request = AMLRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=HeaderMap.from_asgi(request.headers),
            body=request.body,
            scheme=request.scheme,
            client=request.client,
            root_path=request.root_path,
        )
        return {self._input_parameter: aml_request}


def _respond(result: Any, run_ms: float) -> Outcome:
    """run()'s return value as a response: AMLResponse as built, anything else as JSON."""
    if isinstance(result, AMLResponse):
        return _own_response(result.status_code, result.headers.to_asgi(), result.data, run_ms)
    if _looks_like_flask_response(result):
        # An installed Azure package's AMLResponse is a Flask Response.
        headers = [
            (str(name).lower().encode("latin-1"), str(value).encode("latin-1"))
            for name, value in result.headers.items()
        ]
        return _own_response(int(result.status_code), headers, result.get_data(), run_ms)
    try:
        body = to_json(result)
    except TypeError as error:
        log_event("result_not_serializable", logging.ERROR, error=error)
        message = f"run() returned a value that cannot be serialized to JSON: {error}"
        return Outcome(500, _JSON_RUN_FAILED, error_json(message), run_ms)
    return Outcome(200, _JSON_OK, body, run_ms)


def _own_response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, run_ms: float
) -> Outcome:
    """A response run() built; a 5xx from run() counts as a failed run, as on Azure."""
    headers = [pair for pair in headers if pair[0] not in _FRAMING_HEADERS]
    if status >= 500:
        headers = [pair for pair in headers if pair[0] != RUN_FAILED]
        headers.append((RUN_FAILED, b"True"))
    return Outcome(status, headers, body, run_ms)


def _looks_like_flask_response(value: Any) -> bool:
    return (
        hasattr(value, "status_code") and hasattr(value, "headers") and hasattr(value, "get_data")
    )
