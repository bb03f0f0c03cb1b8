"""`AMLResponse`: what a run() returns to control status, headers and body, without Flask.

Same constructor and defaults as Azure's (a Flask Response subclass): `json_str=True`
serialises the message as JSON; otherwise a str or bytes body is sent as is with Flask's
default `text/html; charset=utf-8` unless the headers say otherwise; `None` sends `{}`.
Header values holding commas become repeated headers, as Azure does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from scoring_runtime.encoding import to_json

_DEFAULT_CONTENT_TYPE = "text/html; charset=utf-8"
_JSON_CONTENT_TYPE = "application/json"


class ResponseHeaders:
    """An ordered, case-insensitive header list with werkzeug's everyday methods."""

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()) -> None:
        self._pairs: list[tuple[str, str]] = [(name, str(value)) for name, value in pairs]

    def __getitem__(self, name: str) -> str:
        lowered = name.lower()
        for key, value in self._pairs:
            if key.lower() == lowered:
                return value
        raise KeyError(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.remove(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lowered = name.lower()
        return any(key.lower() == lowered for key, _ in self._pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._pairs))

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._pairs!r})"

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def getlist(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self._pairs if key.lower() == lowered]

    def set(self, name: str, value: Any) -> None:
        self.remove(name)
        self._pairs.append((name, str(value)))

    def add(self, name: str, value: Any) -> None:
        self._pairs.append((name, str(value)))

    add_header = add

    def remove(self, name: str) -> None:
        lowered = name.lower()
        self._pairs = [(key, value) for key, value in self._pairs if key.lower() != lowered]

    def update(self, other: Mapping[str, Any]) -> None:
        for name, value in other.items():
            self.set(name, value)

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def keys(self) -> list[str]:
        return [key for key, _ in self._pairs]

    def to_asgi(self) -> list[tuple[bytes, bytes]]:
        return [
            (name.lower().encode("latin-1"), value.encode("latin-1", "replace"))
            for name, value in self._pairs
        ]


class AMLResponse:
    """A response run() builds itself: `AMLResponse(body, status, headers, json_str=False)`."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, Any] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        self.status_code = int(status_code)
        if message is None:
            body, content_type = b"{}", _JSON_CONTENT_TYPE
        elif json_str:
            body, content_type = to_json(message), _JSON_CONTENT_TYPE
        else:
            body, content_type = _as_bytes(message), _DEFAULT_CONTENT_TYPE
        self._body = body
        self.headers = ResponseHeaders([("Content-Type", content_type)])
        self.headers.set("x-ms-run-function-failed", run_function_failed)
        for name, value in (response_headers or {}).items():
            if name.lower() == "content-type":
                self.headers.remove(name)
            for part in str(value).split(","):
                self.headers.add(name, part.strip())

    def __repr__(self) -> str:
        return f"<AMLResponse {self.status_code} {len(self._body)} bytes>"

    @property
    def status(self) -> str:
        return str(self.status_code)

    @property
    def data(self) -> bytes:
        return self._body

    @data.setter
    def data(self, value: str | bytes) -> None:
        self.set_data(value)

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def set_data(self, value: str | bytes) -> None:
        self._body = _as_bytes(value)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers.set("Content-Type", value)

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";", 1)[0].strip()

    @mimetype.setter
    def mimetype(self, value: str) -> None:
        self.content_type = f"{value}; charset=utf-8" if value.startswith("text/") else value


def _as_bytes(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    if isinstance(message, Iterable) and not isinstance(message, Mapping):
        # Flask streams an iterable of chunks; it is sent here in one piece.
        return b"".join(_as_bytes(chunk) for chunk in message)
    raise TypeError(
        f"AMLResponse body must be str or bytes (or json_str=True), not {type(message).__name__}"
    )
