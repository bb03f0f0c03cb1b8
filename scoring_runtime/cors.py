"""CORS for the origins in AML_CORS_ORIGINS, answering as flask-cors does for Azure.

An allowed origin is echoed back (also for `*`) with `Vary: Origin`; a preflight for an
allowed method also gets the allowed methods and the requested headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALLOWED_METHODS = (b"GET", b"POST")
_METHODS_VALUE = b", ".join(ALLOWED_METHODS)
_VARY = (b"vary", b"Origin")


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[bytes]
    any_origin: bool

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> CorsPolicy | None:
        """The policy for the configured origins, or None when CORS is off."""
        listed = [origin.strip() for origin in origins if origin.strip()]
        if not listed:
            return None
        return cls(
            origins=frozenset(origin.encode("latin-1") for origin in listed if origin != "*"),
            any_origin="*" in listed,
        )

    def headers(
        self,
        origin: bytes,
        method: str,
        request_method: bytes | None,
        request_headers: bytes | None,
    ) -> list[tuple[bytes, bytes]]:
        """Headers to add for a request from `origin`; empty when it is not allowed."""
        if not (self.any_origin or origin in self.origins):
            return []
        headers = [(b"access-control-allow-origin", origin), _VARY]
        if (
            method == "OPTIONS"
            and request_method is not None
            and request_method.strip().upper() in ALLOWED_METHODS
        ):
            headers.append((b"access-control-allow-methods", _METHODS_VALUE))
            if request_headers:
                headers.append((b"access-control-allow-headers", request_headers))
        return headers
