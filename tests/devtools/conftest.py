"""The `celery_stack` fixture: one real CeleryExecutor stack (`EXECUTOR=celery make up`) per session,
on free loopback ports in a temporary folder, stopped at the end of the session."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from celery_support import FAST_RECOVERY, CeleryStack, stack_environment

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
    stack = CeleryStack(stack_environment(state, **FAST_RECOVERY))
    try:
        stack.up()
        yield stack
    finally:
        down = stack.down()
        subprocess.run(["rm", "-rf", str(state)], check=False)
        assert down.returncode == 0, down.stderr[-2000:]
