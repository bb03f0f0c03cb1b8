"""Records shared by the tests of both stores.

The SQLite store and the Kubernetes store keep one contract, so both are checked with the
same records: one service whose every field is away from its default, which only a store
that keeps every field gives back equal.
"""

from __future__ import annotations

from pathlib import Path

from router.config import ModelRef, parse_deployment_config, parse_inference_config
from router.store import ServiceRecord, VersionRecord


def make_project(parent: Path) -> Path:
    """A source folder holding the entry scripts `full_service` names."""
    project = parent / "project"
    project.mkdir()
    (project / "score.py").write_text("def init(): pass\ndef run(data): return data\n")
    (project / "alt.py").write_text("")
    return project


def full_service(project: Path, name: str = "diabetes") -> ServiceRecord:
    """A service with keys at both levels and every field away from its default."""
    blue = VersionRecord(
        name="blue",
        deployment=parse_deployment_config(
            {
                "autoScaler": {"minReplicas": 2, "maxReplicas": 5, "targetUtilization": 62.5},
                "keys": {"primaryKey": "version-primary", "secondaryKey": "version-secondary"},
                "scoringTimeoutMs": 1234,
                "maxConcurrentRequestsPerContainer": 3,
                "containerResourceRequirements": {"cpu": 0.25, "memoryInGBLimit": 2},
                "environmentVariables": {"MODE": "blue"},
                "tags": {"team": "ml"},
                "namespace": "ml-prod",
            }
        ),
        inference=parse_inference_config(
            {"entryScript": "score.py", "environment": {"environmentVariables": {"A": "1"}}},
            base_dir=project,
        ),
        models=(
            ModelRef("sklearn-model", "3", str(project / "model")),
            ModelRef("other", "1", "/models/other"),
        ),
        model_dir=None,
        traffic_percentile=12.5,
        is_default=True,
        is_control=True,
        description="the current model",
    )
    green = VersionRecord(
        name="green",
        deployment=parse_deployment_config({"numReplicas": 2, "tokenAuthEnabled": True}),
        inference=parse_inference_config(
            {"entryScript": "alt.py", "sourceDirectory": "."}, base_dir=project
        ),
        model_dir=str(project / "models"),
        traffic_percentile=40,
    )
    return ServiceRecord(
        name=name,
        auth_mode="token",
        primary_key="service-primary-key",
        secondary_key="service-secondary-key",
        versions=(blue, green),
    )


def replica_urls_version(project: Path, urls: tuple[str, ...]) -> VersionRecord:
    """A version of replicas someone else runs, named `byo`: no entry script, no models."""
    return VersionRecord(
        name="byo",
        deployment=parse_deployment_config({"numReplicas": 2}),
        inference=parse_inference_config({"replicaUrls": list(urls)}, base_dir=project),
        traffic_percentile=10,
    )
