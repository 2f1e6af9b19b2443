"""Pruning Airflow's own metadata (DAG runs, task instances, XComs, the audit log) through
Airflow's supported interface, the `airflow db clean` command.

Why a subprocess with its own database URL: a task running on a worker has no database access
(Airflow 3's Task SDK supervisor sets `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` to
`airflow-db-not-allowed:///` in the task's process), so `airflow db clean` runs as a child
process given the metadata database's URL explicitly, from the Airflow connection
`airflow_metadata_db` (`AIRFLOW_CONN_AIRFLOW_METADATA_DB`, the same URL as the deployment's
`[database] sql_alchemy_conn`). The URL travels in the child's environment, never on its command
line or in a log. Without that connection, a process that has the metadata database itself
(`airflow dags test`, `dag.test()`: the task runs in-process) uses its own configured URL;
anything else skips this step, saying so.

Never an unfinished run: `airflow db clean` deletes by age only (it keeps just the newest
scheduled run per DAG), so the cutoff is never later than the start of the maintenance run itself,
nor than the earliest start of any queued or running run and its task instances (a long backfill,
a cleared old run): rows that old are kept until that run finishes. The return value names the
runs that held the cutoff back. One unscoped call, on purpose: in Airflow 3.3.2 `--dag-ids` and
`--exclude-dag-ids` make `airflow db clean` fail on `task_reschedule`, `deadline` and
`asset_event`, which have no `dag_id` column (apache/airflow#69030, fixed upstream by #73173).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from drill_progress import metrics

log = logging.getLogger(__name__)

METADATA_CONN_ID = "airflow_metadata_db"
BLOCKED_URL_PREFIX = "airflow-db-not-allowed"
# What grows with every run. Not `dag`, `dag_version`, `asset_event`, `trigger`, `callback` or
# `import_error`: they describe the DAGs and their scheduling, not history (`airflow db clean`
# would delete every DAG not re-parsed since the cutoff). Not `job` either: it holds the running
# scheduler's, triggerer's and dag-processor's own rows, which a cutoff of seconds ago deletes
# between two heartbeats (and they stop); it grows by one row per component start. `dag_run`
# brings its dependants (`task_state_store`, `deadline`) along, as `airflow db clean` always does.
TABLES = ("dag_run", "task_instance", "task_instance_history", "task_reschedule", "xcom", "log")
BATCH_ROWS = 10_000
TIMEOUT_SECONDS = 3 * 3600
# libpq settings a postgres connection's extra may carry into the URL
POSTGRES_URL_OPTIONS = frozenset(
    {"sslmode", "sslrootcert", "sslcert", "sslkey", "options", "connect_timeout", "application_name"}
)

_TABLE_LINE = re.compile(r"Checking table (\w+)")
_ROWS_LINE = re.compile(r"Found (\d+) rows meeting deletion criteria")


class MetadataCleanupError(RuntimeError):
    """`airflow db clean` failed; its last lines say why."""


# ---- where the metadata database is ------------------------------------------------------------


def url_from_connection(conn) -> str:
    """A SQLAlchemy URL from an Airflow Connection of the metadata database (postgres, mysql or sqlite)."""
    from sqlalchemy.engine import URL

    kind = (conn.conn_type or "").lower()
    if kind == "sqlite":
        return f"sqlite:///{conn.host}"
    if kind in {"postgres", "postgresql"}:
        driver = "postgresql+psycopg2"  # Airflow's own metadata driver
    elif kind.startswith(("postgresql+", "mysql")):
        driver = kind
    else:
        raise MetadataCleanupError(
            f"connection {METADATA_CONN_ID}: conn_type {conn.conn_type!r} is not a metadata database "
            "(postgres, mysql or sqlite)"
        )
    extra = conn.extra_dejson or {}
    query = {k: str(v) for k, v in extra.items() if k in POSTGRES_URL_OPTIONS and v is not None}
    url = URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port,
        database=conn.schema or None,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def _connection(conn_id: str):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _configured_url() -> str | None:
    url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if not url:
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn", fallback=None)
    if not url or url.startswith(BLOCKED_URL_PREFIX):
        return None
    return url


def metadata_url(conn_id: str = METADATA_CONN_ID) -> tuple[str | None, str]:
    """(URL, where it came from); (None, why) when this process cannot reach the metadata database."""
    conn = _connection(conn_id)
    if conn is not None:
        return url_from_connection(conn), f"connection {conn_id}"
    configured = _configured_url()
    if configured:
        return configured, "this process's [database] sql_alchemy_conn"
    return None, (
        f"no connection {conn_id} and no database access in this process (a worker's task): set "
        f"AIRFLOW_CONN_{conn_id.upper()} to the metadata database's URL"
    )


# ---- how far back, protecting unfinished runs -------------------------------------------------------


UNFINISHED_RUNS_SQL = """
SELECT r.dag_id, r.run_id, r.start_date, r.queued_at,
       (SELECT min(ti.start_date) FROM task_instance ti WHERE ti.dag_id = r.dag_id AND ti.run_id = r.run_id)
FROM dag_run r
WHERE r.state IN ('queued', 'running')
"""


@dataclass(frozen=True)
class UnfinishedRun:
    dag_id: str
    run_id: str
    since: datetime  # the earliest start among the run and its task instances


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def unfinished_runs(url: str, now: datetime) -> list[UnfinishedRun]:
    """Queued or running DAG runs, each with the earliest start among it and its task instances (a
    run not started yet counts from when it was queued, or from now). A read-only query."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(UNFINISHED_RUNS_SQL)).all()
    finally:
        engine.dispose()
    runs = []
    for dag_id, run_id, *moments in rows:
        known = [m for m in (_as_utc(v) for v in moments) if m is not None]
        runs.append(UnfinishedRun(dag_id, run_id, min(known, default=now)))
    return runs


# `airflow db clean` deletes rows older than the cutoff; an unfinished run's rows must be newer
# by a clear margin (SQLite compares timestamps as text: '…15.5' < '…15.5+00:00').
PROTECTION_MARGIN = timedelta(seconds=1)


def protected_cutoff(wanted: datetime, unfinished: list[UnfinishedRun]) -> tuple[datetime, list[UnfinishedRun]]:
    """The cutoff that spares every unfinished run, and the runs that held it back from `wanted`."""
    holding = sorted((r for r in unfinished if r.since - PROTECTION_MARGIN <= wanted), key=lambda r: r.since)
    return (holding[0].since - PROTECTION_MARGIN if holding else wanted), holding


# ---- running `airflow db clean` ---------------------------------------------------------------------


def command(before: datetime, *, dry_run: bool, tables: Iterable[str] = TABLES, batch: int = BATCH_ROWS) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "airflow",
        "db",
        "clean",
        "--clean-before-timestamp",
        before.astimezone(UTC).isoformat(),
        "--tables",
        ",".join(tables),
        "--batch-size",
        str(batch),
        "--skip-archive",
        "--error-on-cleanup-failure",
        "--yes",
    ]
    if dry_run:
        cmd.append("--dry-run")
    return cmd


def rows_per_table(output: str) -> dict[str, int]:
    """The rows `airflow db clean` found per table ("Checking table t" ... "Found n rows ...")."""
    counts: dict[str, int] = {}
    table = None
    for line in output.splitlines():
        if match := _TABLE_LINE.search(line):
            table = match.group(1)
        elif (match := _ROWS_LINE.search(line)) and table:
            counts[table] = counts.get(table, 0) + int(match.group(1))
            table = None
    return counts


def child_environment(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    env.pop("AIRFLOW__CORE__SQL_ALCHEMY_CONN", None)  # the old name, blocked the same way
    for name in [k for k in env if k.startswith("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_")]:
        env.pop(name)  # _CMD / _SECRET variants would override the URL given here
    return env


def run_clean(url: str, before: datetime, *, dry_run: bool, timeout: float = TIMEOUT_SECONDS) -> dict[str, int]:
    """One `airflow db clean` child process; the rows per table it found (and deleted, unless dry)."""
    result = subprocess.run(
        command(before, dry_run=dry_run),
        env=child_environment(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + "\n" + result.stderr).strip().splitlines()[-15:])
        raise MetadataCleanupError(f"airflow db clean exited with {result.returncode}:\n{tail}")
    return rows_per_table(result.stdout)


def prune_metadata(
    url: str, source: str, *, cutoff: datetime, now: datetime, dry_run: bool, own_run_id: str | None = None
) -> dict:
    """Clean Airflow's metadata older than `cutoff`, never a queued or running run; rows per table.
    `own_run_id`: the maintenance run itself, protected like the others but not reported."""
    before, holding = protected_cutoff(cutoff, unfinished_runs(url, now))
    holding = [r for r in holding if r.run_id != own_run_id]
    for run in holding:
        since = run.since.isoformat()
        log.warning("unfinished run %s of %s (since %s) holds Airflow's history back", run.run_id, run.dag_id, since)
    found = run_clean(url, before, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    log.info("Airflow metadata older than %s: %s %s", before.isoformat(), verb, found)
    if not dry_run:
        for table, rows in found.items():
            metrics.airflow_rows_pruned(table, rows)
    return {
        "dry_run": dry_run,
        "cutoff": before.isoformat(),
        "wanted_cutoff": cutoff.isoformat(),
        "held_back_by": [{"dag_id": r.dag_id, "run_id": r.run_id, "since": r.since.isoformat()} for r in holding],
        "database": source,
        "rows": dict(sorted(found.items())),
    }
