"""The SQLite store on real files: every field round-trips, stale writes conflict, the
signing secret is stable, and a writer killed with SIGKILL loses no committed change."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from router.store import SCHEMA_VERSION, Conflict, NotFound, SqliteStore, StoreError
from tests.router.store_records import full_service, make_project, replica_urls_version


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.25

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state" / "mlfe.db", clock=Clock())
    yield opened
    opened.close()


# -- round trip ---------------------------------------------------------------------------


def test_every_field_round_trips_through_the_file(tmp_path: Path, project: Path) -> None:
    path = tmp_path / "mlfe.db"
    with SqliteStore(path, clock=Clock()) as store:
        created = store.create_service(full_service(project))
        assert created.revision == 1
        assert created.created_at == created.updated_at > 1_700_000_000
        assert created == replace(
            full_service(project),
            revision=1,
            created_at=created.created_at,
            updated_at=created.updated_at,
        )
        assert store.get_service("diabetes") == created
        assert store.list_services() == [created]
    with SqliteStore(path) as reopened:
        loaded = reopened.get_service("diabetes")
    assert loaded == created
    assert loaded is not None
    blue = loaded.version("blue")
    assert blue is not None and blue.deployment.primary_key == "version-primary"
    assert blue.deployment.autoscale.target_utilization == 62.5
    assert dict(blue.inference.environment_variables) == {"A": "1"}
    assert loaded.default_version == blue
    assert loaded.version("nope") is None


def test_a_version_of_replica_urls_round_trips(store: SqliteStore, project: Path) -> None:
    record = full_service(project)
    urls = ("http://10.0.0.5:5001", "http://[::1]:80")
    byo = replica_urls_version(project, urls)
    created = store.create_service(replace(record, versions=(*record.versions, byo)))
    found = store.get_service("diabetes")
    assert found is not None and found == created
    assert found.versions[2].inference.replica_urls == urls


def test_versions_keep_their_order(store: SqliteStore, project: Path) -> None:
    record = full_service(project)
    reordered = replace(record, versions=tuple(reversed(record.versions)))
    created = store.create_service(reordered)
    stored = store.get_service(created.name)
    assert stored is not None
    assert [v.name for v in stored.versions] == ["green", "blue"]


def test_services_are_listed_by_name(store: SqliteStore, project: Path) -> None:
    for name in ("zeta", "alpha", "mid-one"):
        store.create_service(full_service(project, name))
    assert [s.name for s in store.list_services()] == ["alpha", "mid-one", "zeta"]
    assert store.get_service("missing") is None


def test_keys_never_appear_in_the_repr(project: Path) -> None:
    text = repr(full_service(project))
    assert "service-primary-key" not in text
    assert "version-primary" not in text


# -- revisions --------------------------------------------------------------------------


def test_creating_a_service_twice_conflicts(store: SqliteStore, project: Path) -> None:
    store.create_service(full_service(project))
    with pytest.raises(Conflict, match="already exists"):
        store.create_service(full_service(project))


def test_update_bumps_the_revision_and_keeps_created_at(store: SqliteStore, project: Path) -> None:
    created = store.create_service(full_service(project))
    updated = store.update_service(replace(created, primary_key="rotated-primary"))
    assert updated.revision == 2
    assert updated.created_at == created.created_at
    assert updated.updated_at > created.updated_at
    assert store.get_service("diabetes") == updated
    again = store.update_service(replace(updated, auth_mode="key"))
    assert again.revision == 3


def test_a_stale_update_conflicts_and_changes_nothing(store: SqliteStore, project: Path) -> None:
    created = store.create_service(full_service(project))
    winner = store.update_service(replace(created, primary_key="first-writer"))
    with pytest.raises(Conflict, match="read at revision 1, now at 2"):
        store.update_service(replace(created, primary_key="second-writer"))
    assert store.get_service("diabetes") == winner


def test_a_stale_update_from_another_connection_conflicts(tmp_path: Path, project: Path) -> None:
    path = tmp_path / "mlfe.db"
    with SqliteStore(path) as first, SqliteStore(path) as second:
        created = first.create_service(full_service(project))
        read_by_second = second.get_service("diabetes")
        assert read_by_second == created
        first.update_service(replace(created, secondary_key="changed-by-first"))
        with pytest.raises(Conflict):
            second.update_service(replace(read_by_second, secondary_key="changed-by-second"))
        stored = second.get_service("diabetes")
        assert stored is not None and stored.secondary_key == "changed-by-first"


def test_updating_a_missing_service_is_not_found(store: SqliteStore, project: Path) -> None:
    with pytest.raises(NotFound):
        store.update_service(replace(full_service(project), revision=1))


def test_update_replaces_the_versions(store: SqliteStore, project: Path) -> None:
    created = store.create_service(full_service(project))
    blue = created.version("blue")
    assert blue is not None
    red = replace(blue, name="red", is_default=False, is_control=False, traffic_percentile=5)
    updated = store.update_service(
        replace(created, versions=(red, replace(blue, traffic_percentile=60)))
    )
    stored = store.get_service("diabetes")
    assert stored == updated
    assert stored is not None
    assert [v.name for v in stored.versions] == ["red", "blue"]
    assert stored.version("green") is None
    assert stored.version("blue") == replace(blue, traffic_percentile=60)


def test_concurrent_updates_from_threads_never_lose_one(store: SqliteStore, project: Path) -> None:
    store.create_service(full_service(project))
    successes: list[int] = []

    def writer(tag: int) -> None:
        done = 0
        while done < 10:
            current = store.get_service("diabetes")
            assert current is not None
            try:
                store.update_service(replace(current, secondary_key=f"writer-{tag}-{done}"))
            except Conflict:
                continue
            done += 1
        successes.append(done)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get_service("diabetes")
    assert final is not None
    assert final.revision == 1 + sum(successes) == 41


# -- delete -------------------------------------------------------------------------------


def test_delete_removes_the_service_and_its_versions(store: SqliteStore, project: Path) -> None:
    store.create_service(full_service(project))
    store.set_desired_replicas("diabetes", "blue", 3)
    store.delete_service("diabetes")
    assert store.get_service("diabetes") is None
    assert store.all_desired_replicas() == {}
    with pytest.raises(NotFound):
        store.delete_service("diabetes")
    # The name is free again.
    assert store.create_service(full_service(project)).revision == 1
    assert store.desired_replicas("diabetes", "blue") is None


def test_delete_at_a_stale_revision_conflicts(store: SqliteStore, project: Path) -> None:
    created = store.create_service(full_service(project))
    store.update_service(replace(created, primary_key="rotated"))
    with pytest.raises(Conflict):
        store.delete_service("diabetes", revision=1)
    assert store.get_service("diabetes") is not None
    store.delete_service("diabetes", revision=2)
    assert store.get_service("diabetes") is None


# -- desired replica counts ---------------------------------------------------------------


def test_desired_replicas_are_kept_per_version(tmp_path: Path, project: Path) -> None:
    path = tmp_path / "mlfe.db"
    with SqliteStore(path) as store:
        created = store.create_service(full_service(project))
        assert store.desired_replicas("diabetes", "blue") is None
        store.set_desired_replicas("diabetes", "blue", 4)
        store.set_desired_replicas("diabetes", "green", 0)
        store.set_desired_replicas("diabetes", "blue", 5)
        # A config change that keeps a version keeps its count; a removed version's goes.
        store.update_service(replace(created, versions=created.versions[:1]))
        assert store.all_desired_replicas() == {("diabetes", "blue"): 5}
        with pytest.raises(NotFound):
            store.set_desired_replicas("diabetes", "green", 1)
        with pytest.raises(NotFound):
            store.set_desired_replicas("nobody", "blue", 1)
        with pytest.raises(ValueError):
            store.set_desired_replicas("diabetes", "blue", -1)
        with pytest.raises(ValueError):
            store.set_desired_replicas("diabetes", "blue", True)
    with SqliteStore(path) as reopened:
        assert reopened.desired_replicas("diabetes", "blue") == 5


# -- invalid records -----------------------------------------------------------------------


def test_records_no_router_could_load_are_refused(store: SqliteStore, project: Path) -> None:
    record = full_service(project)
    with pytest.raises(ValueError):
        store.create_service(replace(record, name="Not_Valid"))
    with pytest.raises(ValueError, match="twice"):
        store.create_service(replace(record, versions=(record.versions[0], record.versions[0])))
    with pytest.raises(ValueError):
        store.create_service(replace(record, auth_mode="basic"))  # type: ignore[arg-type]
    bad_traffic = replace(record.versions[0], traffic_percentile=120)
    with pytest.raises(ValueError, match="trafficPercentile"):
        store.create_service(replace(record, versions=(bad_traffic,)))
    assert store.list_services() == []


def test_an_unreadable_row_is_reported_not_guessed(tmp_path: Path, project: Path) -> None:
    path = tmp_path / "mlfe.db"
    with SqliteStore(path) as store:
        store.create_service(full_service(project))
    raw = sqlite3.connect(path)
    raw.execute("UPDATE versions SET deployment = '{\"autoScaler\": 5}' WHERE name = 'green'")
    raw.commit()
    raw.close()
    with SqliteStore(path) as store, pytest.raises(StoreError, match="diabetes/green"):
        store.get_service("diabetes")


def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mlfe.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_services()


# -- signing secret, schema, file ---------------------------------------------------------


def test_the_signing_secret_is_created_once_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "mlfe.db"
    with SqliteStore(path) as store:
        secret = store.signing_secret()
        assert len(secret) == 32
        assert store.signing_secret() == secret
    with SqliteStore(path) as reopened:
        assert reopened.signing_secret() == secret
    with SqliteStore(tmp_path / "other.db") as other:
        assert other.signing_secret() != secret


def test_the_schema_version_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "mlfe.db"
    with SqliteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = raw.execute("SELECT version, description FROM schema_migrations").fetchall()
        assert [version for version, _ in applied] == list(range(1, SCHEMA_VERSION + 1))
        assert all(description for _, description in applied)
    finally:
        raw.close()
    # Reopening applies nothing twice.
    with SqliteStore(path) as again:
        assert again.schema_version == SCHEMA_VERSION


def test_a_store_from_a_newer_mlfe_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mlfe.db"
    SqliteStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer than this mlfe reads"):
        SqliteStore(path)


def test_the_files_are_private_whatever_the_umask(tmp_path: Path, project: Path) -> None:
    path = tmp_path / "state" / "mlfe.db"
    old_umask = os.umask(0)
    try:
        store = SqliteStore(path)
        store.create_service(full_service(project))  # the -wal and -shm files now exist
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        store.close()
    finally:
        os.umask(old_umask)


def test_an_existing_loose_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "mlfe.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    SqliteStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- durability ---------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from pathlib import Path

    from router.config import parse_deployment_config, parse_inference_config
    from router.store import ServiceRecord, SqliteStore, VersionRecord

    store = SqliteStore(sys.argv[1])
    inference = parse_inference_config({"entryScript": "score.py"}, base_dir=Path(sys.argv[2]))

    def versions(generation):
        # A different number of rows each time, so a half-written change would show.
        return tuple(
            VersionRecord(
                name=f"v{index}-of",
                deployment=parse_deployment_config({"scoringTimeoutMs": 1000 + generation}),
                inference=inference,
                traffic_percentile=0,
                is_default=index == 0,
                description=str(generation),
            )
            for index in range(1 + generation % 5)
        )

    record = store.create_service(ServiceRecord("churn", "key", "pk0", "sk", versions(0)))
    print(0, flush=True)
    generation = 0
    while True:
        generation += 1
        record = store.update_service(
            replace(record, primary_key=f"pk{generation}", versions=versions(generation))
        )
        store.set_desired_replicas("churn", "v0-of", generation)
        store.create_service(ServiceRecord(f"extra-{generation}", "none", "a", "b", ()))
        print(generation, flush=True)
    """
)


def test_a_writer_killed_mid_way_loses_no_committed_change(tmp_path: Path, project: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "mlfe.db"
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), str(project)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        reported = -1
        while reported < 25:
            line = child.stdout.readline()
            assert line, f"the writer stopped early (exit code {child.poll()})"
            reported = int(line)
        # The writer is mid-way through its next generation's transactions.
        os.kill(child.pid, signal.SIGKILL)
        for line in child.stdout:  # whatever it reported before dying
            reported = int(line)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with SqliteStore(path) as store:
        churn = store.get_service("churn")
        assert churn is not None
        generation = int(churn.versions[0].description)
        # Everything reported was committed; at most the one in flight is on top.
        assert reported <= generation <= reported + 1
        # And the change on file is whole: one generation in every row.
        assert churn.primary_key == f"pk{generation}"
        assert churn.revision == generation + 1
        assert len(churn.versions) == 1 + generation % 5
        for version in churn.versions:
            assert version.description == str(generation)
            assert version.deployment.scoring_timeout_ms == 1000 + generation
        extras = {s.name for s in store.list_services()} - {"churn"}
        assert {f"extra-{n}" for n in range(1, reported + 1)} <= extras
        assert len(extras) <= reported + 1
        desired = store.desired_replicas("churn", "v0-of")
        assert desired is not None and reported <= desired <= generation
