"""Kubernetes `Status` errors, shaped as kube-apiserver shapes them.

Clients branch on `code` and `reason` (the Python client raises ApiException with the
status and the JSON body), so the messages and reasons follow apimachinery's
`k8s.io/apimachinery/pkg/api/errors` constructors word for word where it matters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_REASONS = {
    "Required": ("FieldValueRequired", "Required value"),
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "NotFound": ("FieldValueNotFound", "Not found"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "TooLong": ("FieldValueTooLong", "Too long"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
}


@dataclass(frozen=True)
class FieldError:
    """One validation failure; rendered as apimachinery's field.Error."""

    kind: str  # Required, Invalid, NotFound, Duplicate, Forbidden, TooLong, NotSupported
    path: str
    detail: str = ""
    value: Any = None

    def body(self) -> str:
        label = _REASONS[self.kind][1]
        if self.kind in ("Invalid", "NotFound", "Duplicate", "NotSupported"):
            text = f"{label}: {json.dumps(self.value)}"
            return f"{text}: {self.detail}" if self.detail else text
        return f"{label}: {self.detail}" if self.detail else label

    def cause(self) -> dict[str, str]:
        return {"reason": _REASONS[self.kind][0], "message": self.body(), "field": self.path}

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


@dataclass
class ApiError(Exception):
    """An error the API server answers with a Status body."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def qualified(plural: str, group: str) -> str:
    """`deployments.apps`, or just `pods` for the core group."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(plural, group)} "{name}" not found',
        {"name": name, "group": group, "kind": plural} if group else {"name": name, "kind": plural},
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        {"name": name, "group": group, "kind": plural} if group else {"name": name, "kind": plural},
    )


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        {"name": name, "group": group, "kind": plural} if group else {"name": name, "kind": plural},
    )


STALE_OBJECT = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    qualified_kind = f"{kind}.{group}" if group else kind
    listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": [e.cause() for e in errors]}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {listed}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    """410 Gone, reason Expired: what a watch or continue token past the history gets."""
    return ApiError(410, "Expired", message)


def method_not_allowed(verb: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({verb})",
    )


def route_not_found(path: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        "the server could not find the requested resource",
        {
            "causes": [
                {"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}
            ]
        },
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type!r})",
    )


def success(plural: str, group: str, name: str, uid: str) -> dict[str, Any]:
    """What DELETE answers for kinds that do not return the deleted object."""
    details: dict[str, Any] = {"name": name, "kind": plural, "uid": uid}
    if group:
        details["group"] = group
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }
