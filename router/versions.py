"""The version rules, and a version record mapped to what runs it.

Pure functions: the rules a service's versions follow (1-6 versions, one default, at most
one control, trafficPercentiles adding up to at most 100), a request turned into the
version record the store keeps, and a stored record turned into what runs it (the
backend's replica template and pod options, the control loop's scaling, the registry's
version spec) and into what a change of it needs (`rollout_for`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from autoscaler.backends.base import ModelFile, ReplicaTemplate
from autoscaler.backends.kube_manifests import PodOptions
from autoscaler.loop import Autoscale, FixedReplicas, Scaling
from autoscaler.policy import ScalingConfig
from router.config import (
    AuthMode,
    ConfigError,
    DeploymentConfig,
    merge_deployment_config,
    static_deployment_config,
)
from router.registry import VersionSpec
from router.service_requests import AuthRequest, InvalidRequest, VersionChanges, VersionSource
from router.store import ServiceRecord, VersionRecord

MAX_VERSIONS = 6
# Percentiles are user floats: 33.3 + 33.3 + 33.4 must not count as over 100.
_TRAFFIC_TOLERANCE = 1e-7

Rollout = Literal["none", "scale", "roll"]


def check_versions(versions: tuple[VersionRecord, ...]) -> None:
    """The version rules: 1-6 versions, exactly one default, at most one control,
    trafficPercentiles adding up to at most 100."""
    if not 1 <= len(versions) <= MAX_VERSIONS:
        raise InvalidRequest(
            f"a service has 1 to {MAX_VERSIONS} versions, this change leaves {len(versions)}"
        )
    defaults = [v.name for v in versions if v.is_default]
    if len(defaults) != 1:
        raise InvalidRequest(f"exactly one version must be the default, not {defaults or 'none'}")
    controls = [v.name for v in versions if v.is_control]
    if len(controls) > 1:
        raise InvalidRequest(f"at most one version may be the control, not {controls}")
    total = math.fsum(v.traffic_percentile for v in versions)
    if total > 100 + _TRAFFIC_TOLERANCE:
        shares = ", ".join(f"{v.name} {v.traffic_percentile:g}" for v in versions)
        raise InvalidRequest(
            f"trafficPercentile values add up to {total:g}, more than 100 ({shares}):"
            " lower another version's share first"
        )


def check_no_other_control(versions: Iterable[VersionRecord], name: str) -> None:
    for version in versions:
        if version.is_control and version.name != name:
            raise InvalidRequest(
                f"version {version.name!r} is the control already: set isControl false on it first"
            )


def check_auth(record: ServiceRecord, auth: AuthRequest) -> None:
    """Auth is the service's: a version may restate it, never change it."""
    if auth.mode is not None and auth.mode != record.auth_mode:
        raise InvalidRequest(
            f"deploymentConfig.authEnabled / tokenAuthEnabled ask for {auth.mode} auth, but"
            f" service {record.name!r} uses {record.auth_mode} auth: auth belongs to the"
            " service, change it with a service update"
        )
    for label, given, current in (
        ("primaryKey", auth.primary_key, record.primary_key),
        ("secondaryKey", auth.secondary_key, record.secondary_key),
    ):
        if given is not None and given != current:
            raise InvalidRequest(
                f"deploymentConfig.keys.{label} differs from the service's key: keys belong"
                " to the service, change them with regenerate-key"
            )


def valid_percentile(value: float) -> float:
    """A version's trafficPercentile as given, if it is one (0 to 100)."""
    if not 0 <= value <= 100:
        raise InvalidRequest(f"trafficPercentile must be between 0 and 100, got {value:g}")
    return float(value)


def merged_deployment(current: DeploymentConfig, changes: Mapping[str, Any]) -> DeploymentConfig:
    """A PATCH's partial deploymentconfig.json over `current`, errors told by full key."""
    try:
        return merge_deployment_config(current, dict(changes))
    except ConfigError as error:
        raise prefixed(error, "deploymentConfig") from None


def prefixed(error: ConfigError, prefix: str) -> ConfigError:
    """`error` with its key under `prefix`, and a message that starts with the full key:
    "autoScaler.maxReplicas (2) is ..." becomes "deploymentConfig.autoScaler.maxReplicas
    (2) is ...", other messages are led by "deploymentConfig.KEY: "."""
    key = f"{prefix}.{error.key}" if error.key else prefix
    message = error.message
    if error.key and message.startswith(error.key):
        return ConfigError(key, f"{prefix}.{message}")
    return ConfigError(key, f"{key}: {message}")


def normalized_deployment(deployment: DeploymentConfig, auth_mode: AuthMode) -> DeploymentConfig:
    """A version's configuration as stored: the service's auth, no keys (they live on the
    service), and no AKS-endpoint version name or traffic (they live on the version)."""
    return replace(
        deployment,
        auth_enabled=auth_mode == "key",
        token_auth_enabled=auth_mode == "token",
        primary_key=None,
        secondary_key=None,
        version_name=None,
        traffic_percentile=None,
    )


def version_record(
    name: str,
    deployment: DeploymentConfig,
    source: VersionSource,
    auth_mode: AuthMode,
    *,
    traffic: float,
    is_default: bool = False,
    is_control: bool = False,
) -> VersionRecord:
    """A new version as stored, from a request's configuration (see normalized_deployment)."""
    return VersionRecord(
        name=name,
        deployment=normalized_deployment(deployment, auth_mode),
        inference=source.inference,
        models=source.models,
        model_dir=source.model_dir,
        traffic_percentile=valid_percentile(traffic),
        is_default=is_default,
        is_control=is_control,
        description=deployment.description,
    )


def apply_source(version: VersionRecord, changes: VersionChanges) -> VersionRecord:
    """`version` running what `changes` gives: a new inferenceConfig, models or modelDir."""
    if changes.inference is not None:
        version = replace(version, inference=changes.inference)
    if changes.models is not None and changes.model_dir is not None:
        raise InvalidRequest("give either models or modelDir, not both")
    if changes.models is not None:
        version = replace(version, models=changes.models, model_dir=None)
    if changes.model_dir is not None:
        version = replace(version, models=(), model_dir=changes.model_dir)
    return version


def from_urls(version: VersionRecord, given: Collection[str] | None = None) -> VersionRecord:
    """A version whose inferenceConfig lists replicaUrls as it is stored: no models, and
    exactly those replicas (numReplicas = how many, no autoscaling), since mlfe neither
    starts nor scales them. What the request gave (`given`: the deploymentConfig keys,
    and "models"; None: everything) that says otherwise is refused; what the version
    kept from before it listed urls is replaced."""
    urls = version.inference.replica_urls
    if not urls:
        return version
    if (given is None or "models" in given) and (version.models or version.model_dir):
        raise InvalidRequest(
            "models and modelDir do not apply to a version with inferenceConfig.replicaUrls:"
            " its replicas load their own models"
        )
    try:
        deployment = static_deployment_config(version.deployment, len(urls), given=given)
    except ConfigError as error:
        raise prefixed(error, "deploymentConfig") from None
    return replace(version, deployment=deployment, models=(), model_dir=None)


def given_keys(changes: VersionChanges) -> set[str]:
    """What a change spelled out, as `from_urls` asks for it."""
    given = set(changes.deployment_changes or ())
    if changes.models is not None or changes.model_dir is not None:
        given.add("models")
    return given


def template_for(service: str, version: VersionRecord) -> ReplicaTemplate:
    """What the backend runs for a version: its replica urls, or the runtime's settings."""
    deployment, inference = version.deployment, version.inference
    if inference.replica_urls:
        return ReplicaTemplate(
            urls=inference.replica_urls,
            slots=deployment.max_concurrent_requests_per_container,
            scoring_timeout_ms=deployment.scoring_timeout_ms,
        )
    # The runtime names its swagger document after these, as Azure's server does.
    environment = {"SERVICE_NAME": service, "SERVICE_VERSION": version.name}
    environment.update(inference.environment_variables)
    # The deployment's variables are set on the container, over the environment's.
    environment.update(deployment.environment_variables)
    return ReplicaTemplate(
        entry_script=str(inference.entry_script),
        source_dir=str(inference.source_directory),
        model_dir=version.model_dir,
        models=tuple(ModelFile(m.name, m.version, m.path) for m in version.models),
        environment=environment,
        slots=deployment.max_concurrent_requests_per_container,
        scoring_timeout_ms=deployment.scoring_timeout_ms,
    )


def pod_options_for(deployment: DeploymentConfig) -> PodOptions:
    """`containerResourceRequirements` and `livenessProbeRequirements` as pod settings
    (Kubernetes accepts only 1 for a liveness probe's successThreshold)."""
    resources, probe = deployment.resources, deployment.liveness_probe
    return PodOptions(
        cpu=resources.cpu,
        memory_gb=resources.memory_gb,
        cpu_limit=resources.cpu_limit,
        memory_gb_limit=resources.memory_gb_limit,
        gpu=resources.gpu,
        liveness_period_seconds=probe.period_seconds,
        liveness_initial_delay_seconds=probe.initial_delay_seconds,
        liveness_timeout_seconds=probe.timeout_seconds,
        liveness_failure_threshold=probe.failure_threshold,
    )


def scaling_for(deployment: DeploymentConfig) -> tuple[Scaling, int]:
    """The control loop's scaling and the warm standby count for a deployment."""
    autoscale = deployment.autoscale
    if not autoscale.enabled:
        return FixedReplicas(deployment.num_replicas or autoscale.min_replicas), 0
    config = ScalingConfig(
        min_replicas=autoscale.min_replicas,
        max_replicas=autoscale.max_replicas,
        target_utilization=autoscale.target_utilization / 100,
        slots_per_replica=deployment.max_concurrent_requests_per_container,
        scale_down_window=autoscale.scale_down_delay_seconds,
    )
    return Autoscale(config, autoscale.refresh_period_seconds), autoscale.warm_replicas


def rollout_for(old: VersionRecord, new: VersionRecord) -> Rollout:
    """What a change of a version needs: nothing (routes only), new scaling settings for
    the running replicas, or new replicas."""
    if template_for("-", old) != template_for("-", new):
        return "roll"
    if pod_options_for(old.deployment) != pod_options_for(new.deployment):
        return "roll"  # new pods on Kubernetes (the local backend restarts its replicas)
    old_scaling, old_warm = scaling_for(old.deployment)
    new_scaling, new_warm = scaling_for(new.deployment)
    if old_scaling == new_scaling and old_warm == new_warm:
        return "none"
    if old_warm != new_warm:
        return "roll"
    if isinstance(old_scaling, FixedReplicas) and isinstance(new_scaling, FixedReplicas):
        return "scale"
    if (
        isinstance(old_scaling, Autoscale)
        and isinstance(new_scaling, Autoscale)
        and old_scaling.refresh_period == new_scaling.refresh_period
    ):
        return "scale"
    return "roll"


def version_spec(version: VersionRecord, traffic: float) -> VersionSpec:
    """The registry's routes for a version, at the share of traffic it gets now."""
    deployment = version.deployment
    return VersionSpec(
        name=version.name,
        traffic_percentile=traffic,
        scoring_timeout=deployment.scoring_timeout_ms / 1000,
        slots_per_replica=deployment.max_concurrent_requests_per_container,
        max_queue_wait=deployment.max_queue_wait_ms / 1000,
    )
