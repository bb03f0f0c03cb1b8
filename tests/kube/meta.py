"""Small helpers every part of the fake cluster shares: time formats, names, copies."""

from __future__ import annotations

import datetime
import random
import string
import uuid
from typing import Any

import orjson

# apimachinery's utilrand alphabet: no vowels (no accidental words), no 0/1/3 lookalikes.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAX_GENERATED_NAME_PREFIX = 58


def now_time() -> str:
    """metav1.Time: RFC 3339, whole seconds, UTC."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_after(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def normalise_micro_time(value: Any) -> Any:
    """metav1.MicroTime: store a client's `...00.123456+00:00` as `...00.123456Z`."""
    if not isinstance(value, str):
        return value
    try:
        moment = parse_time(value).astimezone(datetime.timezone.utc)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(length))


def generate_name(prefix: str) -> str:
    return prefix[:MAX_GENERATED_NAME_PREFIX] + random_suffix()


def new_uid() -> str:
    return str(uuid.uuid4())


def random_hex(length: int) -> str:
    return "".join(random.choice(string.hexdigits.lower()[:16]) for _ in range(length))


def clone(obj: Any) -> Any:
    """A deep copy; a JSON round trip is both faster than deepcopy and what the wire does."""
    return orjson.loads(orjson.dumps(obj))


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""
