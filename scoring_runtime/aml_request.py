"""`AMLRequest` and `@rawhttp`: what a `@rawhttp` run() receives, without Flask.

Azure's server hands such a run() a Flask request. Scripts use a small part of it:
`method`, `path`, `full_path`, `url`, `args`, `headers`, `get_data()`, `get_json()`,
`data`, `json`, `form`, `content_type`. This class offers those with Flask's
semantics (including Azure's Flask-1 compatibility: `json` and `get_json()` give None
for a non-JSON content type instead of failing).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

_F = TypeVar("_F", bound=Callable[..., Any])

# Azure's server switches to raw mode when any function was decorated; mirrored.
_rawHttpRequested = False
RAWHTTP_ATTRIBUTE = "__mlfe_rawhttp__"


def rawhttp(func: _F) -> _F:
    """Ask for the whole request: run() is called with an AMLRequest for every method."""
    global _rawHttpRequested
    _rawHttpRequested = True
    # Builtins and some wrappers refuse attributes; the module flag still holds then.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(func, RAWHTTP_ATTRIBUTE, True)
    return func


def _canonical(name: str) -> str:
    # How werkzeug spells a header it rebuilt from the WSGI environ: "X-Ms-Client-Request-Id".
    return name.title()


class HeaderMap(dict[str, str]):
    """Request headers as Azure passes them (`dict(request.headers)`), case-insensitive on read.

    Keys are spelled like werkzeug does (`Content-Type`), repeated headers are joined
    with commas as WSGI servers do, and `get`/`[]`/`in` accept any case.
    """

    @classmethod
    def from_asgi(cls, raw: Iterable[tuple[bytes, bytes]]) -> HeaderMap:
        headers = cls()
        for name, value in raw:
            key = _canonical(name.decode("latin-1"))
            text = value.decode("latin-1")
            existing = dict.get(headers, key)
            dict.__setitem__(headers, key, text if existing is None else f"{existing},{text}")
        return headers

    def __getitem__(self, key: str) -> str:
        try:
            return dict.__getitem__(self, key)
        except KeyError:
            return dict.__getitem__(self, _canonical(key))

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (
            isinstance(key, str) and dict.__contains__(self, _canonical(key))
        )

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def getlist(self, key: str) -> list[str]:
        value = self.get(key)
        return [] if value is None else [part.strip() for part in value.split(",")]

    def has_key(self, key: str) -> bool:
        """Flask 1 had it; Azure's compatibility layer kept it for old scripts."""
        return key in self


class QueryArgs(dict[str, str]):
    """`request.args`: werkzeug's MultiDict as scripts use it; `[key]` is the first value."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        self._lists: dict[str, list[str]] = {}
        for key, value in pairs:
            values = self._lists.get(key)
            if values is None:
                self._lists[key] = [value]
                dict.__setitem__(self, key, value)
            else:
                values.append(value)

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        if key not in self:
            return default
        value = dict.__getitem__(self, key)
        if type is None:
            return value
        try:
            return type(value)
        except (ValueError, TypeError):
            return default

    def getlist(self, key: str, type: Callable[[str], Any] | None = None) -> list[Any]:
        values = self._lists.get(key, [])
        if type is None:
            return list(values)
        converted = []
        for value in values:
            try:
                converted.append(type(value))
            except (ValueError, TypeError):
                continue
        return converted

    def lists(self) -> Iterator[tuple[str, list[str]]]:
        for key, values in self._lists.items():
            yield key, list(values)

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        if flat:
            return dict(self)
        return {key: list(values) for key, values in self._lists.items()}


def _is_json_mimetype(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


class AMLRequest:
    """The request a `@rawhttp` run() receives."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query_string: bytes,
        headers: HeaderMap,
        body: bytes,
        scheme: str = "http",
        client: tuple[str, int] | None = None,
        root_path: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.scheme = scheme
        self.root_path = root_path
        self.remote_addr = client[0] if client else None
        self._body = body
        self._args: QueryArgs | None = None
        self._form: QueryArgs | None = None
        self._json: Any = _UNSET

    def __repr__(self) -> str:
        return f"<AMLRequest {self.method} {self.full_path!r}>"

    @property
    def args(self) -> QueryArgs:
        if self._args is None:
            self._args = QueryArgs(
                parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True)
            )
        return self._args

    @property
    def full_path(self) -> str:
        # werkzeug always keeps the "?", even with no query.
        return f"{self.path}?{self.query_string.decode('latin-1')}"

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.root_path}{self.path}"

    @property
    def url(self) -> str:
        query = self.query_string.decode("latin-1")
        return f"{self.base_url}?{query}" if query else self.base_url

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        return len(self._body) if self._body or "Content-Length" in self.headers else None

    @property
    def is_json(self) -> bool:
        return _is_json_mimetype(self.mimetype)

    @property
    def data(self) -> bytes:
        return self._body

    def get_data(
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> bytes | str:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    @property
    def json(self) -> Any:
        return self.get_json()

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body parsed as JSON, None for a non-JSON content type unless `force`."""
        if self._json is not _UNSET and not force:
            return self._json
        if not (force or self.is_json):
            return None
        try:
            value = orjson.loads(self._body)
        except orjson.JSONDecodeError:
            try:
                # json accepts what Python clients send and orjson refuses (NaN, big ints).
                value = json.loads(self._body)
            except ValueError as error:
                if silent:
                    return None
                raise ValueError(f"Failed to decode JSON object: {error}") from None
        if cache:
            self._json = value
        return value

    @property
    def form(self) -> QueryArgs:
        """Fields of a urlencoded body (multipart bodies are not parsed)."""
        if self._form is None:
            pairs: list[tuple[str, str]] = []
            if self.mimetype == "application/x-www-form-urlencoded":
                pairs = parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True)
            self._form = QueryArgs(pairs)
        return self._form

    @property
    def values(self) -> QueryArgs:
        return QueryArgs([*self.args.items(), *self.form.items()])


class _Unset:
    pass


_UNSET: Any = _Unset()
