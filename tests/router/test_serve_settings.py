"""`mlfe serve`'s settings from flags and environment, as `mlfe serve` and
`python -m router.serve` both read them (no server started)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from router.cli import build_parser
from router.dataplane import DEFAULT_MAX_BODY
from router.serve import parse_args
from router.serve_settings import (
    DEFAULT_LEASE_DURATION,
    KubernetesSettings,
    ServeSettings,
    add_arguments,
    settings_from,
)

# What deploy/kubernetes/router-deployment.yaml sets.
POD_ENVIRONMENT = {
    "MLFE_NAMESPACE": "mlfe",
    "MLFE_POD_NAME": "mlfe-router-7d9f-abcde",
    "MLFE_RUNTIME_IMAGE": "registry.example/mlfe-runtime:1.2",
    "MLFE_MODELS_CLAIM": "mlfe-models",
    "MLFE_MODELS_DIR": "/var/mlfe/models",
}


def test_defaults_are_a_local_router_on_loopback() -> None:
    settings = parse_args([], environ={})
    assert settings == ServeSettings(state_dir=Path("~/.mlfe").expanduser())
    assert settings.max_body == DEFAULT_MAX_BODY
    assert settings.kubernetes == KubernetesSettings()


def test_a_router_pod_reads_its_environment_and_flags_win() -> None:
    settings = parse_args(
        ["--backend", "kubernetes", "--kubeconfig", "/etc/kube/config", "--lease-duration", "6"],
        environ=POD_ENVIRONMENT,
    )
    cluster = settings.kubernetes
    assert settings.backend == "kubernetes"
    assert cluster.kubeconfig == Path("/etc/kube/config")
    assert cluster.namespace == "mlfe"
    assert cluster.identity == "mlfe-router-7d9f-abcde"
    assert cluster.runtime_image == "registry.example/mlfe-runtime:1.2"
    assert cluster.models_claim == "mlfe-models"
    assert cluster.models_dir == Path("/var/mlfe/models")
    # Leader election keeps client-go's proportions: 15 s lease, 10 s renew, 2 s retry.
    assert cluster.lease_duration == 6
    assert 0 < cluster.retry_period < cluster.renew_deadline < cluster.lease_duration
    assert KubernetesSettings().renew_deadline == 10
    assert KubernetesSettings().retry_period == 2
    assert KubernetesSettings().lease_duration == DEFAULT_LEASE_DURATION

    overridden = parse_args(
        ["--namespace", "other", "--runtime-image", "mine:1", "--models-dir", "/data"],
        environ=POD_ENVIRONMENT,
    )
    assert overridden.kubernetes.namespace == "other"
    assert overridden.kubernetes.runtime_image == "mine:1"
    assert overridden.kubernetes.models_dir == Path("/data")


def test_a_claim_alone_is_mounted_where_the_manifest_mounts_it() -> None:
    settings = parse_args([], environ={"MLFE_MODELS_CLAIM": "models"})
    assert settings.kubernetes.models_dir == Path("/var/mlfe/models")
    assert parse_args([], environ={}).kubernetes.models_dir is None


def test_a_lease_shorter_than_a_second_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--lease-duration", "0"], environ={})
    assert "--lease-duration (0) must be at least 1 s" in capsys.readouterr().err


def test_the_cli_serve_command_takes_the_same_flags() -> None:
    argv = ["serve", "--backend", "kubernetes", "--kubeconfig", "k", "--namespace", "ns"]
    args = build_parser().parse_args(["--state-dir", "/srv/mlfe", *argv])
    settings = settings_from(args, POD_ENVIRONMENT)
    assert settings.state_dir == Path("/srv/mlfe")
    assert settings.kubernetes.kubeconfig == Path("k")
    assert settings.kubernetes.namespace == "ns"
    assert settings.kubernetes.identity == "mlfe-router-7d9f-abcde"
    # Without --state-dir: MLFE_STATE_DIR, as before.
    plain = settings_from(build_parser().parse_args(["serve"]), {"MLFE_STATE_DIR": "/state"})
    assert plain.state_dir == Path("/state")
    # Every flag of one parser is a flag of the other.
    cli = build_parser().parse_args(["serve", *FLAGS])
    own = argparse.ArgumentParser()
    add_arguments(own)
    assert settings_from(cli, {}) == settings_from(own.parse_args(FLAGS), {})


FLAGS = [
    "--host=0.0.0.0",
    "--port=9000",
    "--backend=kubernetes",
    "--log-level=debug",
    "--max-body=1000",
    "--public-url=https://mlfe.example",
    "--kubeconfig=/k",
    "--namespace=ns",
    "--runtime-image=img:1",
    "--models-claim=claim",
    "--models-dir=/m",
    "--lease-duration=4",
]
