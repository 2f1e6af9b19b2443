"""Versioned schema migrations: include/sql/migrations/NNNN_name.sql, applied in version order.

Each migration runs in its own transaction together with its row in `schema_migrations`, so a
failed migration leaves nothing half-applied. Concurrent runners are serialised by an advisory
lock; applying again is a no-op. An applied migration whose file changed is an error: write a
new migration instead of editing an old one.

A migration whose first line is `-- no-transaction` (CREATE INDEX CONCURRENTLY, which cannot run in
a transaction) runs statement by statement (each ending with `;` at the end of a line) in
autocommit, under a session advisory lock, and is recorded after its last statement succeeded. It
must be safe to run again from the start after a failure part way (e.g. `DROP INDEX CONCURRENTLY
IF EXISTS` before each `CREATE INDEX CONCURRENTLY`: a failed build leaves an invalid index).
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
NO_TRANSACTION = "-- no-transaction"
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

    @property
    def in_transaction(self) -> bool:
        return not self.sql.startswith(NO_TRANSACTION)

    def statements(self) -> list[str]:
        """The statements of a no-transaction migration (comment lines dropped)."""
        lines = [line for line in self.sql.splitlines() if not line.lstrip().startswith("--")]
        return [part.strip() for part in re.split(r";[ \t]*$", "\n".join(lines), flags=re.M) if part.strip()]


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
        if not migration.in_transaction:
            if _apply_outside_transaction(engine, migration):
                applied_now.append(migration.version)
            continue
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": ADVISORY_LOCK_KEY})
            if _check_unchanged(_applied(conn), migration):
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


def _check_unchanged(done: dict[int, str], migration: Migration) -> bool:
    """True if `migration` is applied already (and unchanged since: else an error)."""
    if migration.version not in done:
        return False
    if done[migration.version] != migration.checksum:
        raise MigrationError(
            f"migration {migration.path.name} changed after it was applied; "
            "add a new migration instead of editing an applied one"
        )
    return True


def _apply_outside_transaction(engine: Engine, migration: Migration) -> bool:
    """Run a no-transaction migration statement by statement; True if it was applied now."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        conn.connection.rollback()
        raw.autocommit = True  # type: ignore[union-attr]
        try:
            raw.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))  # type: ignore[union-attr]
            try:
                done = dict(raw.execute("SELECT version, checksum FROM schema_migrations").fetchall())  # type: ignore[union-attr]
                if _check_unchanged(done, migration):
                    return False
                log.info("applying migration %s (outside a transaction)", migration.path.name)
                for statement in migration.statements():
                    try:
                        raw.execute(statement)  # type: ignore[union-attr]
                    except Exception as exc:
                        raise MigrationError(
                            f"migration {migration.path.name} failed at a statement (run it again: it starts "
                            f"over safely): {exc}"
                        ) from exc
                raw.execute(  # type: ignore[union-attr]
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                return True
            finally:
                raw.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))  # type: ignore[union-attr]
        finally:
            raw.autocommit = False  # type: ignore[union-attr]


def schema_state(engine: Engine) -> tuple[int | None, list[str]]:
    """The applied schema version and the drill catalog in order."""
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT max(version) FROM schema_migrations").scalar()
        drills = conn.exec_driver_sql("SELECT drill_slug FROM drills ORDER BY place_in_sequence").scalars().all()
    return version, list(drills)
