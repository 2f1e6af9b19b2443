"""A real CeleryExecutor stack for tests (`EXECUTOR=celery make up`, through devtools.devstack) and
the helpers its scenarios share: trigger a DAG run through the REST API, wait for it, list its task
instances, tell which Celery worker ran each, SIGKILL a worker, read and audit the command stream.

Import as `from celery_support import ...` from tests in this folder; the `celery_stack` fixture
(tests/devtools/conftest.py) starts one stack per session on free loopback ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from devtools import chaos, devstack
from drill_progress import config

ROOT = Path(__file__).resolve().parents[2]
FINISHED = {"success", "failed"}
INGEST_SHARDS = 4  # shards of the stack's dialog event stream
# Faster recovery than production defaults, so a lost worker's task is retried within the test:
# the scheduler fails a task whose heartbeat stopped after 30 s (default 300 s) and re-queues a
# task stuck in "queued" after 60 s (default 600 s). The DAGs' own retries (30 s backoff) then
# run it again on a live worker.
FAST_RECOVERY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
}
_EXECUTING = re.compile(r"Executing workload in Celery: .*?TaskInstanceDTO\(id=UUID\('([0-9a-f-]{36})'\)")


def stack_environment(state_dir: Path, workers: int = 2, **extra: str) -> dict[str, str]:
    """The environment of `python -m devtools.devstack` for a Celery stack on free ports in
    `state_dir`; the test session's own Airflow settings are left out. The slots per worker are
    devstack's default, sized for ingestion's hand-over and the other DAGs."""
    return devstack.spare_stack_environment(
        state_dir, EXECUTOR="celery", DRILL_CELERY_WORKERS=str(workers), DRILL_CELERY_CONCURRENCY="", **extra
    )


@dataclass
class CeleryStack:
    """One Celery stack started by devstack; `s` is its Settings, `api` its REST client."""

    env: dict[str, str]

    def __post_init__(self) -> None:
        self.s = devstack.Settings.from_env(self.env)
        self.api = devstack.Api(self.s.api_url)
        self._kinesis = None

    # ------------------------------------------------------------------ the stack's CLI

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`python -m devtools.devstack <args>` (what `make up|status|down` run)."""
        return subprocess.run(
            [sys.executable, "-m", "devtools.devstack", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> subprocess.CompletedProcess:
        proc = self.cli("up", "--no-simulator")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        return proc

    def down(self) -> subprocess.CompletedProcess:
        return self.cli("down", timeout=180)

    # ------------------------------------------------------------------ DAG runs through the REST API

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """A manual run (logical date: now), queued for the scheduler; returns its run id."""
        body = {"logical_date": None, "conf": conf or {}}
        return self.api._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api._request("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": paused})

    def runs(self, dag_id: str) -> list[dict]:
        return self.api._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}?deserialize=true"
        return self.api._request("GET", path)["value"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        """Wait until the run finished (success or failed); returns its state."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            try:
                state = self.run_state(dag_id, run_id)
            except (OSError, urllib.error.URLError):
                state = "api unreachable"
            if state in FINISHED:
                return state
            time.sleep(2)
        raise AssertionError(f"{dag_id} {run_id} still {state} after {timeout:.0f}s:\n{self.describe(dag_id, run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run, mapped ones included (`id`, `task_id`, `map_index`, `state`...)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
        return self.api._request("GET", path)["task_instances"]

    def wait_for_task_state(self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 120) -> dict:
        """Wait until some instance of `task_id` is in `state` (e.g. "running"); returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ti in self.task_instances(dag_id, run_id):
                if ti["task_id"] == task_id and ti["state"] == state:
                    return ti
            time.sleep(0.5)
        raise AssertionError(f"{dag_id}.{task_id} never {state}:\n{self.describe(dag_id, run_id)}")

    def describe(self, dag_id: str, run_id: str) -> str:
        """One line per task instance (for failure messages)."""
        try:
            rows = self.task_instances(dag_id, run_id)
        except (OSError, urllib.error.URLError) as exc:
            return f"(task instances unavailable: {exc})"
        return "\n".join(
            f"  {t['task_id']}[{t['map_index']}] {t['state']} try {t['try_number']} on {self.worker_of(t['id'])}"
            for t in rows
        )

    # ------------------------------------------------------------------ which worker ran what

    def worker_log(self, name: str) -> Path:
        return self.s.log_dir / f"{name}.log"

    def executed_by(self) -> dict[str, list[str]]:
        """task instance id -> the workers that received it (a retry after a lost worker: two), read
        from each worker's log line "Executing workload in Celery: ... TaskInstanceDTO(id=...)"."""
        seen: dict[str, list[str]] = {}
        _, workers = devstack.celery_components(self.s)
        for name in workers:
            path = self.worker_log(name)
            text = path.read_text(errors="replace") if path.exists() else ""
            for ti_id in _EXECUTING.findall(text):
                seen.setdefault(ti_id, []).append(name)
        return seen

    def worker_of(self, ti_id: str) -> str | None:
        """The worker that last received the task instance (None: not executed by a worker)."""
        names = self.executed_by().get(ti_id)
        return names[-1] if names else None

    def workers_used(self, *runs: tuple[str, str]) -> dict[str, set[str]]:
        """worker -> the "dag.task[map_index]" it executed, over the given (dag_id, run_id) runs."""
        executed = self.executed_by()
        used: dict[str, set[str]] = {}
        for dag_id, run_id in runs:
            for ti in self.task_instances(dag_id, run_id):
                for worker in executed.get(ti["id"], []):
                    used.setdefault(worker, set()).add(f"{dag_id}.{ti['task_id']}[{ti['map_index']}]")
        return used

    def kill_worker(self, name: str) -> int:
        """SIGKILL a worker's whole process group (its pool and the tasks it runs): a lost machine."""
        pid = devstack.running_pid(self.s, name)
        assert pid, f"{name} is not running"
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while devstack._group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not devstack._group_alive(pid), f"{name} survived SIGKILL"
        return pid

    def online_workers(self) -> list[str]:
        return sorted(node.split("@", 1)[0] for node in devstack.celery_workers(self.s))

    # ------------------------------------------------------------------ data and commands

    def drill_engine(self):
        from drill_progress.db import make_engine

        return make_engine(devstack.drill_db_uri(self.s))

    def kinesis(self):
        if self._kinesis is None:
            self._kinesis = chaos.boto3_client("kinesis", self.s.aws_endpoint_url)
        return self._kinesis

    def commands(self) -> list[dict]:
        """Every record on the command stream, parsed (see devtools.chaos.read_commands)."""
        return chaos.read_commands(self.kinesis(), config.VARIABLE_DEFAULTS[config.COMMAND_STREAM])
