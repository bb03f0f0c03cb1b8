"""The durable record of services, versions, keys, the token signing secret and the
replica counts to restore: what a restarted router needs to serve again.

`Store` is the interface the control plane codes against; it speaks records and
revisions, never SQL, so a Kubernetes store (ConfigMaps and Secrets, resourceVersion as
the revision) can stand in for `SqliteStore`, the single-machine implementation.

Changes are optimistic: a record carries the revision it was read at, and an update or
delete made against a stale revision raises `Conflict` instead of overwriting someone
else's change. Every change is one transaction, so a crash leaves either the old record
or the new one, never a mix.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from router.config import (
    AuthMode,
    ConfigError,
    DeploymentConfig,
    InferenceConfig,
    ModelRef,
    deployment_config_to_json,
    inference_config_to_json,
    parse_deployment_config,
    parse_inference_config,
    validate_service_name,
    validate_version_name,
)

logger = logging.getLogger("mlfe.store")

SIGNING_SECRET_BYTES = 32
_AUTH_MODES = ("key", "token", "none")


@dataclass(frozen=True)
class VersionRecord:
    """One version of a service as stored: its deployment and its place in the traffic."""

    name: str
    deployment: DeploymentConfig
    inference: InferenceConfig
    models: tuple[ModelRef, ...] = ()
    model_dir: str | None = None
    traffic_percentile: float = 0.0
    is_default: bool = False
    is_control: bool = False
    description: str = ""


@dataclass(frozen=True)
class ServiceRecord:
    """A service as stored. `revision` is the version of the record the holder read:
    pass it back unchanged to `update_service`, which stores the change at revision + 1."""

    name: str
    auth_mode: AuthMode
    # Needed to authenticate, so stored; never in a repr, so never logged by accident.
    primary_key: str = field(repr=False)
    secondary_key: str = field(repr=False)
    versions: tuple[VersionRecord, ...] = ()
    revision: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    def version(self, name: str) -> VersionRecord | None:
        for version in self.versions:
            if version.name == name:
                return version
        return None

    @property
    def default_version(self) -> VersionRecord | None:
        for version in self.versions:
            if version.is_default:
                return version
        return None


class StoreError(Exception):
    """The store could not do what was asked; the message says why."""


class Conflict(StoreError):
    """The service exists already, or changed since the caller read it."""


class NotFound(StoreError, LookupError):
    """No such service (or version)."""


class Store(Protocol):
    """Services and what a router needs to restore them."""

    def signing_secret(self) -> bytes:
        """The HS256 secret for access tokens: created once, then the same forever."""
        ...

    def list_services(self) -> list[ServiceRecord]:
        """Every service, by name."""
        ...

    def get_service(self, name: str) -> ServiceRecord | None: ...

    def create_service(self, record: ServiceRecord) -> ServiceRecord:
        """Store a new service at revision 1; Conflict if the name is taken."""
        ...

    def update_service(self, record: ServiceRecord) -> ServiceRecord:
        """Replace a service read at `record.revision`; Conflict if it changed since,
        NotFound if it is gone. Versions left out are deleted with their replica counts."""
        ...

    def delete_service(self, name: str, revision: int | None = None) -> None:
        """Delete a service (at `revision`, if given: Conflict if it changed since)."""
        ...

    def desired_replicas(self, service: str, version: str) -> int | None:
        """The replica count last set for a version, None if never set."""
        ...

    def all_desired_replicas(self) -> dict[tuple[str, str], int]:
        """Every stored count by (service, version), for restoring after a restart."""
        ...

    def set_desired_replicas(self, service: str, version: str, replicas: int) -> None:
        """Remember a version's replica count; NotFound if the version does not exist."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Migration:
    version: int
    description: str
    statements: tuple[str, ...]


# Append only: a store file records in `PRAGMA user_version` the last migration applied,
# and in `schema_migrations` when each was applied. Never edit a released migration.
_MIGRATIONS: tuple[_Migration, ...] = (
    _Migration(
        1,
        "services, versions, desired replica counts, secrets",
        (
            """CREATE TABLE schema_migrations (
                version INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at REAL NOT NULL
            )""",
            """CREATE TABLE secrets (
                name TEXT PRIMARY KEY,
                value BLOB NOT NULL
            )""",
            """CREATE TABLE services (
                name TEXT PRIMARY KEY,
                auth_mode TEXT NOT NULL CHECK (auth_mode IN ('key', 'token', 'none')),
                primary_key TEXT NOT NULL,
                secondary_key TEXT NOT NULL,
                revision INTEGER NOT NULL CHECK (revision >= 1),
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            # deployment and inference hold the canonical deploymentconfig.json and
            # inferenceconfig.json (router.config's *_to_json), models a JSON list.
            """CREATE TABLE versions (
                service TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
                name TEXT NOT NULL,
                position INTEGER NOT NULL,
                deployment TEXT NOT NULL,
                inference TEXT NOT NULL,
                models TEXT NOT NULL,
                model_dir TEXT,
                traffic_percentile REAL NOT NULL
                    CHECK (traffic_percentile >= 0 AND traffic_percentile <= 100),
                is_default INTEGER NOT NULL CHECK (is_default IN (0, 1)),
                is_control INTEGER NOT NULL CHECK (is_control IN (0, 1)),
                description TEXT NOT NULL,
                PRIMARY KEY (service, name)
            )""",
            """CREATE TABLE desired_replicas (
                service TEXT NOT NULL,
                version TEXT NOT NULL,
                replicas INTEGER NOT NULL CHECK (replicas >= 0),
                PRIMARY KEY (service, version),
                FOREIGN KEY (service, version)
                    REFERENCES versions (service, name) ON DELETE CASCADE
            )""",
        ),
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1].version

_SIGNING_SECRET = "token-signing"
_SERVICE_COLUMNS = "name, auth_mode, primary_key, secondary_key, revision, created_at, updated_at"
_VERSION_COLUMNS = (
    "service, name, deployment, inference, models, model_dir, traffic_percentile,"
    " is_default, is_control, description"
)


class SqliteStore:
    """`Store` in one SQLite file, readable only by its owner (mode 0600).

    The journal is a write-ahead log with `synchronous=FULL`: each commit is on disk
    before the call returns, so a committed change survives a SIGKILL and a power cut
    alike. NORMAL would save an fsync per commit but may lose the last commits on power
    loss; changes here are deploys, key rotations and autoscaler decisions (at most one
    per deployment per tick), so the fsync is not worth trading away.

    One connection, shared by every thread and guarded by a lock: calls are short
    transactions on a local file, made from the router's event loop. Other processes
    opening the same file wait up to `busy_timeout` seconds for its write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        _create_private_file(self.path)
        # isolation_level=None: no implicit transactions; each change opens its own.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._configure(self._db)
            self._migrate()
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _configure(self, db: sqlite3.Connection) -> None:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"cannot keep a write-ahead log for {self.path} (journal mode {mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this mlfe reads"
                f" ({SCHEMA_VERSION}): upgrade mlfe"
            )
        for migration in _MIGRATIONS:
            if migration.version <= current:
                continue
            with self._transaction() as db:
                # Another process may have migrated while this one waited for the lock.
                if db.execute("PRAGMA user_version").fetchone()[0] >= migration.version:
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at)"
                    " VALUES (?, ?, ?)",
                    (migration.version, migration.description, self._clock()),
                )
                db.execute(f"PRAGMA user_version = {int(migration.version)}")
            logger.info(
                "store event=migrated path=%s schema_version=%d", self.path, migration.version
            )

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    # -- transactions -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock. Writes take SQLite's write lock up front
        (BEGIN IMMEDIATE), so a read-check-write cannot interleave with another process."""
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as error:
                raise StoreError(f"store {self.path}: {error}") from error

    # -- secrets ------------------------------------------------------------------------

    def signing_secret(self) -> bytes:
        if self._secret is None:
            with self._transaction() as db:
                row = db.execute(
                    "SELECT value FROM secrets WHERE name = ?", (_SIGNING_SECRET,)
                ).fetchone()
                if row is None:
                    value = secrets.token_bytes(SIGNING_SECRET_BYTES)
                    db.execute(
                        "INSERT INTO secrets (name, value) VALUES (?, ?)", (_SIGNING_SECRET, value)
                    )
                    logger.info("store event=created-signing-secret path=%s", self.path)
                else:
                    value = bytes(row[0])
            self._secret = value
        return self._secret

    # -- services -----------------------------------------------------------------------

    def list_services(self) -> list[ServiceRecord]:
        with self._transaction(write=False) as db:
            return _load_services(db, None)

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._transaction(write=False) as db:
            found = _load_services(db, name)
        return found[0] if found else None

    def create_service(self, record: ServiceRecord) -> ServiceRecord:
        check_record(record)
        now = self._clock()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM services WHERE name = ?", (record.name,)).fetchone():
                raise Conflict(f"service {record.name!r} already exists")
            db.execute(
                f"INSERT INTO services ({_SERVICE_COLUMNS}) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (
                    record.name,
                    record.auth_mode,
                    record.primary_key,
                    record.secondary_key,
                    now,
                    now,
                ),
            )
            _write_versions(db, record.name, record.versions)
        return as_written(record, 1, now, now)

    def update_service(self, record: ServiceRecord) -> ServiceRecord:
        check_record(record)
        now = self._clock()
        with self._transaction() as db:
            revision, created_at = _current_revision(db, record.name)
            if revision != record.revision:
                raise Conflict(
                    f"service {record.name!r} changed since it was read (read at revision"
                    f" {record.revision}, now at {revision})"
                )
            db.execute(
                "UPDATE services SET auth_mode = ?, primary_key = ?, secondary_key = ?,"
                " revision = ?, updated_at = ? WHERE name = ?",
                (
                    record.auth_mode,
                    record.primary_key,
                    record.secondary_key,
                    revision + 1,
                    now,
                    record.name,
                ),
            )
            _write_versions(db, record.name, record.versions)
        return as_written(record, revision + 1, created_at, now)

    def delete_service(self, name: str, revision: int | None = None) -> None:
        with self._transaction() as db:
            current, _ = _current_revision(db, name)
            if revision is not None and revision != current:
                raise Conflict(
                    f"service {name!r} changed since it was read (read at revision"
                    f" {revision}, now at {current})"
                )
            # Versions and replica counts go with it (ON DELETE CASCADE).
            db.execute("DELETE FROM services WHERE name = ?", (name,))
        logger.info("store event=deleted service=%s revision=%d", name, current)

    # -- replica counts -----------------------------------------------------------------

    def desired_replicas(self, service: str, version: str) -> int | None:
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT replicas FROM desired_replicas WHERE service = ? AND version = ?",
                (service, version),
            ).fetchone()
        return None if row is None else int(row[0])

    def all_desired_replicas(self) -> dict[tuple[str, str], int]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT service, version, replicas FROM desired_replicas").fetchall()
        return {(service, version): int(replicas) for service, version, replicas in rows}

    def set_desired_replicas(self, service: str, version: str, replicas: int) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ValueError(f"a replica count must be an integer >= 0, not {replicas!r}")
        # The autoscaler repeats itself; an unchanged count costs a read, not an fsync.
        if self.desired_replicas(service, version) == replicas:
            return
        with self._transaction() as db:
            exists = db.execute(
                "SELECT 1 FROM versions WHERE service = ? AND name = ?", (service, version)
            ).fetchone()
            if exists is None:
                raise NotFound(f"no version {version!r} of service {service!r}")
            db.execute(
                "INSERT INTO desired_replicas (service, version, replicas) VALUES (?, ?, ?)"
                " ON CONFLICT (service, version) DO UPDATE SET replicas = excluded.replicas",
                (service, version, replicas),
            )

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _create_private_file(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it; SQLite gives its
    -wal and -shm files the database file's mode."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # A file created by an older run or another tool under a looser umask.
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def check_record(record: ServiceRecord) -> None:
    """Refuse what would store a service no router could load back."""
    validate_service_name(record.name)
    if record.auth_mode not in _AUTH_MODES:
        raise ValueError(
            f"auth mode must be one of {', '.join(_AUTH_MODES)}, not {record.auth_mode!r}"
        )
    if not isinstance(record.primary_key, str) or not isinstance(record.secondary_key, str):
        raise ValueError(f"service {record.name!r}: keys must be strings")
    seen: set[str] = set()
    for version in record.versions:
        validate_version_name(version.name)
        if version.name in seen:
            raise ValueError(f"service {record.name!r} lists version {version.name!r} twice")
        seen.add(version.name)
        percentile = version.traffic_percentile
        if not math.isfinite(percentile) or not 0 <= percentile <= 100:
            raise ValueError(
                f"trafficPercentile of version {version.name!r} must be between 0 and 100,"
                f" not {percentile}"
            )


def as_written(
    record: ServiceRecord, revision: int, created_at: float, now: float
) -> ServiceRecord:
    """`record` as a store wrote it at `revision`, with the event logged; what both stores'
    create (revision 1) and update return."""
    logger.info(
        "store event=%s service=%s revision=%d versions=%d",
        "created" if revision == 1 else "updated",
        record.name,
        revision,
        len(record.versions),
    )
    return replace(record, revision=revision, created_at=created_at, updated_at=now)


def _current_revision(db: sqlite3.Connection, name: str) -> tuple[int, float]:
    row = db.execute("SELECT revision, created_at FROM services WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no service {name!r}")
    return int(row[0]), float(row[1])


def _write_versions(
    db: sqlite3.Connection, service: str, versions: Sequence[VersionRecord]
) -> None:
    """Make the stored versions exactly `versions`. Versions that stay are updated in
    place, so their replica counts survive the change."""
    for position, version in enumerate(versions):
        db.execute(
            f"INSERT INTO versions (position, {_VERSION_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (service, name) DO UPDATE SET position = excluded.position,"
            " deployment = excluded.deployment, inference = excluded.inference,"
            " models = excluded.models, model_dir = excluded.model_dir,"
            " traffic_percentile = excluded.traffic_percentile,"
            " is_default = excluded.is_default, is_control = excluded.is_control,"
            " description = excluded.description",
            (
                position,
                service,
                version.name,
                _dumps(deployment_config_to_json(version.deployment)),
                _dumps(inference_config_to_json(version.inference)),
                _dumps([model.to_json() for model in version.models]),
                version.model_dir,
                float(version.traffic_percentile),
                int(version.is_default),
                int(version.is_control),
                version.description,
            ),
        )
    names = [version.name for version in versions]
    placeholders = ", ".join("?" for _ in names)
    db.execute(
        f"DELETE FROM versions WHERE service = ? AND name NOT IN ({placeholders})",
        (service, *names),
    )


def _load_services(db: sqlite3.Connection, name: str | None) -> list[ServiceRecord]:
    where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
    services = db.execute(
        f"SELECT {_SERVICE_COLUMNS} FROM services {where} ORDER BY name", args
    ).fetchall()
    where = "WHERE service = ?" if name is not None else ""
    versions: dict[str, list[VersionRecord]] = {}
    for row in db.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions {where} ORDER BY service, position", args
    ):
        versions.setdefault(row[0], []).append(_version_from_row(row))
    return [
        ServiceRecord(
            name=service,
            auth_mode=auth_mode,
            primary_key=primary_key,
            secondary_key=secondary_key,
            versions=tuple(versions.get(service, ())),
            revision=int(revision),
            created_at=float(created_at),
            updated_at=float(updated_at),
        )
        for service, auth_mode, primary_key, secondary_key, revision, created_at, updated_at in services
    ]


def _version_from_row(row: Sequence[Any]) -> VersionRecord:
    service, name, deployment, inference, models, model_dir = row[:6]
    try:
        return VersionRecord(
            name=name,
            deployment=parse_deployment_config(orjson.loads(deployment)),
            # Paths are stored absolute; the files are checked when replicas start, so a
            # moved folder fails that version instead of hiding the whole service.
            inference=parse_inference_config(
                orjson.loads(inference), base_dir=Path("/"), check_files=False
            ),
            models=tuple(ModelRef.from_json(model) for model in orjson.loads(models)),
            model_dir=model_dir,
            traffic_percentile=float(row[6]),
            is_default=bool(row[7]),
            is_control=bool(row[8]),
            description=row[9],
        )
    except (ConfigError, orjson.JSONDecodeError, TypeError) as error:
        raise StoreError(f"stored version {service}/{name} cannot be read: {error}") from error


def _dumps(value: object) -> str:
    # Text, not bytes: the file stays readable with the sqlite3 shell.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
