"""deploymentconfig.json / inferenceconfig.json parsing: Azure's keys and defaults, every
rule a user can break (with the key named), round trips and partial updates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.config import (
    AutoscaleConfig,
    ConfigError,
    DeploymentConfig,
    InferenceConfig,
    LivenessProbeConfig,
    ModelRef,
    ResourceConfig,
    deployment_config_to_json,
    inference_config_to_json,
    merge_deployment_config,
    parse_deployment_config,
    parse_inference_config,
    validate_service_name,
    validate_version_name,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"

# Every key Azure's CLI reads from an AKS deploymentconfig.json, with non-default values.
FULL_AZURE_FILE: dict[str, Any] = {
    "computeType": "AKS",
    "computeTargetName": "aks-cluster",
    "autoScaler": {
        "autoscaleEnabled": True,
        "minReplicas": 2,
        "maxReplicas": 8,
        "refreshPeriodInSeconds": 5,
        "targetUtilization": 55,
    },
    "dataCollection": {"storageEnabled": True},
    "authEnabled": True,
    "tokenAuthEnabled": False,
    "keys": {"primaryKey": "primary-key-123", "secondaryKey": "secondary-key-456"},
    "containerResourceRequirements": {
        "cpu": 0.5,
        "memoryInGB": 1.0,
        "cpuLimit": 2,
        "memoryInGBLimit": 4,
    },
    "gpuCores": 1,
    "appInsightsEnabled": True,
    "scoringTimeoutMs": 5000,
    "maxConcurrentRequestsPerContainer": 4,
    "maxQueueWaitMs": 250,
    "livenessProbeRequirements": {
        "periodSeconds": 20,
        "initialDelaySeconds": 30,
        "timeoutSeconds": 5,
        "successThreshold": 1,
        "failureThreshold": 6,
    },
    "namespace": "ml-prod",
}


def error_for(data: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_deployment_config(data)
    return caught.value


# -- defaults ---------------------------------------------------------------------------


def test_an_empty_file_gets_the_defaults_of_design_section_2() -> None:
    config = parse_deployment_config({})
    assert config == DeploymentConfig()
    assert config.autoscale == AutoscaleConfig(
        enabled=True,
        min_replicas=1,
        max_replicas=10,
        refresh_period_seconds=1,
        target_utilization=70,
        warm_replicas=1,
        scale_down_delay_seconds=60,
    )
    assert config.num_replicas is None
    assert (config.auth_enabled, config.token_auth_enabled, config.auth_mode) == (
        True,
        False,
        "key",
    )
    assert (config.primary_key, config.secondary_key) == (None, None)
    assert config.scoring_timeout_ms == 60_000
    assert config.max_concurrent_requests_per_container == 1
    assert config.max_queue_wait_ms == 500
    assert config.resources == ResourceConfig(cpu=0.1, memory_gb=0.5)
    assert config.resources.cpu_limit is None and config.resources.gpu == 0
    assert config.liveness_probe == LivenessProbeConfig(
        period_seconds=10,
        initial_delay_seconds=310,
        timeout_seconds=2,
        success_threshold=1,
        failure_threshold=3,
    )
    assert dict(config.environment_variables) == {}
    assert config.namespace is None


def test_the_example_deployment_file_parses() -> None:
    config = parse_deployment_config(json.loads((EXAMPLE / "deploymentconfig.json").read_text()))
    assert config.autoscale.max_replicas == 4
    assert config.scoring_timeout_ms == 5000
    assert config.resources.cpu == 0.5


def test_every_azure_key_is_read_or_accepted() -> None:
    config = parse_deployment_config(FULL_AZURE_FILE)
    assert config.autoscale.min_replicas == 2
    assert config.autoscale.max_replicas == 8
    assert config.autoscale.refresh_period_seconds == 5
    assert config.autoscale.target_utilization == 55
    assert config.primary_key == "primary-key-123"
    assert config.secondary_key == "secondary-key-456"
    assert config.resources == ResourceConfig(
        cpu=0.5, memory_gb=1.0, cpu_limit=2, memory_gb_limit=4, gpu=1
    )
    assert config.scoring_timeout_ms == 5000
    assert config.max_concurrent_requests_per_container == 4
    assert config.max_queue_wait_ms == 250
    assert config.liveness_probe == LivenessProbeConfig(20, 30, 5, 1, 6)
    assert config.namespace == "ml-prod"


def test_an_aks_endpoint_file_carries_version_name_and_traffic() -> None:
    config = parse_deployment_config(
        {"computeType": "AKSENDPOINT", "versionName": "blue", "trafficPercentile": 20}
    )
    assert (config.version_name, config.traffic_percentile) == ("blue", 20)


def test_null_means_not_given() -> None:
    config = parse_deployment_config(
        {"numReplicas": None, "autoScaler": None, "keys": {"primaryKey": None}, "namespace": None}
    )
    assert config == DeploymentConfig()


def test_mlfe_extensions_warm_replicas_and_scale_down_delay() -> None:
    config = parse_deployment_config(
        {"autoScaler": {"warmReplicas": 0, "scaleDownDelaySeconds": 2.5}}
    )
    assert config.autoscale.warm_replicas == 0
    assert config.autoscale.scale_down_delay_seconds == 2.5


def test_environment_variables_and_tags_are_immutable() -> None:
    config = parse_deployment_config({"environmentVariables": {"A": "1"}, "tags": {"team": "x"}})
    assert dict(config.environment_variables) == {"A": "1"}
    with pytest.raises(TypeError):
        config.environment_variables["A"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.tags["team"] = "y"  # type: ignore[index]


def test_configs_are_hashable_and_compare_by_value() -> None:
    data = {"environmentVariables": {"A": "1"}, "tags": {"t": "x"}}
    first, second = parse_deployment_config(data), parse_deployment_config(data)
    assert first == second and hash(first) == hash(second)
    assert first != parse_deployment_config({"environmentVariables": {"A": "2"}})


def test_keys_never_appear_in_the_repr() -> None:
    config = parse_deployment_config({"keys": {"primaryKey": "s3cret-primary"}})
    assert "s3cret-primary" not in repr(config)


# -- replicas and autoscaling ------------------------------------------------------------


def test_num_replicas_turns_autoscaling_off() -> None:
    config = parse_deployment_config({"numReplicas": 3})
    assert config.num_replicas == 3
    assert config.autoscale.enabled is False
    # One shape for consumers: the fixed count is both bounds, with no warm standby.
    assert (config.autoscale.min_replicas, config.autoscale.max_replicas) == (3, 3)
    assert config.autoscale.warm_replicas == 0


def test_autoscale_disabled_with_a_count_is_valid() -> None:
    config = parse_deployment_config({"autoScaler": {"autoscaleEnabled": False}, "numReplicas": 2})
    assert (config.autoscale.enabled, config.num_replicas) == (False, 2)


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (
            {"autoScaler": {"minReplicas": 3, "maxReplicas": 2}},
            "autoScaler.maxReplicas",
            "autoScaler.maxReplicas (2) is below autoScaler.minReplicas (3)",
        ),
        (
            {"autoScaler": {"minReplicas": 11}},
            "autoScaler.minReplicas",
            "autoScaler.minReplicas (11) is above autoScaler.maxReplicas (10, the default)",
        ),
        (
            {"autoScaler": {"minReplicas": 0}},
            "autoScaler.minReplicas",
            "autoScaler.minReplicas must be at least 1, got 0",
        ),
        (
            {"autoScaler": {"maxReplicas": 0}},
            "autoScaler.maxReplicas",
            "autoScaler.maxReplicas must be at least 1, got 0",
        ),
        (
            {"autoScaler": {"autoscaleEnabled": True}, "numReplicas": 2},
            "numReplicas",
            "numReplicas (2) cannot be set while autoScaler.autoscaleEnabled is true",
        ),
        (
            {"autoScaler": {"autoscaleEnabled": False}},
            "numReplicas",
            "numReplicas is required when autoScaler.autoscaleEnabled is false",
        ),
        (
            {"numReplicas": 2, "autoScaler": {"maxReplicas": 5}},
            "autoScaler.maxReplicas",
            "autoScaler.maxReplicas is set but autoscaling is off (numReplicas is 2)",
        ),
        (
            {"numReplicas": 2, "autoScaler": {"warmReplicas": 2}},
            "autoScaler.warmReplicas",
            "autoScaler.warmReplicas is set but autoscaling is off",
        ),
        ({"numReplicas": 0}, "numReplicas", "numReplicas must be at least 1, got 0"),
        (
            {"autoScaler": {"targetUtilization": 0}},
            "autoScaler.targetUtilization",
            "autoScaler.targetUtilization must be above 0, got 0",
        ),
        (
            {"autoScaler": {"targetUtilization": 100.5}},
            "autoScaler.targetUtilization",
            "autoScaler.targetUtilization must be at most 100, got 100.5",
        ),
        (
            {"autoScaler": {"targetUtilization": -5}},
            "autoScaler.targetUtilization",
            "must be above 0, got -5",
        ),
        (
            {"autoScaler": {"refreshPeriodInSeconds": 0}},
            "autoScaler.refreshPeriodInSeconds",
            "must be above 0, got 0",
        ),
        (
            {"autoScaler": {"warmReplicas": -1}},
            "autoScaler.warmReplicas",
            "must be at least 0, got -1",
        ),
        (
            {"autoScaler": {"scaleDownDelaySeconds": -1}},
            "autoScaler.scaleDownDelaySeconds",
            "must be at least 0, got -1",
        ),
        (
            {"trafficPercentile": 101},
            "trafficPercentile",
            "trafficPercentile must be at most 100, got 101",
        ),
        ({"trafficPercentile": -1}, "trafficPercentile", "must be at least 0, got -1"),
    ],
)
def test_replica_and_percent_rules(data: dict[str, Any], key: str, message: str) -> None:
    error = error_for(data)
    assert error.key == key
    assert message in str(error)


# -- auth --------------------------------------------------------------------------------


def test_token_auth_turns_key_auth_off_by_default() -> None:
    config = parse_deployment_config({"tokenAuthEnabled": True})
    assert (config.auth_enabled, config.token_auth_enabled, config.auth_mode) == (
        False,
        True,
        "token",
    )


def test_auth_can_be_turned_off() -> None:
    assert parse_deployment_config({"authEnabled": False}).auth_mode == "none"


def test_both_auth_modes_are_refused() -> None:
    error = error_for({"authEnabled": True, "tokenAuthEnabled": True})
    assert error.key == "tokenAuthEnabled"
    assert "cannot both be true" in str(error)


@pytest.mark.parametrize("bad_key", ["has space", "", "x" * 257, "tab\there", "é-unicode"])
def test_unusable_keys_are_refused_without_echoing_them(bad_key: str) -> None:
    error = error_for({"keys": {"secondaryKey": bad_key}})
    assert error.key == "keys.secondaryKey"
    if bad_key:
        assert bad_key not in str(error)


def test_a_non_string_key_is_refused_without_echoing_it() -> None:
    error = error_for({"keys": {"primaryKey": 123456789}})
    assert error.key == "keys.primaryKey"
    assert "123456789" not in str(error)


# -- timeouts, resources, probe ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (
            {"scoringTimeoutMs": -1},
            "scoringTimeoutMs",
            "scoringTimeoutMs must be at least 1, got -1",
        ),
        ({"scoringTimeoutMs": 0}, "scoringTimeoutMs", "must be at least 1, got 0"),
        ({"maxQueueWaitMs": -500}, "maxQueueWaitMs", "must be at least 1, got -500"),
        (
            {"maxConcurrentRequestsPerContainer": 0},
            "maxConcurrentRequestsPerContainer",
            "must be at least 1, got 0",
        ),
        (
            {"containerResourceRequirements": {"cpu": 0}},
            "containerResourceRequirements.cpu",
            "must be above 0, got 0",
        ),
        (
            {"containerResourceRequirements": {"memoryInGB": -1}},
            "containerResourceRequirements.memoryInGB",
            "must be above 0, got -1",
        ),
        (
            {"containerResourceRequirements": {"cpu": 2, "cpuLimit": 1}},
            "containerResourceRequirements.cpuLimit",
            "containerResourceRequirements.cpuLimit (1) is below containerResourceRequirements.cpu (2)",
        ),
        (
            {"containerResourceRequirements": {"memoryInGBLimit": 0.25}},
            "containerResourceRequirements.memoryInGBLimit",
            "(0.25) is below containerResourceRequirements.memoryInGB (0.5)",
        ),
        (
            {"containerResourceRequirements": {"gpu": -1}},
            "containerResourceRequirements.gpu",
            "must be at least 0, got -1",
        ),
        (
            {"gpuCores": 1, "containerResourceRequirements": {"gpu": 2}},
            "gpuCores",
            "disagree",
        ),
        (
            {"livenessProbeRequirements": {"periodSeconds": 0}},
            "livenessProbeRequirements.periodSeconds",
            "must be at least 1, got 0",
        ),
        (
            {"livenessProbeRequirements": {"timeoutSeconds": -2}},
            "livenessProbeRequirements.timeoutSeconds",
            "must be at least 1, got -2",
        ),
        (
            {"livenessProbeRequirements": {"failureThreshold": 0}},
            "livenessProbeRequirements.failureThreshold",
            "must be at least 1, got 0",
        ),
        (
            {"livenessProbeRequirements": {"successThreshold": 2}},
            "livenessProbeRequirements.successThreshold",
            "must be 1 for a liveness probe",
        ),
        ({"namespace": "Prod_NS"}, "namespace", "is not a Kubernetes namespace"),
        ({"namespace": "-x"}, "namespace", "is not a Kubernetes namespace"),
        ({"computeType": "ACI"}, "computeType", "computeType 'ACI' is not supported"),
        ({"versionName": "Blue"}, "versionName", "version name 'Blue' is invalid"),
        (
            {"environmentVariables": {"A=B": "1"}},
            "environmentVariables",
            "invalid variable name 'A=B'",
        ),
        (
            {"environmentVariables": {"A": "x\0y"}},
            "environmentVariables.A",
            "contains a NUL character",
        ),
    ],
)
def test_value_rules(data: dict[str, Any], key: str, message: str) -> None:
    error = error_for(data)
    assert error.key == key
    assert message in str(error)


def test_gpu_cores_at_the_top_level_sets_the_gpu_request() -> None:
    config = parse_deployment_config({"gpuCores": 2})
    assert config.resources.gpu == 2
    assert deployment_config_to_json(config)["containerResourceRequirements"]["gpu"] == 2


# -- types and unknown keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (
            {"autoScaler": {"minReplicas": "two"}},
            "autoScaler.minReplicas",
            "autoScaler.minReplicas must be an integer, got 'two'",
        ),
        # True is an int in Python; in a config file it is a mistake.
        ({"numReplicas": True}, "numReplicas", "numReplicas must be an integer, got true"),
        ({"scoringTimeoutMs": 1.5}, "scoringTimeoutMs", "must be an integer, got 1.5"),
        ({"scoringTimeoutMs": "60000"}, "scoringTimeoutMs", "must be an integer, got '60000'"),
        ({"authEnabled": 1}, "authEnabled", "authEnabled must be true or false, got 1"),
        ({"authEnabled": "false"}, "authEnabled", "must be true or false, got 'false'"),
        (
            {"autoScaler": {"targetUtilization": False}},
            "autoScaler.targetUtilization",
            "must be a number, got false",
        ),
        (
            {"containerResourceRequirements": {"cpu": "0.5"}},
            "containerResourceRequirements.cpu",
            "must be a number, got '0.5'",
        ),
        (
            {"containerResourceRequirements": {"cpu": float("nan")}},
            "containerResourceRequirements.cpu",
            "must be a finite number",
        ),
        (
            {"autoScaler": {"scaleDownDelaySeconds": float("inf")}},
            "autoScaler.scaleDownDelaySeconds",
            "must be a finite number",
        ),
        ({"autoScaler": [1, 2]}, "autoScaler", "autoScaler must be a JSON object, got a list"),
        ({"keys": "abc"}, "keys", "keys must be a JSON object"),
        (
            {"environmentVariables": {"OMP_NUM_THREADS": 1}},
            "environmentVariables.OMP_NUM_THREADS",
            "environmentVariables.OMP_NUM_THREADS must be a string, got 1",
        ),
        ({"environmentVariables": ["A=1"]}, "environmentVariables", "must be a JSON object"),
        ({"description": 5}, "description", "description must be a string, got 5"),
        (
            {"autoScaler": {"minReplica": 2}},
            "autoScaler.minReplica",
            "unknown key 'autoScaler.minReplica' (did you mean 'autoScaler.minReplicas'?)",
        ),
        ({"numReplica": 2}, "numReplica", "unknown key 'numReplica' (did you mean 'numReplicas'?)"),
        ({"frobnicate": True}, "frobnicate", "unknown key 'frobnicate'"),
        (
            {"livenessProbeRequirements": {"period": 3}},
            "livenessProbeRequirements.period",
            "unknown key",
        ),
        ({"keys": {"tertiaryKey": "abc"}}, "keys.tertiaryKey", "unknown key"),
    ],
)
def test_type_rules_and_unknown_keys(data: dict[str, Any], key: str, message: str) -> None:
    error = error_for(data)
    assert error.key == key
    assert message in str(error)


@pytest.mark.parametrize("data", [[], "text", 3, None])
def test_the_file_must_be_an_object(data: object) -> None:
    assert "the deployment configuration must be a JSON object" in str(error_for(data))


def test_a_misspelt_key_is_reported_before_its_consequences() -> None:
    # Without "numReplicas" the file would fail for a missing count; the typo is the news.
    error = error_for({"autoScaler": {"autoscaleEnabled": False}, "numReplica": 2})
    assert error.key == "numReplica"


# -- round trip and merge ----------------------------------------------------------------

ROUND_TRIP_CASES: list[dict[str, Any]] = [
    {},
    FULL_AZURE_FILE,
    {"numReplicas": 4, "authEnabled": False},
    {"tokenAuthEnabled": True, "keys": {"secondaryKey": "only-secondary"}},
    {
        "autoScaler": {"targetUtilization": 62.5, "refreshPeriodInSeconds": 0.5, "warmReplicas": 3},
        "environmentVariables": {"A": "1", "B": ""},
        "tags": {"owner": "me"},
        "description": "blue version",
        "containerResourceRequirements": {"cpu": 0.25, "memoryInGB": 2, "gpu": 1},
        "versionName": "blue",
        "trafficPercentile": 12.5,
    },
]


@pytest.mark.parametrize("data", ROUND_TRIP_CASES)
def test_to_json_round_trips_exactly(data: dict[str, Any]) -> None:
    config = parse_deployment_config(data)
    as_json = json.loads(json.dumps(deployment_config_to_json(config)))
    assert parse_deployment_config(as_json) == config
    # And once more: the canonical form is a fixed point.
    assert deployment_config_to_json(parse_deployment_config(as_json)) == as_json


def test_to_json_writes_whole_numbers_as_integers() -> None:
    out = deployment_config_to_json(parse_deployment_config({}))
    assert out["autoScaler"]["targetUtilization"] == 70
    assert isinstance(out["autoScaler"]["targetUtilization"], int)
    assert out["containerResourceRequirements"] == {"cpu": 0.1, "memoryInGB": 0.5}


def test_to_json_can_leave_the_keys_out() -> None:
    config = parse_deployment_config({"keys": {"primaryKey": "pk-1", "secondaryKey": "sk-2"}})
    assert deployment_config_to_json(config)["keys"] == {
        "primaryKey": "pk-1",
        "secondaryKey": "sk-2",
    }
    assert "keys" not in deployment_config_to_json(config, include_keys=False)


def test_merge_changes_only_the_given_keys() -> None:
    current = parse_deployment_config(FULL_AZURE_FILE)
    merged = merge_deployment_config(
        current, {"autoScaler": {"maxReplicas": 12}, "scoringTimeoutMs": 9000}
    )
    assert merged.autoscale.max_replicas == 12
    assert merged.autoscale.min_replicas == 2  # a sibling in the same section stays
    assert merged.scoring_timeout_ms == 9000
    assert merged.resources == current.resources
    assert merged.primary_key == current.primary_key
    # Everything else is exactly as before.
    assert merged == parse_deployment_config(
        {
            **FULL_AZURE_FILE,
            "autoScaler": {**FULL_AZURE_FILE["autoScaler"], "maxReplicas": 12},
            "scoringTimeoutMs": 9000,
        }
    )


def test_merge_with_no_changes_is_the_identity() -> None:
    current = parse_deployment_config(FULL_AZURE_FILE)
    assert merge_deployment_config(current, {}) == current


def test_merge_null_resets_a_key_to_its_default() -> None:
    current = parse_deployment_config(
        {"scoringTimeoutMs": 5000, "environmentVariables": {"A": "1", "B": "2"}}
    )
    merged = merge_deployment_config(
        current, {"scoringTimeoutMs": None, "environmentVariables": {"A": None, "C": "3"}}
    )
    assert merged.scoring_timeout_ms == 60_000
    assert dict(merged.environment_variables) == {"B": "2", "C": "3"}


def test_merge_switches_between_autoscaling_and_a_fixed_count() -> None:
    autoscaled = parse_deployment_config({"autoScaler": {"minReplicas": 2, "maxReplicas": 6}})
    fixed = merge_deployment_config(autoscaled, {"numReplicas": 3})
    assert (fixed.autoscale.enabled, fixed.num_replicas) == (False, 3)

    again = merge_deployment_config(fixed, {"autoScaler": {"autoscaleEnabled": True}})
    assert again.autoscale.enabled and again.num_replicas is None
    assert again.autoscale == AutoscaleConfig()  # the old bounds went with the fixed count

    by_null = merge_deployment_config(fixed, {"numReplicas": None})
    assert by_null.autoscale.enabled and by_null.num_replicas is None

    # numReplicas: null on an autoscaled version changes nothing.
    assert merge_deployment_config(autoscaled, {"numReplicas": None}) == autoscaled

    disabled = merge_deployment_config(
        autoscaled, {"autoScaler": {"autoscaleEnabled": False}, "numReplicas": 1}
    )
    assert (disabled.autoscale.enabled, disabled.num_replicas) == (False, 1)


def test_merge_validates_the_result_and_leaves_the_current_config_alone() -> None:
    current = parse_deployment_config({"autoScaler": {"minReplicas": 2, "maxReplicas": 4}})
    with pytest.raises(ConfigError) as caught:
        merge_deployment_config(current, {"autoScaler": {"maxReplicas": 1}})
    assert caught.value.key == "autoScaler.maxReplicas"
    assert "autoScaler.maxReplicas (1) is below autoScaler.minReplicas (2)" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        merge_deployment_config(current, {"tokenAuthEnabled": True})
    assert caught.value.key == "tokenAuthEnabled"
    with pytest.raises(ConfigError) as caught:
        merge_deployment_config(current, {"autoScaler": {"maxReplica": 5}})
    assert caught.value.key == "autoScaler.maxReplica"
    with pytest.raises(ConfigError):
        merge_deployment_config(current, ["not", "an", "object"])
    assert current.autoscale.max_replicas == 4


def test_merge_to_token_auth_needs_key_auth_off() -> None:
    current = parse_deployment_config({})
    merged = merge_deployment_config(current, {"authEnabled": False, "tokenAuthEnabled": True})
    assert merged.auth_mode == "token"


# -- names and models ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "diabetes", "my-service-2", "a" * 32, "a1b"])
def test_valid_names(name: str) -> None:
    assert validate_service_name(name) == name
    assert validate_version_name(name) == name


@pytest.mark.parametrize(
    "name", ["ab", "a" * 33, "Diabetes", "1abc", "-abc", "abc-", "my_service", "a b c", "", None, 7]
)
def test_invalid_service_names(name: object) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_service_name(name)
    assert caught.value.key == "name"
    assert "3 to 32 lowercase letters" in str(caught.value)


@pytest.mark.parametrize("name", ["a", "b", "v2", "ab"])
def test_versions_may_be_short(name: str) -> None:
    assert validate_version_name(name) == name


@pytest.mark.parametrize(
    "name", ["a" * 33, "Blue", "1abc", "-abc", "abc-", "my_version", "a b", "", None, 7]
)
def test_invalid_version_names(name: object) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_version_name(name, "versionName")
    assert caught.value.key == "versionName"
    assert "1 to 32 lowercase letters" in str(caught.value)


def test_model_ref_parses_name_version_path() -> None:
    ref = ModelRef.parse("diabetes-model:1:./model")
    assert ref == ModelRef(name="diabetes-model", version="1", path="./model")
    assert str(ref) == "diabetes-model:1:./model"
    assert ModelRef.from_json(ref.to_json()) == ref
    # The path is the rest, colons and all (a Windows drive, a URL-ish name).
    assert ModelRef.parse("m:2:C:\\models\\m").path == "C:\\models\\m"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("model", "model"),
        ("model:1", "model"),
        ("model::path", "model"),
        (":1:path", "model"),
        ("../up:1:path", "model.name"),
        ("m:..:path", "model.version"),
        ("m:1/2:path", "model.version"),
        ("my model:1:path", "model.name"),
    ],
)
def test_model_ref_rules(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ModelRef.parse(text)
    assert caught.value.key == key


# -- inferenceconfig.json ----------------------------------------------------------------


def make_project(root: Path) -> Path:
    """A folder with an inference config next to `src/score.py`."""
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "score.py").write_text("def init(): pass\ndef run(x): return x\n")
    (root / "src" / "pkg" / "alt.py").write_text("")
    return root


def test_the_example_inference_file_parses() -> None:
    config = parse_inference_config(
        json.loads((EXAMPLE / "inferenceconfig.json").read_text()), base_dir=EXAMPLE
    )
    assert config.entry_script == EXAMPLE / "score.py"
    assert config.source_directory == EXAMPLE
    assert dict(config.environment_variables) == {"OMP_NUM_THREADS": "1"}


def test_paths_resolve_from_the_files_folder_and_the_source_directory(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = parse_inference_config(
        {"entryScript": "pkg/alt.py", "sourceDirectory": "src"}, base_dir=root
    )
    assert config == InferenceConfig(
        entry_script=root / "src" / "pkg" / "alt.py", source_directory=root / "src"
    )


def test_without_source_directory_the_scripts_folder_is_the_source(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = parse_inference_config({"entryScript": "src/score.py"}, base_dir=root)
    assert config.entry_script == root / "src" / "score.py"
    assert config.source_directory == root / "src"


def test_a_relative_base_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path)
    monkeypatch.chdir(root)
    config = parse_inference_config(
        {"entryScript": "score.py", "sourceDirectory": "src"}, base_dir=Path(".")
    )
    assert config.entry_script.is_absolute()
    assert config.entry_script == root / "src" / "score.py"


def test_azure_build_keys_are_accepted_and_ignored(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = parse_inference_config(
        {
            "entryScript": "score.py",
            "sourceDirectory": "src",
            "runtime": "python",
            "condaFile": "env.yml",
            "extraDockerfileSteps": None,
            "enableGpu": False,
            "baseImage": None,
            "baseImageRegistry": None,
            "cudaVersion": None,
            "environment": {
                "name": "my-env",
                "version": "1",
                "python": {"userManagedDependencies": False},
                "docker": {"baseImage": "mcr.microsoft.com/azureml/base"},
                "environmentVariables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"},
                "inferencingStackVersion": None,
            },
        },
        base_dir=root,
    )
    assert dict(config.environment_variables) == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({}, "entryScript", "entryScript is required"),
        ({"entryScript": ""}, "entryScript", "entryScript is required"),
        ({"entryScript": 5}, "entryScript", "entryScript must be a string, got 5"),
        ({"entryScript": "missing.py", "sourceDirectory": "src"}, "entryScript", "is not a file"),
        ({"entryScript": "pkg", "sourceDirectory": "src"}, "entryScript", "is not a file"),
        (
            {"entryScript": "score.py", "sourceDirectory": "nowhere"},
            "sourceDirectory",
            "is not a folder",
        ),
        (
            {"entryScript": "../outside.py", "sourceDirectory": "src"},
            "entryScript",
            "is outside sourceDirectory",
        ),
        (
            {"entryScript": "score.py", "sourceDirectory": "src", "runtime": "spark-py"},
            "runtime",
            "is not supported",
        ),
        (
            {"entryScript": "score.py", "sourceDirectory": "src", "entry_script": "x"},
            "entry_script",
            "unknown key",
        ),
        (
            {
                "entryScript": "score.py",
                "sourceDirectory": "src",
                "environment": {"environmentVariable": {}},
            },
            "environment.environmentVariable",
            "did you mean 'environment.environmentVariables'?",
        ),
        (
            {
                "entryScript": "score.py",
                "sourceDirectory": "src",
                "environment": {"environmentVariables": {"N": 1}},
            },
            "environment.environmentVariables.N",
            "must be a string, got 1",
        ),
        ("score.py", "", "the inference configuration must be a JSON object"),
    ],
)
def test_inference_rules(tmp_path: Path, data: object, key: str, message: str) -> None:
    root = make_project(tmp_path)
    (root / "outside.py").write_text("")
    with pytest.raises(ConfigError) as caught:
        parse_inference_config(data, base_dir=root)
    assert caught.value.key == key
    assert message in str(caught.value)


def test_inference_round_trip_is_exact_from_any_folder(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = parse_inference_config(
        {
            "entryScript": "pkg/alt.py",
            "sourceDirectory": "src",
            "environment": {"environmentVariables": {"A": "1"}},
        },
        base_dir=root,
    )
    as_json = json.loads(json.dumps(inference_config_to_json(config)))
    assert as_json["entryScript"] == "pkg/alt.py"
    assert parse_inference_config(as_json, base_dir=Path("/")) == config


def test_without_file_checks_a_vanished_folder_still_parses(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    config = parse_inference_config(
        {"entryScript": "score.py", "sourceDirectory": "src"}, base_dir=root
    )
    stored = inference_config_to_json(config)
    (root / "src" / "score.py").unlink()
    with pytest.raises(ConfigError):
        parse_inference_config(stored, base_dir=root)
    assert parse_inference_config(stored, base_dir=root, check_files=False) == config
