"""Fixtures shared by the ingestion tests that consume a shard (continuous consumption, the lease)."""

from __future__ import annotations

import pytest
from ingest_support import COMMAND_STREAM, DIALOG_STREAM

from drill_progress.setup.aws_resources import ensure_stream


@pytest.fixture
def streams(aws):
    """The dialog event stream and the command stream, one shard each, on the emulator."""
    ensure_stream(aws.kinesis, DIALOG_STREAM, 1)
    ensure_stream(aws.kinesis, COMMAND_STREAM, 1)
    return aws.kinesis
