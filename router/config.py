"""`deploymentconfig.json` and `inferenceconfig.json`, parsed once into frozen dataclasses.

The files are Azure ML's (AKS deployment configuration, `az ml model deploy --dc/--ic`),
so a user's existing files work unchanged. Every check raises `ConfigError` naming the
key in the file's own spelling ("autoScaler.maxReplicas"), so the management API can
answer 400 with a message the user can act on. Unknown keys are rejected (a typo must not
silently fall back to a default); keys that are valid for Azure but mean nothing on mlfe
are accepted and ignored; they are listed below.

deploymentconfig.json
    Used: `autoScaler.{autoscaleEnabled, minReplicas, maxReplicas, refreshPeriodInSeconds,
    targetUtilization}`, `numReplicas`, `authEnabled`, `tokenAuthEnabled`,
    `keys.{primaryKey, secondaryKey}`, `scoringTimeoutMs`,
    `maxConcurrentRequestsPerContainer`, `maxQueueWaitMs`,
    `containerResourceRequirements.{cpu, memoryInGB, cpuLimit, memoryInGBLimit, gpu}`,
    `gpuCores` (Azure's file spelling of the GPU count), `livenessProbeRequirements.*`,
    `namespace`, `environmentVariables`, `tags`, `description`, and from AKS endpoint
    files (`computeType: AKSENDPOINT`) `versionName` and `trafficPercentile`, which the
    management API uses when its request does not say otherwise.
    mlfe extensions: `autoScaler.warmReplicas` (default 1): replicas started and
    initialised but held out of rotation, so a scale-up serves at once;
    `autoScaler.scaleDownDelaySeconds` (default 60): how long demand must stay lower
    before a replica is removed (Knative's scale-down-delay).
    Accepted and ignored: `computeType` (must be AKS or AKSENDPOINT if given),
    `computeTargetName` (mlfe has one backend per router), `appInsightsEnabled` (metrics
    are on /metrics instead), `dataCollection` (model data collection is an Azure
    storage feature).

inferenceconfig.json
    Used: `entryScript` (relative to `sourceDirectory`, as on Azure), `sourceDirectory`
    (relative to the file's folder; default: the entry script's folder),
    `environment.environmentVariables`.
    mlfe extension: `replicaUrls` instead of `entryScript` and `sourceDirectory`: a list of
    `http://host:port` addresses of replicas someone else runs (existing Azure
    inference-server containers, say), which mlfe health-checks and routes to but neither
    starts nor scales. Such a version has exactly those replicas: numReplicas is how many
    there are, autoscaling is off, and no models or environment variables apply
    (`static_deployment_config`). https is refused: the router speaks plain HTTP to
    replicas.
    Accepted and ignored, because mlfe runs entry scripts in its own Python environment
    rather than building an image: `runtime` (must be "python" if given), `condaFile`,
    `extraDockerfileSteps` (and the docs' `extraDockerFileSteps`), `enableGpu`,
    `baseImage`, `baseImageRegistry`, `cudaVersion`, `description`, and every key of an
    Azure environment definition except `environmentVariables` (`name`, `version`,
    `python`, `docker`, `spark`, `databricks`, `r`, `inferencingStackVersion`, `assetId`).

In both files a key set to null is the same as a missing key, as Azure's SDK reads it.
Minimums follow Azure's SDK (`AksServiceDeploymentConfiguration.validate_configuration`):
counts, timeouts and resources must be above zero, minReplicas at least 1, and autoScaler
settings cannot be combined with a fixed numReplicas.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from difflib import get_close_matches
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

AuthMode = Literal["key", "token", "none"]

# Azure's webservice_name_validation: 3-32 characters, lowercase letters, digits and
# hyphens, starting with a letter and ending with a letter or digit. Version names are
# webservice names on Azure too (each version of an AKS endpoint is a webservice).
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{1,30}[a-z0-9]")
_NAME_RULE = "3 to 32 lowercase letters, digits or hyphens, starting with a letter and ending with a letter or digit"
# Versions may be as short as one letter ("a", "b" in an A/B rollout); they must still be
# DNS labels, since they name Kubernetes objects.
_VERSION_NAME = re.compile(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?")
_VERSION_RULE = "1 to 32 lowercase letters, digits or hyphens, starting with a letter and ending with a letter or digit"
# Azure's rules for registered model names; versions use the same characters.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_MODEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A Kubernetes namespace (RFC 1123 label), as Azure's NAMESPACE_REGEX checks.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A replica URL's host: a DNS name (Docker's container names may have underscores) or IPv4.
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?")
MAX_REPLICA_URLS = 100
# Keys travel as `Authorization: Bearer <key>`: visible ASCII only, and short enough for
# the data plane's credential limit with room to spare.
_CREDENTIAL = re.compile(r"[\x21-\x7e]{1,256}")

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _no_strings() -> Mapping[str, str]:
    # A field default must come from a factory: dataclasses refuse an unhashable one.
    # The mapping fields are also left out of hash(), which a mappingproxy cannot take.
    return _EMPTY


class ConfigError(ValueError):
    """A configuration value mlfe cannot use; `key` is its dotted path in the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class AutoscaleConfig:
    """`autoScaler` of a deployment. With a fixed `numReplicas`, `enabled` is False and
    min = max = numReplicas with no warm replicas, so consumers can read one shape."""

    enabled: bool = True
    min_replicas: int = 1
    max_replicas: int = 10
    refresh_period_seconds: float = 1.0
    target_utilization: float = 70.0  # percent, as in the file: 0 < t <= 100
    warm_replicas: int = 1
    scale_down_delay_seconds: float = 60.0


@dataclass(frozen=True)
class ResourceConfig:
    """`containerResourceRequirements`: pod requests (and optional limits) on Kubernetes."""

    cpu: float = 0.1
    memory_gb: float = 0.5
    cpu_limit: float | None = None
    memory_gb_limit: float | None = None
    gpu: int = 0


@dataclass(frozen=True)
class LivenessProbeConfig:
    """`livenessProbeRequirements`, with Azure's defaults."""

    period_seconds: int = 10
    initial_delay_seconds: int = 310
    timeout_seconds: int = 2
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class DeploymentConfig:
    """One version's deployment configuration.

    Build it with `parse_deployment_config` or `merge_deployment_config`; the constructor
    trusts its arguments. `DeploymentConfig()` is the configuration of an empty file.
    """

    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    num_replicas: int | None = None
    auth_enabled: bool = True
    token_auth_enabled: bool = False
    # Never in a repr, so never in a log line or a traceback by accident.
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    scoring_timeout_ms: int = 60_000
    max_concurrent_requests_per_container: int = 1
    max_queue_wait_ms: int = 500
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    liveness_probe: LivenessProbeConfig = field(default_factory=LivenessProbeConfig)
    environment_variables: Mapping[str, str] = field(default_factory=_no_strings, hash=False)
    namespace: str | None = None
    tags: Mapping[str, str] = field(default_factory=_no_strings, hash=False)
    description: str = ""
    # From AKS endpoint files: the management API's defaults for the version it creates.
    version_name: str | None = None
    traffic_percentile: float | None = None

    @property
    def auth_mode(self) -> AuthMode:
        if self.token_auth_enabled:
            return "token"
        if self.auth_enabled:
            return "key"
        return "none"


@dataclass(frozen=True)
class ModelRef:
    """A registered model given as `NAME:VERSION:PATH`, laid out for the entry script as
    Azure does (`$AZUREML_MODEL_DIR/NAME/VERSION/...`)."""

    name: str
    version: str
    path: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        parts = text.split(":", 2) if isinstance(text, str) else []
        if len(parts) != 3 or not all(parts):
            raise ConfigError("model", f"model {_show(text)} is not NAME:VERSION:PATH")
        name, version, path = parts
        return cls.from_json({"name": name, "version": version, "path": path})

    @classmethod
    def from_json(cls, data: object) -> ModelRef:
        reader = _Object(data, "model", known=("name", "version", "path"))
        name = reader.string("name", "")
        version = reader.string("version", "")
        path = reader.string("path", "")
        if not _MODEL_NAME.fullmatch(name):
            raise ConfigError(
                "model.name",
                f"model name {_show(name)} is invalid: use 1 to 255 letters, digits, dashes,"
                " periods or underscores, starting with a letter or digit",
            )
        if not _MODEL_VERSION.fullmatch(version):
            raise ConfigError(
                "model.version",
                f"model version {_show(version)} of {name!r} is invalid: use 1 to 64 letters,"
                " digits, dashes, periods or underscores, starting with a letter or digit",
            )
        if not path or "\0" in path:
            raise ConfigError("model.path", f"model {name}:{version} needs a path")
        return cls(name=name, version=version, path=path)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "path": self.path}

    def __str__(self) -> str:
        return f"{self.name}:{self.version}:{self.path}"


@dataclass(frozen=True)
class InferenceConfig:
    """What a replica runs: an entry script (absolute paths, resolved once from the file's
    folder), or, with `replica_urls`, nothing mlfe starts: the `http://host:port` of each
    replica someone else runs."""

    entry_script: Path | None = None
    source_directory: Path | None = None
    environment_variables: Mapping[str, str] = field(default_factory=_no_strings, hash=False)
    replica_urls: tuple[str, ...] = ()


# -- names ------------------------------------------------------------------------------


def validate_service_name(name: object) -> str:
    """The name itself if it is a valid service name, else ConfigError (key "name")."""
    return _check_name(name, "name", "service name")


def validate_version_name(name: object, key: str = "version") -> str:
    """The name itself if it is a valid version name, else ConfigError naming `key`."""
    if not isinstance(name, str) or not _VERSION_NAME.fullmatch(name):
        raise ConfigError(key, f"version name {_show(name)} is invalid: use {_VERSION_RULE}")
    return name


def _check_name(name: object, key: str, what: str) -> str:
    if not isinstance(name, str) or not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(key, f"{what} {_show(name)} is invalid: use {_NAME_RULE}")
    return name


# -- deploymentconfig.json --------------------------------------------------------------

_DEPLOYMENT_KEYS = (
    "autoScaler",
    "numReplicas",
    "authEnabled",
    "tokenAuthEnabled",
    "keys",
    "scoringTimeoutMs",
    "maxConcurrentRequestsPerContainer",
    "maxQueueWaitMs",
    "containerResourceRequirements",
    "gpuCores",
    "livenessProbeRequirements",
    "environmentVariables",
    "namespace",
    "tags",
    "description",
    "versionName",
    "trafficPercentile",
    "computeType",
)
_DEPLOYMENT_IGNORED = ("computeTargetName", "appInsightsEnabled", "dataCollection")
_AUTOSCALER_KEYS = (
    "autoscaleEnabled",
    "minReplicas",
    "maxReplicas",
    "refreshPeriodInSeconds",
    "targetUtilization",
    "warmReplicas",
    "scaleDownDelaySeconds",
)
_RESOURCE_KEYS = ("cpu", "memoryInGB", "cpuLimit", "memoryInGBLimit", "gpu")
_PROBE_KEYS = (
    "periodSeconds",
    "initialDelaySeconds",
    "timeoutSeconds",
    "successThreshold",
    "failureThreshold",
)
_COMPUTE_TYPES = ("aks", "aksendpoint")


def parse_deployment_config(data: object) -> DeploymentConfig:
    """Validate a parsed `deploymentconfig.json` and apply Azure's defaults."""
    root = _Object(
        data,
        "",
        known=_DEPLOYMENT_KEYS,
        ignored=_DEPLOYMENT_IGNORED,
        what="the deployment configuration",
    )
    compute_type = root.optional_string("computeType")
    if compute_type is not None and compute_type.lower() not in _COMPUTE_TYPES:
        raise ConfigError(
            "computeType",
            f"computeType {compute_type!r} is not supported: mlfe reads AKS deployment"
            " configurations (computeType AKS or AKSENDPOINT)",
        )
    num_replicas = root.optional_integer("numReplicas", minimum=1)
    autoscale = _parse_autoscale(root.section("autoScaler", known=_AUTOSCALER_KEYS), num_replicas)

    token_auth = root.boolean("tokenAuthEnabled", False)
    # Azure's default is key auth, unless the file asks for token auth instead.
    key_auth = root.boolean("authEnabled", not token_auth)
    if key_auth and token_auth:
        raise ConfigError(
            "tokenAuthEnabled",
            "authEnabled and tokenAuthEnabled cannot both be true: set authEnabled to false"
            " for token auth",
        )
    keys = root.section("keys", known=("primaryKey", "secondaryKey"))
    primary_key = _credential(keys, "primaryKey")
    secondary_key = _credential(keys, "secondaryKey")

    scoring_timeout_ms = root.integer("scoringTimeoutMs", 60_000, minimum=1)
    slots = root.integer("maxConcurrentRequestsPerContainer", 1, minimum=1)
    max_queue_wait_ms = root.integer("maxQueueWaitMs", 500, minimum=1)
    gpu_cores = root.optional_integer("gpuCores", minimum=0)
    resources = _parse_resources(
        root.section("containerResourceRequirements", known=_RESOURCE_KEYS), gpu_cores
    )
    probe = _parse_probe(root.section("livenessProbeRequirements", known=_PROBE_KEYS))
    environment_variables = _environment_variables(root, "environmentVariables")

    namespace = root.optional_string("namespace")
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        raise ConfigError(
            "namespace",
            f"namespace {namespace!r} is not a Kubernetes namespace: up to 63 lowercase letters,"
            " digits or hyphens, not starting or ending with a hyphen",
        )
    tags = root.string_map("tags")
    description = root.string("description", "")
    version_name = root.optional_string("versionName")
    if version_name is not None:
        validate_version_name(version_name, "versionName")
    traffic_percentile = root.optional_number("trafficPercentile", minimum=0, maximum=100)

    return DeploymentConfig(
        autoscale=autoscale,
        num_replicas=num_replicas,
        auth_enabled=key_auth,
        token_auth_enabled=token_auth,
        primary_key=primary_key,
        secondary_key=secondary_key,
        scoring_timeout_ms=scoring_timeout_ms,
        max_concurrent_requests_per_container=slots,
        max_queue_wait_ms=max_queue_wait_ms,
        resources=resources,
        liveness_probe=probe,
        environment_variables=environment_variables,
        namespace=namespace,
        tags=tags,
        description=description,
        version_name=version_name,
        traffic_percentile=traffic_percentile,
    )


def _parse_autoscale(section: _Object, num_replicas: int | None) -> AutoscaleConfig:
    enabled_in_file = section.optional_boolean("autoscaleEnabled")
    enabled = enabled_in_file if enabled_in_file is not None else num_replicas is None
    if not enabled:
        if num_replicas is None:
            raise ConfigError(
                "numReplicas",
                "numReplicas is required when autoScaler.autoscaleEnabled is false",
            )
        for name in section.remaining():
            key = section.key(name)
            raise ConfigError(
                key,
                f"{key} is set but autoscaling is off (numReplicas is {num_replicas}):"
                " remove one of them",
            )
        return AutoscaleConfig(
            enabled=False, min_replicas=num_replicas, max_replicas=num_replicas, warm_replicas=0
        )
    if num_replicas is not None:
        raise ConfigError(
            "numReplicas",
            f"numReplicas ({num_replicas}) cannot be set while autoScaler.autoscaleEnabled is"
            " true: remove numReplicas to autoscale, or set autoscaleEnabled to false",
        )
    max_given = section.has("maxReplicas")
    min_replicas = section.integer("minReplicas", 1, minimum=1)
    max_replicas = section.integer("maxReplicas", 10, minimum=1)
    if max_replicas < min_replicas:
        if max_given:
            raise ConfigError(
                "autoScaler.maxReplicas",
                f"autoScaler.maxReplicas ({max_replicas}) is below autoScaler.minReplicas"
                f" ({min_replicas})",
            )
        raise ConfigError(
            "autoScaler.minReplicas",
            f"autoScaler.minReplicas ({min_replicas}) is above autoScaler.maxReplicas"
            f" ({max_replicas}, the default): set maxReplicas too",
        )
    return AutoscaleConfig(
        enabled=True,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        refresh_period_seconds=section.number("refreshPeriodInSeconds", 1, above=0),
        target_utilization=section.number("targetUtilization", 70, above=0, maximum=100),
        warm_replicas=section.integer("warmReplicas", 1, minimum=0),
        scale_down_delay_seconds=section.number("scaleDownDelaySeconds", 60, minimum=0),
    )


def _parse_resources(section: _Object, gpu_cores: int | None) -> ResourceConfig:
    cpu = section.number("cpu", 0.1, above=0)
    memory_gb = section.number("memoryInGB", 0.5, above=0)
    cpu_limit = section.optional_number("cpuLimit", above=0)
    memory_gb_limit = section.optional_number("memoryInGBLimit", above=0)
    gpu = section.optional_integer("gpu", minimum=0)
    if cpu_limit is not None and cpu_limit < cpu:
        raise ConfigError(
            "containerResourceRequirements.cpuLimit",
            f"containerResourceRequirements.cpuLimit ({cpu_limit:g}) is below"
            f" containerResourceRequirements.cpu ({cpu:g})",
        )
    if memory_gb_limit is not None and memory_gb_limit < memory_gb:
        raise ConfigError(
            "containerResourceRequirements.memoryInGBLimit",
            f"containerResourceRequirements.memoryInGBLimit ({memory_gb_limit:g}) is below"
            f" containerResourceRequirements.memoryInGB ({memory_gb:g})",
        )
    if gpu is not None and gpu_cores is not None and gpu != gpu_cores:
        raise ConfigError(
            "gpuCores",
            f"gpuCores ({gpu_cores}) and containerResourceRequirements.gpu ({gpu}) disagree:"
            " give one of them",
        )
    return ResourceConfig(
        cpu=cpu,
        memory_gb=memory_gb,
        cpu_limit=cpu_limit,
        memory_gb_limit=memory_gb_limit,
        gpu=gpu if gpu is not None else (gpu_cores or 0),
    )


def _parse_probe(section: _Object) -> LivenessProbeConfig:
    defaults = LivenessProbeConfig()
    success_threshold = section.integer("successThreshold", defaults.success_threshold, minimum=1)
    if success_threshold != 1:
        raise ConfigError(
            "livenessProbeRequirements.successThreshold",
            f"livenessProbeRequirements.successThreshold must be 1 for a liveness probe"
            f" (Kubernetes refuses anything else), got {success_threshold}",
        )
    return LivenessProbeConfig(
        period_seconds=section.integer("periodSeconds", defaults.period_seconds, minimum=1),
        initial_delay_seconds=section.integer(
            "initialDelaySeconds", defaults.initial_delay_seconds, minimum=1
        ),
        timeout_seconds=section.integer("timeoutSeconds", defaults.timeout_seconds, minimum=1),
        success_threshold=success_threshold,
        failure_threshold=section.integer(
            "failureThreshold", defaults.failure_threshold, minimum=1
        ),
    )


def _credential(section: _Object, name: str) -> str | None:
    value = section.take(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _CREDENTIAL.fullmatch(value):
        # The value itself is a secret: the message describes it without quoting it.
        raise ConfigError(
            section.key(name),
            f"{section.key(name)} must be 1 to 256 visible ASCII characters without spaces",
        )
    return value


def _environment_variables(reader: _Object, name: str) -> Mapping[str, str]:
    variables = reader.string_map(name)
    for variable in variables:
        if not variable or "=" in variable or "\0" in variable:
            raise ConfigError(
                reader.key(name),
                f"{reader.key(name)} has an invalid variable name {variable!r}",
            )
    for variable, value in variables.items():
        if "\0" in value:
            raise ConfigError(
                f"{reader.key(name)}.{variable}",
                f"{reader.key(name)}.{variable} contains a NUL character",
            )
    return variables


def deployment_config_to_json(
    config: DeploymentConfig, *, include_keys: bool = True
) -> dict[str, Any]:
    """The configuration as `deploymentconfig.json`, every setting spelled out.

    `parse_deployment_config` of the result equals `config`. Without `include_keys`,
    the `keys` section is left out (for showing a configuration to a user).
    """
    autoscale = config.autoscale
    out: dict[str, Any] = {}
    if autoscale.enabled:
        out["autoScaler"] = {
            "autoscaleEnabled": True,
            "minReplicas": autoscale.min_replicas,
            "maxReplicas": autoscale.max_replicas,
            "refreshPeriodInSeconds": _compact(autoscale.refresh_period_seconds),
            "targetUtilization": _compact(autoscale.target_utilization),
            "warmReplicas": autoscale.warm_replicas,
            "scaleDownDelaySeconds": _compact(autoscale.scale_down_delay_seconds),
        }
    else:
        out["autoScaler"] = {"autoscaleEnabled": False}
        out["numReplicas"] = config.num_replicas
    out["authEnabled"] = config.auth_enabled
    out["tokenAuthEnabled"] = config.token_auth_enabled
    if include_keys and (config.primary_key is not None or config.secondary_key is not None):
        keys: dict[str, str] = {}
        if config.primary_key is not None:
            keys["primaryKey"] = config.primary_key
        if config.secondary_key is not None:
            keys["secondaryKey"] = config.secondary_key
        out["keys"] = keys
    out["scoringTimeoutMs"] = config.scoring_timeout_ms
    out["maxConcurrentRequestsPerContainer"] = config.max_concurrent_requests_per_container
    out["maxQueueWaitMs"] = config.max_queue_wait_ms
    resources = config.resources
    requirements: dict[str, Any] = {
        "cpu": _compact(resources.cpu),
        "memoryInGB": _compact(resources.memory_gb),
    }
    if resources.cpu_limit is not None:
        requirements["cpuLimit"] = _compact(resources.cpu_limit)
    if resources.memory_gb_limit is not None:
        requirements["memoryInGBLimit"] = _compact(resources.memory_gb_limit)
    if resources.gpu:
        requirements["gpu"] = resources.gpu
    out["containerResourceRequirements"] = requirements
    probe = config.liveness_probe
    out["livenessProbeRequirements"] = {
        "periodSeconds": probe.period_seconds,
        "initialDelaySeconds": probe.initial_delay_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "successThreshold": probe.success_threshold,
        "failureThreshold": probe.failure_threshold,
    }
    out["environmentVariables"] = dict(config.environment_variables)
    if config.namespace is not None:
        out["namespace"] = config.namespace
    out["tags"] = dict(config.tags)
    out["description"] = config.description
    if config.version_name is not None:
        out["versionName"] = config.version_name
    if config.traffic_percentile is not None:
        out["trafficPercentile"] = _compact(config.traffic_percentile)
    return out


def merge_deployment_config(current: DeploymentConfig, changes: object) -> DeploymentConfig:
    """`current` with the keys given in `changes` replaced, then validated as a whole.

    `changes` is a partial `deploymentconfig.json` applied as a JSON merge patch
    (RFC 7386): objects merge key by key, null resets a key to its default. Switching
    between autoscaling and a fixed count takes one key: a new `numReplicas` drops the
    current autoScaler settings, and `autoScaler.autoscaleEnabled: true` or
    `numReplicas: null` drops the current fixed count.
    """
    if not isinstance(changes, dict):
        raise ConfigError("", f"the changes must be a JSON object, got {_show(changes)}")
    merged = deployment_config_to_json(current)
    autoscaler_changes = changes.get("autoScaler")
    enabled_change = (
        autoscaler_changes.get("autoscaleEnabled") if isinstance(autoscaler_changes, dict) else None
    )
    if enabled_change is None and "numReplicas" in changes:
        if changes["numReplicas"] is not None:
            merged.pop("autoScaler", None)  # a fixed count replaces autoscaling
        elif not current.autoscale.enabled:
            merged["autoScaler"] = {}  # no fixed count: back to the default, autoscaling
    elif enabled_change is True:
        merged.pop("numReplicas", None)
    elif enabled_change is False:
        merged["autoScaler"] = {}  # the current autoscaling settings go with it
    patched = _merge_patch(merged, changes)
    return parse_deployment_config(patched)


def _merge_patch(target: object, patch: object) -> object:
    if not isinstance(patch, dict):
        return patch
    result: dict[Any, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# -- inferenceconfig.json ---------------------------------------------------------------

_INFERENCE_KEYS = ("entryScript", "sourceDirectory", "environment", "runtime", "replicaUrls")
_INFERENCE_IGNORED = (
    "condaFile",
    "extraDockerfileSteps",
    "extraDockerFileSteps",
    "enableGpu",
    "baseImage",
    "baseImageRegistry",
    "cudaVersion",
    "description",
)
_ENVIRONMENT_IGNORED = (
    "name",
    "version",
    "python",
    "docker",
    "spark",
    "databricks",
    "r",
    "inferencingStackVersion",
    "assetId",
)


def parse_inference_config(
    data: object, *, base_dir: Path, check_files: bool = True
) -> InferenceConfig:
    """Validate a parsed `inferenceconfig.json` whose file lies in `base_dir`.

    `sourceDirectory` is relative to `base_dir` and `entryScript` to `sourceDirectory`,
    as Azure reads them; without `sourceDirectory` the script is relative to `base_dir`
    and its folder is the source directory. Paths are made absolute lexically (symlinks
    are kept). With `check_files`, the folder and the script must exist; the store turns
    it off so a deleted folder fails the replica instead of losing the service.

    `replicaUrls` replaces the entry script: exactly one of the two forms.
    """
    root = _Object(
        data,
        "",
        known=_INFERENCE_KEYS,
        ignored=_INFERENCE_IGNORED,
        what="the inference configuration",
    )
    runtime = root.optional_string("runtime")
    if runtime is not None and runtime.lower() != "python":
        raise ConfigError(
            "runtime", f"runtime {runtime!r} is not supported: mlfe runs Python entry scripts"
        )
    urls = root.take("replicaUrls")
    entry_text = root.optional_string("entryScript")
    source_text = root.optional_string("sourceDirectory") or None
    environment = root.section(
        "environment", known=("environmentVariables",), ignored=_ENVIRONMENT_IGNORED
    )
    variables = _environment_variables(environment, "environmentVariables")
    if urls is not None:
        if entry_text or source_text:
            raise ConfigError(
                "replicaUrls",
                "give either replicaUrls (replicas someone else runs) or entryScript and"
                " sourceDirectory (replicas mlfe starts), not both",
            )
        if variables:
            raise ConfigError(
                "environment.environmentVariables",
                "environment.environmentVariables cannot be set with replicaUrls: mlfe does"
                " not start those replicas",
            )
        return InferenceConfig(replica_urls=_replica_urls(urls))
    if not entry_text:
        raise ConfigError(
            "entryScript",
            "entryScript is required: the path of the scoring script (score.py), or"
            " replicaUrls for replicas someone else runs",
        )

    base = Path(base_dir).absolute()
    if source_text is not None:
        source = _join(base, source_text, "sourceDirectory")
        entry = _join(source, entry_text, "entryScript")
    else:
        entry = _join(base, entry_text, "entryScript")
        source = entry.parent
    if not entry.is_relative_to(source) or entry == source:
        raise ConfigError(
            "entryScript",
            f"entryScript {entry_text!r} is outside sourceDirectory ({source}): the scoring"
            " script must be inside the folder shipped with it",
        )
    if check_files:
        if source_text is not None and not source.is_dir():
            raise ConfigError(
                "sourceDirectory", f"sourceDirectory {source_text!r} is not a folder ({source})"
            )
        if not entry.is_file():
            raise ConfigError("entryScript", f"entryScript {entry_text!r} is not a file ({entry})")
    return InferenceConfig(
        entry_script=entry, source_directory=source, environment_variables=variables
    )


def inference_config_to_json(config: InferenceConfig) -> dict[str, Any]:
    """The configuration as `inferenceconfig.json`: an absolute `sourceDirectory` and the
    script relative to it, so parsing it back from any folder gives `config`."""
    if config.replica_urls:
        return {"replicaUrls": list(config.replica_urls)}
    assert config.entry_script is not None and config.source_directory is not None
    return {
        "entryScript": config.entry_script.relative_to(config.source_directory).as_posix(),
        "sourceDirectory": str(config.source_directory),
        "environment": {"environmentVariables": dict(config.environment_variables)},
    }


def _replica_urls(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            "replicaUrls",
            f"replicaUrls must be a non-empty list of URLs like http://10.0.0.5:5001, got"
            f" {_show(value)}",
        )
    if len(value) > MAX_REPLICA_URLS:
        raise ConfigError(
            "replicaUrls", f"replicaUrls lists {len(value)} URLs, at most {MAX_REPLICA_URLS}"
        )
    urls: list[str] = []
    for index, item in enumerate(value):
        key = f"replicaUrls[{index}]"
        url = _replica_url(item, key)
        if url in urls:
            raise ConfigError(key, f"{key} ({_show(item)}) is {url} again: list each replica once")
        urls.append(url)
    return tuple(urls)


def _replica_url(value: object, key: str) -> str:
    """`value` as `http://host:port` (port 80 when not given), or ConfigError naming `key`."""
    example = "http://10.0.0.5:5001"
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(key, f"{key} must be a URL like {example}, got {_show(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise ConfigError(key, f"{key} ({_show(value)}) is not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise ConfigError(
            key,
            f"{key} ({_show(value)}) uses https: the router speaks plain HTTP to replicas,"
            " give the replica's http:// address on a network you trust",
        )
    if scheme != "http" or not parts.netloc:
        raise ConfigError(key, f"{key} ({_show(value)}) must be an http URL like {example}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(key, f"{key} must not carry credentials in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            key,
            f"{key} ({_show(value)}) must be host and port only, like {example}: the router"
            " calls /score and the health check GET / on it",
        )
    host = parts.hostname or ""
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ConfigError(key, f"{key} ({_show(value)}) has an invalid IPv6 address") from None
    elif not _HOST.fullmatch(host):
        raise ConfigError(key, f"{key} ({_show(value)}) has no valid host name")
    if port == 0:
        raise ConfigError(key, f"{key} ({_show(value)}) has port 0: give the replica's port")
    return f"http://{host}:{port or 80}"


def static_deployment_config(
    config: DeploymentConfig, replicas: int, *, given: Collection[str] | None = None
) -> DeploymentConfig:
    """`config` for a version served by `replicas` replicaUrls: exactly those replicas
    (numReplicas = how many, autoscaling off, no warm ones), since mlfe neither starts nor
    stops them; no environment variables, since it does not start them either.

    A setting that says otherwise is refused if the request gave it (`given`: the
    top-level keys of deploymentconfig.json it spelled out; None: a whole file), and
    replaced if it was kept from before (an update switching a version to replicaUrls).
    An autoScaler section equal to the defaults counts as none: it asks for nothing.
    """

    def asked(key: str) -> bool:
        return given is None or key in given

    if asked("numReplicas") and config.num_replicas not in (None, replicas):
        raise ConfigError(
            "numReplicas",
            f"numReplicas ({config.num_replicas}) must be the number of replicaUrls"
            f" ({replicas}), or left out: mlfe neither starts nor stops those replicas",
        )
    if asked("autoScaler") and config.autoscale.enabled and config.autoscale != AutoscaleConfig():
        raise ConfigError(
            "autoScaler",
            "autoScaler settings do not apply to a version with replicaUrls (mlfe neither"
            " starts nor stops those replicas): leave autoScaler out",
        )
    if asked("environmentVariables") and config.environment_variables:
        raise ConfigError(
            "environmentVariables",
            "environmentVariables cannot be set for a version with replicaUrls: mlfe does"
            " not start those replicas",
        )
    fixed = AutoscaleConfig(
        enabled=False, min_replicas=replicas, max_replicas=replicas, warm_replicas=0
    )
    return replace(config, autoscale=fixed, num_replicas=replicas, environment_variables=_EMPTY)


def _join(base: Path, text: str, key: str) -> Path:
    if "\0" in text:
        raise ConfigError(key, f"{key} contains a NUL character")
    return Path(os.path.normpath(base / text))


# -- reading JSON objects ---------------------------------------------------------------


class _Object:
    """One JSON object being read: typed access by key, each error naming its full path.

    Unknown keys are refused up front, before any value is read, so a misspelt key is
    reported as such rather than as a confusing consequence of its default.
    """

    def __init__(
        self,
        data: object,
        path: str,
        *,
        known: Collection[str],
        ignored: Collection[str] = (),
        what: str | None = None,
    ) -> None:
        if not isinstance(data, dict):
            label = what or path
            raise ConfigError(path, f"{label} must be a JSON object, got {_show(data)}")
        self._path = path
        for name in data:
            if name not in known and name not in ignored:
                raise ConfigError(self.key(str(name)), self._unknown(name, known, ignored))
        # null means "not given", as Azure's SDK reads these files.
        self._values = {k: v for k, v in data.items() if k in known and v is not None}

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _unknown(self, name: object, known: Collection[str], ignored: Collection[str]) -> str:
        message = f"unknown key {self.key(str(name))!r}"
        close = get_close_matches(str(name), [*known, *ignored], n=1)
        if close:
            message += f" (did you mean {self.key(close[0])!r}?)"
        return message

    def has(self, name: str) -> bool:
        return name in self._values

    def remaining(self) -> list[str]:
        return list(self._values)

    def take(self, name: str) -> object:
        return self._values.pop(name, None)

    def section(
        self, name: str, *, known: Collection[str], ignored: Collection[str] = ()
    ) -> _Object:
        value = self.take(name)
        return _Object({} if value is None else value, self.key(name), known=known, ignored=ignored)

    def optional_boolean(self, name: str) -> bool | None:
        value = self.take(name)
        if value is None or isinstance(value, bool):
            return value
        raise ConfigError(
            self.key(name), f"{self.key(name)} must be true or false, got {_show(value)}"
        )

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional_boolean(name)
        return default if value is None else value

    def optional_integer(self, name: str, *, minimum: int) -> int | None:
        value = self.take(name)
        if value is None:
            return None
        # bool is an int subclass in Python; in a configuration file it is a mistake.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(
                self.key(name), f"{self.key(name)} must be an integer, got {_show(value)}"
            )
        if value < minimum:
            raise ConfigError(
                self.key(name), f"{self.key(name)} must be at least {minimum}, got {value}"
            )
        return value

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self.optional_integer(name, minimum=minimum)
        return default if value is None else value

    def optional_number(
        self,
        name: str,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float | None:
        value = self.take(name)
        if value is None:
            return None
        key = self.key(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(key, f"{key} must be a number, got {_show(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(key, f"{key} must be a finite number, got {_show(value)}")
        if minimum is not None and number < minimum:
            raise ConfigError(key, f"{key} must be at least {minimum:g}, got {number:g}")
        if above is not None and number <= above:
            raise ConfigError(key, f"{key} must be above {above:g}, got {number:g}")
        if maximum is not None and number > maximum:
            raise ConfigError(key, f"{key} must be at most {maximum:g}, got {number:g}")
        return number

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self.optional_number(name, minimum=minimum, above=above, maximum=maximum)
        return float(default) if value is None else value

    def optional_string(self, name: str) -> str | None:
        value = self.take(name)
        if value is None or isinstance(value, str):
            return value
        raise ConfigError(self.key(name), f"{self.key(name)} must be a string, got {_show(value)}")

    def string(self, name: str, default: str) -> str:
        value = self.optional_string(name)
        return default if value is None else value

    def string_map(self, name: str) -> Mapping[str, str]:
        value = self.take(name)
        if value is None:
            return _EMPTY
        key = self.key(name)
        if not isinstance(value, dict):
            raise ConfigError(key, f"{key} must be a JSON object of strings, got {_show(value)}")
        for item_key, item in value.items():
            if not isinstance(item, str):
                raise ConfigError(
                    f"{key}.{item_key}", f"{key}.{item_key} must be a string, got {_show(item)}"
                )
        return MappingProxyType(dict(value))


def _show(value: object) -> str:
    """A value as the user wrote it in JSON, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _compact(number: float) -> int | float:
    """Whole numbers as JSON integers (0.5 stays 0.5, 70.0 becomes 70)."""
    return int(number) if number.is_integer() else number
