"""Who may score: per-service keys, signed tokens, or nobody checked.

Each service has one `Authenticator`, built when the service is published and called by the
data plane once per request with the raw `Authorization` header. Failures all give the
same message, so a caller cannot learn whether the scheme, the key or the token was wrong.
Keys and tokens never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt

AUTH_FAILED: Final = "Missing or invalid credentials"

# The only algorithm accepted: anything named in a token's header is attacker-chosen.
TOKEN_ALGORITHM: Final = "HS256"
# HS256 is only as strong as its secret; pyjwt also warns on every decode below this.
MIN_SECRET_BYTES: Final = 32
# Clock skew tolerated for `iat` and `nbf` between the issuing and the verifying router.
CLOCK_SKEW: Final = 5.0
# Real keys are 43 characters and our tokens a few hundred; longer values are refused
# before any work is spent on them.
MAX_CREDENTIAL_BYTES: Final = 4096
# Authorization headers KeyAuth accepted, remembered as sent: a client repeats its header
# on every request, and a set lookup costs a tenth of parsing it and comparing it with
# both keys. Only the keys' own spellings can get in; the bound holds whatever whitespace
# and capitalization of "Bearer" clients vary.
ACCEPTED_HEADERS_LIMIT: Final = 64

_DECODE_OPTIONS: Final[Any] = {
    "require": ["exp", "iat", "aud"],
    "strict_aud": True,
    # Time claims are checked against the injected clock below, not pyjwt's wall clock.
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}


class Authenticator(Protocol):
    """Decides on one request's `Authorization` header."""

    #: "key", "token" or "none": what swagger.json advertises as the security scheme.
    scheme: str

    def authenticate(self, authorization: bytes | None) -> str | None:
        """None when the request may proceed, else the message for a 401."""
        ...


def bearer_credential(authorization: bytes | None) -> bytes | None:
    """The credential of a `Bearer <credential>` header, or None for anything else."""
    if authorization is None:
        return None
    value = authorization.strip()
    if len(value) < 8 or value[:6].lower() != b"bearer" or value[6] not in b" \t":
        return None
    credential = value[7:].lstrip()
    if not credential or len(credential) > MAX_CREDENTIAL_BYTES:
        return None
    if credential.find(b" ") >= 0 or credential.find(b"\t") >= 0:  # no `in`: see http_protocol
        return None
    return credential


class NoAuth:
    """Every request is allowed (`authEnabled: false`)."""

    scheme = "none"

    def authenticate(self, authorization: bytes | None) -> str | None:
        return None


class KeyAuth:
    """The primary or the secondary key of the service, as a bearer credential."""

    scheme = "key"

    def __init__(self, primary: str, secondary: str) -> None:
        if not primary or not secondary:
            raise ValueError("key auth needs both a primary and a secondary key")
        self._primary = primary.encode()
        self._secondary = secondary.encode()
        self._accepted: set[bytes] = set()

    def __repr__(self) -> str:
        return "KeyAuth(primary=***, secondary=***)"

    def authenticate(self, authorization: bytes | None) -> str | None:
        if authorization is None:
            return AUTH_FAILED
        # A hashed lookup: a wrong header differs in its hash, so its bytes are never
        # compared with an accepted one and the timing says nothing about the keys.
        if authorization in self._accepted:
            return None
        credential = bearer_credential(authorization)
        if credential is None:
            return AUTH_FAILED
        # Both comparisons always run (`|`, not `or`): timing must not tell which key matched.
        matched = hmac.compare_digest(credential, self._primary) | hmac.compare_digest(
            credential, self._secondary
        )
        if not matched:
            return AUTH_FAILED
        if len(self._accepted) < ACCEPTED_HEADERS_LIMIT:
            self._accepted.add(authorization)
        return None


class TokenAuth:
    """JWTs signed with the service's secret (HS256), for this service (`aud`), unexpired.

    A verified token is remembered, by its Authorization header as sent, until its `exp`,
    so a client reusing its token costs a dict lookup instead of an HMAC and a JSON
    parse. Refused tokens are not remembered: an attacker could otherwise fill the cache.
    """

    scheme = "token"

    def __init__(
        self,
        secret: bytes,
        audience: str,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        _check_secret(secret)
        if not audience:
            raise ValueError("token auth needs an audience (the service name)")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._secret = secret
        self._audience = audience
        self._clock = clock
        self._cache_size = cache_size
        # Insertion-ordered: the first entries are the oldest, evicted first.
        self._cache: dict[bytes, float] = {}

    def __repr__(self) -> str:
        return f"TokenAuth(audience={self._audience!r})"

    @property
    def cached_tokens(self) -> int:
        return len(self._cache)

    def authenticate(self, authorization: bytes | None) -> str | None:
        if authorization is None:
            return AUTH_FAILED
        now = self._clock()
        expires_at = self._cache.get(authorization)
        if expires_at is not None:
            if now < expires_at:
                return None
            del self._cache[authorization]
            return AUTH_FAILED
        credential = bearer_credential(authorization)
        if credential is None:
            return AUTH_FAILED
        expires_at = self._verify(credential, now)
        if expires_at is None:
            return AUTH_FAILED
        if len(self._cache) >= self._cache_size:
            self._evict(now)
        self._cache[authorization] = expires_at
        return None

    def _verify(self, token: bytes, now: float) -> float | None:
        """The token's expiry time if it is valid at `now`, else None."""
        if token.count(b".") != 2:
            return None  # not a JWS compact serialization (e.g. a key sent by mistake)
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[TOKEN_ALGORITHM],
                audience=self._audience,
                options=_DECODE_OPTIONS,
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            # Malformed input of any kind is just a refusal; nothing of it is kept.
            return None
        expires_at = _numeric_date(claims.get("exp"))
        issued_at = _numeric_date(claims.get("iat"))
        if expires_at is None or issued_at is None or now >= expires_at:
            return None
        if issued_at > now + CLOCK_SKEW:
            return None
        if "nbf" in claims:
            not_before = _numeric_date(claims["nbf"])
            if not_before is None or not_before > now + CLOCK_SKEW:
                return None
        return expires_at

    def _evict(self, now: float) -> None:
        """Drop expired tokens, then the oldest, leaving a tenth of the room free.

        Freeing more than one entry keeps the O(n) sweep to once per many inserts.
        """
        live = [(token, exp) for token, exp in self._cache.items() if exp > now]
        keep = self._cache_size - max(1, self._cache_size // 10)
        if len(live) > keep:
            live = live[len(live) - keep :]
        self._cache = dict(live)


@dataclass(frozen=True)
class IssuedToken:
    """A token as the management API hands it out (Azure's accessToken/expiryOn/refreshAfter)."""

    token: str
    expires_at: float
    refresh_after: float

    def __repr__(self) -> str:
        return f"IssuedToken(expires_at={self.expires_at}, refresh_after={self.refresh_after})"


def issue_token(
    secret: bytes, audience: str, *, lifetime: float = 3600, now: float | None = None
) -> IssuedToken:
    """Sign a token for one service; clients should refresh it after half its lifetime."""
    _check_secret(secret)
    if not audience:
        raise ValueError("a token needs an audience (the service name)")
    if not lifetime >= 1:
        raise ValueError(f"token lifetime must be at least 1 second, got {lifetime}")
    if now is None:
        now = time.time()
    issued_at = math.floor(now)
    expires_at = math.floor(now + lifetime)
    claims = {"aud": audience, "iat": issued_at, "exp": expires_at}
    token = jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)
    return IssuedToken(token=token, expires_at=float(expires_at), refresh_after=now + lifetime / 2)


def generate_key() -> str:
    """A new service or admin key: 32 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the token signing secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}"
        )


def _numeric_date(value: object) -> float | None:
    """A JWT NumericDate (seconds since the epoch) as a float, or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None
