"""`drill_progress_setup` end to end via dag.test() against real PostgreSQL and the moto server."""

from __future__ import annotations

from airflow_support import run_state as _state

from drill_progress import config


def test_setup_creates_schema_and_aws_resources_and_runs_twice(run_dag, empty_db, monkeypatch, aws):
    monkeypatch.setenv("AIRFLOW_CONN_DRILL_PROGRESS_DB", empty_db.url)
    first = run_dag("drill_progress_setup")
    assert _state(first) == "success"
    with empty_db.engine.connect() as conn:
        slugs = conn.exec_driver_sql("SELECT drill_slug FROM drills ORDER BY place_in_sequence").scalars().all()
    assert slugs == list(config.INITIAL_CATALOG)
    streams = aws.kinesis.list_streams()["StreamNames"]
    assert {"dialog-events", "dialog-commands"} <= set(streams)
    tables = aws.dynamodb.list_tables()["TableNames"]
    assert {"drill-trigger-schedule", "drill-idempotency"} <= set(tables)
    ttl = aws.dynamodb.describe_time_to_live(TableName="drill-idempotency")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"

    second = run_dag("drill_progress_setup")
    assert _state(second) == "success"


def test_setup_honours_variables_and_can_skip_aws(run_dag, monkeypatch, aws):
    monkeypatch.setenv("AIRFLOW_VAR_DIALOG_EVENT_STREAM", "custom-events")
    assert _state(run_dag("drill_progress_setup")) == "success"
    assert "custom-events" in aws.kinesis.list_streams()["StreamNames"]

    aws_reset_streams = set(aws.kinesis.list_streams()["StreamNames"])
    monkeypatch.setenv("AIRFLOW_VAR_COMMAND_STREAM", "never-created")
    assert _state(run_dag("drill_progress_setup", conf={"create_aws_resources": False})) == "success"
    assert set(aws.kinesis.list_streams()["StreamNames"]) == aws_reset_streams
