"""Who gets past the front door: keys, tokens and their failure modes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import jwt
import pytest

from router.auth import (
    ACCEPTED_HEADERS_LIMIT,
    AUTH_FAILED,
    CLOCK_SKEW,
    KeyAuth,
    NoAuth,
    TokenAuth,
    bearer_credential,
    generate_key,
    issue_token,
)

# 64 bytes, so pyjwt does not warn when the tests sign with HS384/HS512.
SECRET = b"s" * 64
OTHER_SECRET = b"o" * 64
SERVICE = "iris-svc"
NOW = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bearer(credential: str | bytes) -> bytes:
    if isinstance(credential, str):
        credential = credential.encode()
    return b"Bearer " + credential


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hand_made_token(header: dict, claims: dict, secret: bytes = SECRET) -> bytes:
    """A JWS signed with HMAC-SHA256 whatever the header claims, or unsigned for alg none."""
    signing_input = b64url(json.dumps(header).encode()) + b"." + b64url(json.dumps(claims).encode())
    if header.get("alg") == "none":
        return signing_input + b"."
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return signing_input + b"." + b64url(signature)


def claims(**overrides: object) -> dict:
    base: dict[str, object] = {"aud": SERVICE, "iat": int(NOW) - 10, "exp": int(NOW) + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# -- header parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "credential"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer abc", b"abc"),
        (b"BEARER abc", b"abc"),
        (b"  Bearer   abc  ", b"abc"),
        (b"Bearer\tabc", b"abc"),
        (None, None),
        (b"", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Bearerabc", None),
        (b"Basic abc", None),
        (b"Token abc", None),
        (b"abc", None),
        (b"Bearer abc def", None),
        (b"Bearer " + b"a" * 5000, None),
    ],
)
def test_bearer_credential(header: bytes | None, credential: bytes | None) -> None:
    assert bearer_credential(header) == credential


# -- keys ------------------------------------------------------------------------------


def test_generated_keys_are_32_random_bytes_urlsafe() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert len(base64.urlsafe_b64decode(key + "=")) == 32
        assert key.isascii() and "+" not in key and "/" not in key


@pytest.fixture
def key_auth() -> KeyAuth:
    return KeyAuth("primary-key-value", "secondary-key-value")


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (None, False),
        (b"Basic cHJpbWFyeS1rZXktdmFsdWU=", False),
        (b"primary-key-value", False),
        (b"Bearer wrong-key", False),
        (b"Bearer primary-key-valu", False),
        (b"Bearer primary-key-value-", False),
        (b"Bearer primary-key-value", True),
        (b"bearer  primary-key-value ", True),
        (b"Bearer secondary-key-value", True),
    ],
)
def test_key_auth_matrix(key_auth: KeyAuth, header: bytes | None, allowed: bool) -> None:
    assert key_auth.authenticate(header) == (None if allowed else AUTH_FAILED)


def test_key_auth_remembers_accepted_headers_only(
    key_auth: KeyAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = [b"Bearer primary-key-value", b"bearer  secondary-key-value "]
    for header in accepted:
        assert key_auth.authenticate(header) is None

    def fail(a: bytes, b: bytes) -> bool:
        raise AssertionError("an accepted header was compared with the keys again")

    monkeypatch.setattr(hmac, "compare_digest", fail)
    for header in accepted:
        assert key_auth.authenticate(header) is None
    monkeypatch.undo()
    # Refusals are never remembered, and a near miss of a remembered header is refused.
    for header in (b"Bearer primary-key-valu", b"Bearer primary-key-value-", b"Bearer x"):
        assert key_auth.authenticate(header) == AUTH_FAILED
        assert key_auth.authenticate(header) == AUTH_FAILED


def test_key_auth_remembers_a_bounded_number_of_spellings(key_auth: KeyAuth) -> None:
    spellings = [b"Bearer" + b" " * n + b"primary-key-value" for n in range(1, 200)]
    for header in spellings:
        assert key_auth.authenticate(header) is None
    # Past the bound the rest are still accepted, by comparing them with the keys.
    for header in reversed(spellings):
        assert key_auth.authenticate(header) is None
    assert len(key_auth._accepted) == ACCEPTED_HEADERS_LIMIT


def test_key_auth_message_does_not_say_what_was_wrong(key_auth: KeyAuth) -> None:
    messages = {key_auth.authenticate(h) for h in (None, b"Basic x", b"Bearer nope")}
    assert messages == {AUTH_FAILED}
    assert "key" not in AUTH_FAILED.lower() and "token" not in AUTH_FAILED.lower()


def test_key_auth_never_shows_keys(key_auth: KeyAuth) -> None:
    assert "primary-key-value" not in repr(key_auth)


def test_key_auth_refuses_empty_keys() -> None:
    with pytest.raises(ValueError, match="primary and a secondary"):
        KeyAuth("", "x")


def test_no_auth_allows_anything() -> None:
    assert NoAuth().authenticate(None) is None
    assert NoAuth().authenticate(b"Bearer whatever") is None
    assert NoAuth().scheme == "none"


# -- tokens ----------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def token_auth(clock: FakeClock) -> TokenAuth:
    return TokenAuth(SECRET, SERVICE, clock=clock)


def test_issued_token_is_accepted(token_auth: TokenAuth) -> None:
    issued = issue_token(SECRET, SERVICE, lifetime=3600, now=NOW)
    assert issued.expires_at == NOW + 3600
    assert issued.refresh_after == NOW + 1800
    assert token_auth.authenticate(bearer(issued.token)) is None
    assert issued.token not in repr(issued)


def test_issued_token_claims() -> None:
    issued = issue_token(SECRET, SERVICE, lifetime=600, now=NOW + 0.7)
    payload = jwt.decode(
        issued.token, SECRET, algorithms=["HS256"], audience=SERVICE, options={"verify_exp": False}
    )
    assert payload == {"aud": SERVICE, "iat": int(NOW), "exp": int(NOW) + 600}
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(jwt.encode(claims(exp=int(NOW) - 1), SECRET, "HS256"), id="expired"),
        pytest.param(jwt.encode(claims(exp=int(NOW)), SECRET, "HS256"), id="expires-now"),
        pytest.param(jwt.encode(claims(), OTHER_SECRET, "HS256"), id="forged-signature"),
        pytest.param(jwt.encode(claims(aud="other-svc"), SECRET, "HS256"), id="wrong-audience"),
        pytest.param(
            jwt.encode(claims(aud=[SERVICE, "other-svc"]), SECRET, "HS256"), id="audience-list"
        ),
        pytest.param(jwt.encode(claims(aud=None), SECRET, "HS256"), id="missing-aud"),
        pytest.param(jwt.encode(claims(exp=None), SECRET, "HS256"), id="missing-exp"),
        pytest.param(jwt.encode(claims(iat=None), SECRET, "HS256"), id="missing-iat"),
        pytest.param(jwt.encode(claims(exp="tomorrow"), SECRET, "HS256"), id="exp-not-a-number"),
        pytest.param(jwt.encode(claims(exp=True), SECRET, "HS256"), id="exp-boolean"),
        pytest.param(jwt.encode(claims(exp=10**400), SECRET, "HS256"), id="exp-huge"),
        pytest.param(
            jwt.encode(claims(iat=int(NOW + CLOCK_SKEW) + 60), SECRET, "HS256"), id="iat-future"
        ),
        pytest.param(
            jwt.encode(claims(nbf=int(NOW + CLOCK_SKEW) + 60), SECRET, "HS256"), id="nbf-future"
        ),
        pytest.param(jwt.encode(claims(), SECRET, "HS512"), id="hs512"),
        pytest.param(jwt.encode(claims(), SECRET, "HS384"), id="hs384"),
        pytest.param(
            hand_made_token({"alg": "none", "typ": "JWT"}, claims()).decode(), id="alg-none"
        ),
        pytest.param(
            hand_made_token({"alg": "RS256", "typ": "JWT"}, claims()).decode(),
            id="rs256-with-hmac-signature",
        ),
        pytest.param(hand_made_token({"typ": "JWT"}, claims()).decode(), id="no-alg"),
        pytest.param("a.b.c", id="garbage"),
        pytest.param("primary-key-value", id="a-key-in-token-mode"),
    ],
)
def test_token_refused(token_auth: TokenAuth, token: str) -> None:
    assert token_auth.authenticate(bearer(token)) == AUTH_FAILED
    assert token_auth.cached_tokens == 0


def test_token_within_clock_skew_is_accepted(token_auth: TokenAuth) -> None:
    token = jwt.encode(claims(iat=int(NOW) + 3, nbf=int(NOW) + 3), SECRET, "HS256")
    assert token_auth.authenticate(bearer(token)) is None


def test_hand_made_hs256_token_is_accepted(token_auth: TokenAuth) -> None:
    """The check above for alg none/RS256 fails for the right reason, not the helper."""
    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, claims())
    assert token_auth.authenticate(bearer(token)) is None


def test_token_header_without_bearer(token_auth: TokenAuth) -> None:
    token = issue_token(SECRET, SERVICE, now=NOW).token
    assert token_auth.authenticate(token.encode()) == AUTH_FAILED
    assert token_auth.authenticate(None) == AUTH_FAILED
    assert token_auth.authenticate(b"Basic " + token.encode()) == AUTH_FAILED


def test_cached_token_refused_once_expired(token_auth: TokenAuth, clock: FakeClock) -> None:
    token = bearer(issue_token(SECRET, SERVICE, lifetime=60, now=NOW).token)
    assert token_auth.authenticate(token) is None
    assert token_auth.cached_tokens == 1
    clock.now = NOW + 59.5
    assert token_auth.authenticate(token) is None
    clock.now = NOW + 60
    assert token_auth.authenticate(token) == AUTH_FAILED
    assert token_auth.cached_tokens == 0
    assert token_auth.authenticate(token) == AUTH_FAILED


def test_cache_hit_skips_verification(
    token_auth: TokenAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bearer(issue_token(SECRET, SERVICE, now=NOW).token)
    assert token_auth.authenticate(token) is None

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached token was verified again")

    monkeypatch.setattr(jwt, "decode", fail)
    for _ in range(3):
        assert token_auth.authenticate(token) is None


def test_cache_is_bounded_evicting_expired_then_oldest(clock: FakeClock) -> None:
    auth = TokenAuth(SECRET, SERVICE, clock=clock, cache_size=10)

    def token(lifetime: float) -> bytes:
        return issue_token(SECRET, SERVICE, lifetime=lifetime, now=NOW).token.encode()

    short = [token(10 + i) for i in range(5)]
    long = [token(1000 + i) for i in range(5)]
    for credential in short + long:
        assert auth.authenticate(bearer(credential)) is None
    assert auth.cached_tokens == 10
    clock.now = NOW + 100  # the short ones have expired
    newcomer = token(2000)
    assert auth.authenticate(bearer(newcomer)) is None
    cached = auth._cache  # which tokens stay cached is the behaviour under test
    assert sorted(cached) == sorted(bearer(t) for t in [*long, newcomer])
    # Fill up again: nothing has expired now, so the oldest go first.
    more = [token(3000 + i) for i in range(5)]
    for credential in more:
        assert auth.authenticate(bearer(credential)) is None
    cached = auth._cache
    assert len(cached) <= 10
    assert bearer(long[0]) not in cached
    assert bearer(newcomer) in cached and bearer(more[-1]) in cached
    # Evicted tokens are still valid: verified again, not refused.
    assert auth.authenticate(bearer(long[0])) is None


def test_token_auth_checks_its_configuration() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenAuth(b"short", SERVICE)
    with pytest.raises(ValueError, match="audience"):
        TokenAuth(SECRET, "")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue_token(b"short", SERVICE)
    with pytest.raises(ValueError, match="lifetime"):
        issue_token(SECRET, SERVICE, lifetime=0)


def test_random_garbage_never_raises(token_auth: TokenAuth, key_auth: KeyAuth) -> None:
    rng = random.Random(7)
    valid = issue_token(SECRET, SERVICE, now=NOW).token.encode()
    for _ in range(2000):
        kind = rng.randrange(3)
        if kind == 0:
            credential = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        elif kind == 1:  # a valid token with a few bytes flipped
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            credential = bytes(mutated)
        else:  # three base64url parts of random JSON-ish bytes
            parts = [
                b64url(bytes(rng.randrange(256) for _ in range(rng.randrange(30)))) for _ in "abc"
            ]
            credential = b".".join(parts)
        for auth in (token_auth, key_auth):
            result = auth.authenticate(b"Bearer " + credential)
            assert result in (None, AUTH_FAILED)
    assert token_auth.cached_tokens <= 1
