"""The `celery_stack` fixture: one real CeleryExecutor stack (`EXECUTOR=celery make up`) per session,
on free loopback ports in a temporary folder, stopped at the end of the session."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from celery_support import FAST_RECOVERY, INGEST_SHARDS, CeleryStack, stack_environment

from devtools.services import ServiceError, find_redis_server


@pytest.fixture(scope="session")
def celery_stack():
    try:
        find_redis_server()
    except ServiceError as exc:
        pytest.skip(f"no Redis for the Celery stack ({exc}); .ci/run installs Debian's redis-server")
    # PostgreSQL runs as an unprivileged user when we are root: it must reach the folder.
    state = Path(tempfile.mkdtemp(prefix="drill-celery-stack-"))
    state.chmod(0o755)
    # Ingestion across 4 shards; `dialog_event_ingest` left paused until its own scenario (the last
    # one): its continuous run holds a worker slot per shard, as it does in production.
    extra = {"DRILL_DIALOG_SHARDS": str(INGEST_SHARDS), "DRILL_KEEP_PAUSED": "dialog_event_ingest"}
    stack = CeleryStack(stack_environment(state, **FAST_RECOVERY, **extra))
    try:
        stack.up()
        yield stack
    finally:
        down = stack.down()
        subprocess.run(["rm", "-rf", str(state)], check=False)
        assert down.returncode == 0, down.stderr[-2000:]
