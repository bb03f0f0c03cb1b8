"""What the management API shows of a service: its JSON view and its derived state.

A service's state is derived, never stored: from each version's state (what the backend
says of its replicas, or Transitioning while an operation deploys it) and whether an
operation is in progress. The manager gathers those; the functions here turn them into
the view and the `mlfe_service_state` metric.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.backends.base import DeploymentState, DeploymentStatus
from router.config import deployment_config_to_json, inference_config_to_json
from router.store import ServiceRecord

ServiceState = Literal["Transitioning", "Healthy", "Unhealthy", "Unschedulable", "Failed"]

_STATES: dict[DeploymentState, ServiceState] = {
    DeploymentState.TRANSITIONING: "Transitioning",
    DeploymentState.HEALTHY: "Healthy",
    DeploymentState.UNHEALTHY: "Unhealthy",
    DeploymentState.UNSCHEDULABLE: "Unschedulable",
    DeploymentState.FAILED: "Failed",
}
# Which version's error a service that is not Healthy shows: the one in the worst state.
_ERROR_ORDER: tuple[ServiceState, ...] = ("Failed", "Unschedulable", "Unhealthy")
_ALL_STATES: tuple[ServiceState, ...] = tuple(_STATES.values())


@dataclass(frozen=True)
class VersionHealth:
    """A version's state as the manager derives it, with the backend's status (None: no
    replicas deployed) and the error a user sees (None when there is nothing wrong)."""

    state: ServiceState
    status: DeploymentStatus | None
    error: str | None


def state_of(status: DeploymentStatus) -> ServiceState:
    """The state a version shows for what the backend says of its replicas."""
    return _STATES[status.state]


def service_state(states: Collection[ServiceState], busy: bool) -> ServiceState:
    """Failed if any version failed; else Unschedulable if any; else Transitioning while an
    operation runs or a version comes up; else Unhealthy if any; else Healthy."""
    if "Failed" in states:
        return "Failed"
    if "Unschedulable" in states:
        return "Unschedulable"
    if busy or "Transitioning" in states:
        return "Transitioning"
    if "Unhealthy" in states:
        return "Unhealthy"
    return "Healthy"


def worst(states: Collection[ServiceState]) -> ServiceState:
    """The state of a settled operation: the worst of the versions it deployed."""
    return service_state(states, busy=False)


def version_error(
    refusal: str | None, state: ServiceState, status: DeploymentStatus | None
) -> str | None:
    """What a user sees as a version's error: the backend's refusal to deploy it, else
    why its replicas are not Healthy (nothing while they come up)."""
    if refusal is not None:
        return refusal
    if state in ("Healthy", "Transitioning"):
        return None
    if status is None:
        return "no replicas are deployed: update the version to deploy it again"
    return status.message or None


def service_view(
    record: ServiceRecord,
    health: Mapping[str, VersionHealth],
    effective: Mapping[str, float],
    *,
    busy: bool,
    public_url: str,
) -> dict[str, Any]:
    """The management API's JSON for a service. `health` is each version's, by name;
    `effective` is the share of traffic each version gets now (the routes' weights),
    which differs from its trafficPercentile while a new version is not serving yet."""
    versions = []
    states: list[ServiceState] = []
    first_error: dict[ServiceState, str] = {}
    for version in record.versions:
        version_health = health[version.name]
        state, status, error = version_health.state, version_health.status, version_health.error
        states.append(state)
        if error and state not in first_error:
            first_error[state] = f"version {version.name}: {error}"
        replicas = {
            "desired": status.desired if status else 0,
            "ready": status.ready if status else 0,
            "starting": status.starting if status else 0,
            "warm": status.warm if status else 0,
        }
        versions.append(
            {
                "name": version.name,
                "isDefault": version.is_default,
                "isControl": version.is_control,
                "trafficPercentile": _number(version.traffic_percentile),
                "effectiveTrafficPercentile": _number(effective.get(version.name, 0.0)),
                "state": state,
                "error": error,
                "replicas": replicas,
                "deploymentConfig": deployment_config_to_json(
                    version.deployment, include_keys=False
                ),
                "inferenceConfig": inference_config_to_json(version.inference),
                "models": [str(model) for model in version.models],
                "modelDir": version.model_dir,
            }
        )
    state = service_state(states, busy)
    service_error = None
    if state != "Healthy":
        service_error = next((first_error[s] for s in _ERROR_ORDER if s in first_error), None)
    return {
        "name": record.name,
        "state": state,
        "error": service_error,
        "authMode": record.auth_mode,
        "scoringUri": f"{public_url}/api/v1/service/{record.name}/score",
        "swaggerUri": f"{public_url}/api/v1/service/{record.name}/swagger.json",
        "createdTime": iso_time(record.created_at),
        "updatedTime": iso_time(record.updated_at),
        "versions": versions,
    }


def iso_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC (`2024-05-01T12:00:00+00:00`)."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _number(value: float) -> int | float:
    # A whole percentile shows as 50, not 50.0.
    return int(value) if float(value).is_integer() else value


class StateCollector(Collector):
    """`mlfe_service_state{service, state}`: 1 for the state a service is in, 0 for the
    others (the enum pattern of kube-state-metrics), read at scrape time from `states`
    (every service's state, by name)."""

    def __init__(self, states: Callable[[], Mapping[str, ServiceState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mlfe_service_state",
            "The state of each service (1 for its current state).",
            labels=["service", "state"],
        )
        for name, current in self._states().items():
            for state in _ALL_STATES:
                family.add_metric([name, state], 1.0 if state == current else 0.0)
        yield family
