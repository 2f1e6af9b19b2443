"""Airflow's metadata pruned through `airflow db clean` in a child process, as a worker's task must
do it: the URL from the `airflow_metadata_db` connection, a real PostgreSQL metadata database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from drill_progress.maintenance import airflow_metadata as metadata
from drill_progress.maintenance import tasks
from drill_progress.maintenance.airflow_metadata import UnfinishedRun

BLOCKED = "airflow-db-not-allowed:///"  # what the Task SDK supervisor gives a worker's task
NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def _conn(**fields):
    defaults = {"conn_type": "postgres", "login": None, "password": None, "host": None, "port": None,
                "schema": None, "extra_dejson": {}}  # fmt: skip
    return SimpleNamespace(**(defaults | fields))


def test_url_from_a_postgres_connection_keeps_credentials_and_ssl_settings():
    conn = _conn(login="air_flow", password="p@ss:w/rd", host="db", port=5432, schema="airflow",
                 extra_dejson={"sslmode": "require", "cursor": "realdictcursor"})  # fmt: skip
    url = metadata.url_from_connection(conn)
    assert url == "postgresql+psycopg2://air_flow:p%40ss%3Aw%2Frd@db:5432/airflow?sslmode=require"
    from sqlalchemy.engine import make_url

    assert make_url(url).password == "p@ss:w/rd"  # round-trips; libpq-only extras pass, others do not


def test_url_from_sqlite_and_other_connections():
    assert metadata.url_from_connection(_conn(conn_type="sqlite", host="/tmp/a b/airflow.db")) == (
        "sqlite:////tmp/a b/airflow.db"
    )
    assert metadata.url_from_connection(_conn(conn_type="postgresql+psycopg", host="h", schema="d")) == (
        "postgresql+psycopg://h/d"
    )
    with pytest.raises(metadata.MetadataCleanupError, match="not a metadata database"):
        metadata.url_from_connection(_conn(conn_type="aws"))


def test_rows_per_table_are_read_from_the_commands_output():
    output = "\n".join(
        [
            "Checking table task_instance",
            "Found 12 rows meeting deletion criteria.",
            "Performing Delete (batch 1, max 10000 rows)...",
            "Checking table xcom",
            "Found 0 rows meeting deletion criteria.",
            "Checking table dag_run",
            "Found 3 rows meeting deletion criteria.",
        ]
    )
    assert metadata.rows_per_table(output) == {"task_instance": 12, "xcom": 0, "dag_run": 3}


def test_cutoff_is_held_back_by_unfinished_runs_only():
    wanted = NOW - timedelta(days=30)
    young = UnfinishedRun("d1", "r1", NOW - timedelta(hours=1))
    old = UnfinishedRun("d2", "r2", NOW - timedelta(days=45))
    older = UnfinishedRun("d3", "r3", NOW - timedelta(days=50))
    assert metadata.protected_cutoff(wanted, [young]) == (wanted, [])
    cutoff, holding = metadata.protected_cutoff(wanted, [young, old, older])
    assert cutoff == older.since - timedelta(seconds=1) and holding == [older, old]


def test_the_command_never_archives_asks_or_hides_a_failure():
    cmd = metadata.command(NOW, dry_run=True)
    assert cmd[:5] == [sys.executable, "-m", "airflow", "db", "clean"]
    assert cmd[cmd.index("--clean-before-timestamp") + 1] == "2026-03-02T03:00:00+00:00"
    assert cmd[cmd.index("--tables") + 1] == "dag_run,task_instance,task_instance_history,task_reschedule,xcom,log"
    assert {"--skip-archive", "--yes", "--error-on-cleanup-failure", "--dry-run"} <= set(cmd)
    assert "--dry-run" not in metadata.command(NOW, dry_run=False)


def test_the_url_travels_in_the_childs_environment_only(monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", BLOCKED)
    monkeypatch.setenv("AIRFLOW__CORE__SQL_ALCHEMY_CONN", BLOCKED)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", "echo nope")
    env = metadata.child_environment("postgresql+psycopg2://u:secret@h/airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://u:secret@h/airflow"
    assert "AIRFLOW__CORE__SQL_ALCHEMY_CONN" not in env and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD" not in env
    assert os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == BLOCKED  # this process is left as it was
    assert not any("secret" in part for part in metadata.command(NOW, dry_run=False))


def test_a_worker_without_the_connection_skips_saying_why(airflow_db, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", BLOCKED)
    monkeypatch.delenv("AIRFLOW_CONN_AIRFLOW_METADATA_DB", raising=False)
    assert metadata.metadata_url()[0] is None
    run = SimpleNamespace(start_date=datetime.now(UTC), run_id="manual__x")
    with pytest.raises(AirflowSkipException, match="AIRFLOW_CONN_AIRFLOW_METADATA_DB"):
        tasks.prune_airflow_metadata({"metadata_retention_days": 30}, run)


# ---------------------------------------------------------------------------- real PostgreSQL


@pytest.fixture(scope="module")
def pg_metadata(pg_server, tmp_path_factory):
    """An Airflow metadata database on PostgreSQL, migrated by `airflow db migrate`."""
    name = f"airflow_meta_{os.getpid()}"
    pg_server.create_database(name)
    url = pg_server.uri(name, driver="postgresql+psycopg2")
    home = tmp_path_factory.mktemp("airflow-home-pg")
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=url)
    command = [str(Path(sys.executable).parent / "airflow"), "db", "migrate"]
    migrate = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    yield url
    pg_server.drop_database(name)


def test_prune_through_the_connection_from_a_worker_without_database_access(pg_metadata, airflow_db, monkeypatch):
    """The worker's situation: this process's own metadata URL is blocked; the child gets the
    connection's URL and cleans a real PostgreSQL metadata database."""
    engine = create_engine(pg_metadata, poolclass=NullPool)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM log"))
        insert = (
            "INSERT INTO log (dttm, event, dag_id) VALUES (:old, 'old', 'd'), (:old, 'old', NULL), (:new, 'new', 'd')"
        )
        conn.execute(text(insert), {"old": now - timedelta(days=40), "new": now - timedelta(days=1)})
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", BLOCKED)
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_METADATA_DB", pg_metadata)
    url, source = metadata.metadata_url()
    assert url.startswith("postgresql+psycopg2://") and source == "connection airflow_metadata_db"

    cutoff = now - timedelta(days=30)
    dry = metadata.prune_metadata(url, source, cutoff=cutoff, now=now, dry_run=True)
    assert dry["rows"]["log"] == 2 and dry["dry_run"] is True and dry["held_back_by"] == []
    with engine.connect() as conn:  # (each `airflow db clean` adds its own audit row: "cli_db_clean")
        assert conn.execute(text("SELECT count(*) FROM log WHERE event IN ('old', 'new')")).scalar() == 3
    done = metadata.prune_metadata(url, source, cutoff=cutoff, now=now, dry_run=False)
    assert done["rows"]["log"] == 2 and done["cutoff"] == cutoff.isoformat()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT event FROM log WHERE event IN ('old', 'new')")).scalars().all() == ["new"]
        archives = conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_airflow\\_deleted%'"))
        assert archives.scalar() == 0  # --skip-archive: no archive tables left behind
    engine.dispose()
