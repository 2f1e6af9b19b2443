"""Fixtures shared by the scheduling DAG tests."""

import pytest

from drill_progress.setup.aws_resources import ensure_stream, ensure_table

# the contract's default names of the drill schedule table and the command stream
TABLE, STREAM = "drill-trigger-schedule", "dialog-commands"


@pytest.fixture
def resources(airflow_env):
    """The schedule table and the command stream on the emulator, for a DAG run."""
    aws = airflow_env["aws"]
    ensure_table(aws.dynamodb, TABLE, "pk", "sk")
    ensure_stream(aws.kinesis, STREAM)
    return airflow_env
