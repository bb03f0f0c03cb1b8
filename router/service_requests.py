"""What a management request asks of the service manager, and how the manager refuses.

The management API (`router/manage.py`) parses JSON into these frozen requests; the
manager (`router/services.py`) takes them and raises a `ServiceError` whose `status` is
the HTTP status the API answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from router.config import AuthMode, DeploymentConfig, InferenceConfig, ModelRef

KeyType = Literal["Primary", "Secondary"]


# -- errors -------------------------------------------------------------------------------


class ServiceError(Exception):
    """A request the manager refuses; `status` is the HTTP status that says why."""

    status = 400

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequest(ServiceError):
    """The request breaks a rule (validation, version rules): 400."""


class UnknownService(ServiceError):
    """No such service or version: 404."""

    status = 404


class Busy(ServiceError):
    """The name is taken, or another operation on the service is in progress: 409."""

    status = 409


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionSource:
    """What a version runs: its inference configuration and models (a list or a folder)."""

    inference: InferenceConfig
    models: tuple[ModelRef, ...] = ()
    model_dir: str | None = None


@dataclass(frozen=True)
class AuthRequest:
    """The auth settings a deploymentconfig.json spelled out (None: not given)."""

    mode: AuthMode | None = None
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewService:
    """POST /services: a service with one version."""

    name: str
    deployment: DeploymentConfig
    source: VersionSource


@dataclass(frozen=True)
class NewVersion:
    """POST /services/{name}/versions. `auth` is what the request's deploymentConfig
    said about auth, which must match the service's (auth belongs to the service)."""

    name: str
    deployment: DeploymentConfig
    source: VersionSource
    auth: AuthRequest = AuthRequest()
    traffic_percentile: float | None = None  # None: the file's trafficPercentile, else 0
    is_default: bool = False
    is_control: bool = False


@dataclass(frozen=True)
class VersionChanges:
    """PATCH of a version (or of a service, applied to its default version).

    `deployment_changes` is a partial deploymentconfig.json merged into the current one;
    `inference` replaces the inference configuration; `models` or `model_dir` replaces
    the models.
    """

    traffic_percentile: float | None = None
    is_default: bool | None = None
    is_control: bool | None = None
    deployment_changes: Mapping[str, Any] | None = None
    inference: InferenceConfig | None = None
    models: tuple[ModelRef, ...] | None = None
    model_dir: str | None = None
