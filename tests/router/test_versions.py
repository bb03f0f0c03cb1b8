"""The version rules and what a change of a version needs: pure, no sockets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from router.config import ConfigError, parse_deployment_config, parse_inference_config
from router.service_requests import AuthRequest, InvalidRequest
from router.store import ServiceRecord, VersionRecord
from router.versions import (
    MAX_VERSIONS,
    check_auth,
    check_no_other_control,
    check_versions,
    prefixed,
    rollout_for,
    valid_percentile,
)

INFERENCE = parse_inference_config(
    {"entryScript": "score.py", "sourceDirectory": "src"}, base_dir=Path("/"), check_files=False
)


def version(
    name: str,
    traffic: float = 0.0,
    *,
    is_default: bool = False,
    is_control: bool = False,
    **deployment: object,
) -> VersionRecord:
    return VersionRecord(
        name=name,
        deployment=parse_deployment_config(deployment or {"numReplicas": 1}),
        inference=INFERENCE,
        traffic_percentile=traffic,
        is_default=is_default,
        is_control=is_control,
    )


def many(count: int) -> tuple[VersionRecord, ...]:
    return (version("v0", is_default=True), *(version(f"v{i}") for i in range(1, count)))


@pytest.mark.parametrize("count", range(1, MAX_VERSIONS + 1))
def test_a_service_has_one_to_six_versions(count: int) -> None:
    check_versions(many(count))


@pytest.mark.parametrize("count", [0, MAX_VERSIONS + 1])
def test_no_versions_or_too_many_are_refused(count: int) -> None:
    versions = many(count) if count else ()
    with pytest.raises(InvalidRequest, match=f"this change leaves {count}"):
        check_versions(versions)


def test_exactly_one_version_is_the_default() -> None:
    with pytest.raises(InvalidRequest, match="exactly one version must be the default, not none"):
        check_versions((version("a"), version("b")))
    with pytest.raises(InvalidRequest, match=r"not \['a', 'b'\]"):
        check_versions((version("a", is_default=True), version("b", is_default=True)))


def test_at_most_one_version_is_the_control() -> None:
    check_versions((version("a", is_default=True), version("b", is_control=True)))
    with pytest.raises(InvalidRequest, match=r"at most one version may be the control"):
        check_versions(
            (version("a", is_default=True, is_control=True), version("b", is_control=True))
        )


def test_a_second_control_is_refused_by_name() -> None:
    versions = (version("a", is_default=True), version("b", is_control=True))
    check_no_other_control(versions, "b")  # the control itself may stay the control
    with pytest.raises(InvalidRequest, match="version 'b' is the control already"):
        check_no_other_control(versions, "c")


def test_traffic_adds_up_to_at_most_100() -> None:
    # User floats: 33.3 + 33.3 + 33.4 is 100, not a hair over it.
    check_versions((version("a", 33.3, is_default=True), version("b", 33.3), version("c", 33.4)))
    with pytest.raises(InvalidRequest, match=r"add up to 100\.5, more than 100 \(a 60, b 40\.5\)"):
        check_versions((version("a", 60, is_default=True), version("b", 40.5)))


@pytest.mark.parametrize("value", [0, 12.5, 100])
def test_a_percentile_between_0_and_100_is_taken(value: float) -> None:
    assert valid_percentile(value) == value


@pytest.mark.parametrize("value", [-1, 100.01])
def test_a_percentile_outside_0_to_100_is_refused(value: float) -> None:
    with pytest.raises(InvalidRequest, match="trafficPercentile must be between 0 and 100"):
        valid_percentile(value)


def test_a_version_may_restate_the_services_auth_but_not_change_it() -> None:
    record = ServiceRecord("svc", "key", "p" * 32, "s" * 32, versions=many(1))
    check_auth(record, AuthRequest())
    check_auth(record, AuthRequest("key", primary_key="p" * 32))
    with pytest.raises(InvalidRequest, match="ask for token auth, but service 'svc' uses key"):
        check_auth(record, AuthRequest("token"))
    with pytest.raises(InvalidRequest, match=r"keys\.secondaryKey differs"):
        check_auth(record, AuthRequest(secondary_key="other"))


def test_what_a_change_of_a_version_needs() -> None:
    fixed = version("a", numReplicas=1)
    assert rollout_for(fixed, replace(fixed, traffic_percentile=50)) == "none"
    assert rollout_for(fixed, version("a", numReplicas=3)) == "scale"
    assert rollout_for(fixed, version("a", numReplicas=1, scoringTimeoutMs=5000)) == "roll"
    auto = version("a", autoScaler={"autoscaleEnabled": True, "maxReplicas": 4})
    assert (
        rollout_for(auto, version("a", autoScaler={"autoscaleEnabled": True, "maxReplicas": 8}))
        == "scale"
    )
    assert rollout_for(fixed, auto) == "roll"
    assert (
        rollout_for(
            fixed, replace(fixed, inference=replace(INFERENCE, entry_script=Path("other.py")))
        )
        == "roll"
    )


def test_a_config_error_is_told_under_its_full_key() -> None:
    nested = prefixed(
        ConfigError("autoScaler.maxReplicas", "autoScaler.maxReplicas (2) is low"),
        "deploymentConfig",
    )
    assert (nested.key, nested.message) == (
        "deploymentConfig.autoScaler.maxReplicas",
        "deploymentConfig.autoScaler.maxReplicas (2) is low",
    )
    other = prefixed(ConfigError("numReplicas", "must be a number"), "deploymentConfig")
    assert other.message == "deploymentConfig.numReplicas: must be a number"
