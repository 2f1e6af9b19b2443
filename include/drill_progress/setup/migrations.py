"""Versioned schema migrations: include/sql/migrations/NNNN_name.sql, applied in version order.

Each migration runs in its own transaction together with its row in `schema_migrations`, so a
failed migration leaves nothing half-applied. Concurrent runners are serialised by an advisory
lock; applying again is a no-op. An applied migration whose file changed is an error: write a
new migration instead of editing an old one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from drill_progress.db import SQL_DIR, run_script

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"
ADVISORY_LOCK_KEY = 7_316_001  # arbitrary, constant: "drill progress migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return found


def _applied(conn) -> dict[int, str]:
    rows = conn.exec_driver_sql("SELECT version, checksum FROM schema_migrations").all()
    return {version: checksum for version, checksum in rows}


def apply_migrations(engine: Engine, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every pending migration; return the versions applied by this call."""
    migrations = discover(directory)
    applied_now: list[int] = []
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": ADVISORY_LOCK_KEY})
        conn.exec_driver_sql(HISTORY_DDL)
    for migration in migrations:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": ADVISORY_LOCK_KEY})
            done = _applied(conn)
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.path.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            log.info("applying migration %s", migration.path.name)
            try:
                run_script(conn, migration.sql)
            except Exception as exc:
                raise MigrationError(f"migration {migration.path.name} failed and was rolled back: {exc}") from exc
            conn.exec_driver_sql(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s)",
                {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
            )
            applied_now.append(migration.version)
    log.info("migrations applied now: %s; total known: %d", applied_now or "none", len(migrations))
    return applied_now


def schema_state(engine: Engine) -> tuple[int | None, list[str]]:
    """The applied schema version and the drill catalog in order."""
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT max(version) FROM schema_migrations").scalar()
        drills = conn.exec_driver_sql("SELECT drill_slug FROM drills ORDER BY place_in_sequence").scalars().all()
    return version, list(drills)
