"""Scale-out on CeleryExecutor (issue 16): the same backlog on a 4-shard dialog event stream,
ingested by one `dialog_event_ingest` run started by hand, with 1 Celery worker and with 2 workers
of CELERY_BENCH_CONCURRENCY (2) task slots each. Prints each configuration's throughput and the
ratio 2 workers / 1 worker.

Each configuration is a whole local stack (`EXECUTOR=celery make up`, devtools.devstack) on spare
ports in a temporary folder, with the scheduler, triggerer, dag-processor, api-server, Redis and
the workers. The run is started the way an operator starts a catch-up run while the continuous
run is active (dialog_event_ingest's doc): trigger it, mark the scheduled run as success; here the
DAG is paused in between, so the backlog is put on the stream before any consumer reads it. The
figure is the apply window: from the first shard task's start to the last one's end (Airflow's
own task instance times), the backlog's events divided by it. Both runs must end in the same state.

With 1 worker of 2 slots, two shard tasks run and two wait for a slot; with 2 workers all four run
at once. On a 2-core machine the two workers share the same two cores with PostgreSQL, the AWS
emulator, Redis and Airflow's own processes: the ratio shows what spreading the shards buys when
CPU is not added, not what a second machine buys.

The other ceiling is Kinesis's own: a shard task makes at most 5 GetRecords calls a second of at
most 500 records each (the service's per-shard limit, honoured by the reader), so one shard drains
at most 2,500 records a second whatever the worker. `shard_tasks_s` prints each shard task's
[start, end] so the waves (two tasks, then the other two, on 1 worker) are visible. The other
scheduled DAGs are kept paused (OTHER_SCHEDULED_DAGS). Measured on 2 cores: 1 worker 4,868
events/s, 2 workers 9,848 events/s, ratio 2.02 (an earlier run: 3,866 and 8,990, ratio 2.33); each
shard task close to the 2,500 records/s cap, the single worker also paying a task start between
its two waves. docs/celery.md has the spans and what limits the ratio.

Sizes: CELERY_BENCH_EVENTS (100,000), CELERY_BENCH_USERS (2,500), CELERY_BENCH_CONCURRENCY (2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

DAG_ID = "dialog_event_ingest"
SHARDS = 4
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}
# Paused for the measurement: their runs at the stack's start (the latest interval of each) would
# take worker slots from the shard tasks at random moments (measured: ratio 1.19 with them, the
# third and fourth shard tasks starting 2.8 s and 5.0 s late).
OTHER_SCHEDULED_DAGS = (
    "drill_progress_maintenance",
    "drill_progress_monitor",
    "drill_progress_report",
    "schedule_next_drills",
    "trigger_reminders",
)


def _wait(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


class _Stack:
    """One Celery stack for one configuration."""

    def __init__(self, workers: int, concurrency: int):
        from devtools import devstack

        self.state = Path(tempfile.mkdtemp(prefix=f"drill-celery-bench-{workers}w-"))
        self.state.chmod(0o755)
        env = devstack.spare_stack_environment(
            self.state,
            EXECUTOR="celery",
            DRILL_CELERY_WORKERS=str(workers),
            DRILL_CELERY_CONCURRENCY=str(concurrency),
            DRILL_DIALOG_SHARDS=str(SHARDS),
            DRILL_KEEP_PAUSED=",".join(OTHER_SCHEDULED_DAGS),
        )
        self.s = devstack.Settings.from_env(env)
        self.api = devstack.Api(self.s.api_url)

    def __enter__(self) -> _Stack:
        from devtools import devstack

        devstack.up(self.s, with_simulator=False)
        return self

    def __exit__(self, *exc) -> None:
        from devtools import devstack

        devstack.down(self.s)
        shutil.rmtree(self.state, ignore_errors=True)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.api._request(method, path, body)

    def runs(self) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]

    def task_instances(self, run_id: str) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]

    def set_paused(self, paused: bool) -> None:
        self.call("PATCH", f"/api/v2/dags/{DAG_ID}?update_mask=is_paused", {"is_paused": paused})


def _catch_up_run(stack: _Stack, records: list) -> str:
    """Start a run by hand with the backlog on the stream and no consumer before it; its run id."""
    from devtools import chaos
    from drill_progress import config

    scheduled = _wait(
        "the continuous run",
        lambda: next((r for r in stack.runs() if r["run_type"] == "scheduled" and r["state"] == "running"), None),
        240,
    )
    stack.set_paused(True)
    body = {"logical_date": None, "conf": {"max_records_per_shard": 10**9, "max_seconds": 3600}}
    run_id = stack.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", body)["dag_run_id"]
    stack.call("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{scheduled['dag_run_id']}", {"state": "success"})
    _wait(
        "the scheduled run's tasks to stop",
        lambda: all(t["state"] in TERMINAL for t in stack.task_instances(scheduled["dag_run_id"])),
        180,
    )
    kinesis = chaos.boto3_client("kinesis", stack.s.aws_endpoint_url)
    chaos.put_records(kinesis, config.VARIABLE_DEFAULTS[config.DIALOG_EVENT_STREAM], records)
    stack.set_paused(False)
    return run_id


def _finished(stack: _Stack, run_id: str) -> str | None:
    state = stack.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
    return state if state in TERMINAL else None


def _apply_window(tis: list[dict]) -> tuple[float, list[list[float]]]:
    """Seconds from the first shard task's start to the last one's end, and each shard task's
    [start, end] in seconds from that first start (how the tasks shared the slots)."""
    shards = sorted((t for t in tis if t["task_id"] == "ingest_shard"), key=lambda t: t["start_date"])
    start = min(datetime.fromisoformat(t["start_date"]) for t in shards)
    end = max(datetime.fromisoformat(t["end_date"]) for t in shards)
    spans = [
        [round((datetime.fromisoformat(t[k]) - start).total_seconds(), 1) for k in ("start_date", "end_date")]
        for t in shards
    ]
    return (end - start).total_seconds(), spans


def _one(workers: int, concurrency: int, traffic) -> dict:
    from devtools import aggregate, devstack
    from drill_progress.db import make_engine

    with _Stack(workers, concurrency) as stack:
        started = time.monotonic()
        run_id = _catch_up_run(stack, traffic.records)
        state = _wait("the run by hand to finish", lambda: _finished(stack, run_id), 1800, every=2.0)
        wall = time.monotonic() - started
        tis = stack.task_instances(run_id)
        if state != "success":
            raise RuntimeError(
                f"{workers} worker(s): the run ended {state}: {[(t['task_id'], t['state']) for t in tis]}"
            )
        engine = make_engine(devstack.drill_db_uri(stack.s))
        try:
            checksum = aggregate.aggregate_checksum(engine)
        finally:
            engine.dispose()
    window, spans = _apply_window(tis)
    return {
        "window_s": window,
        "spans": spans,
        "events_per_s": traffic.events / window,
        "wall_s": wall,
        "checksum": checksum,
    }


def run(ctx) -> list[dict]:
    from devtools import chaos

    events = ctx.size("CELERY_BENCH_EVENTS", 100_000)
    users = ctx.size("CELERY_BENCH_USERS", 2_500)
    concurrency = ctx.size("CELERY_BENCH_CONCURRENCY", 2)
    traffic = chaos.make_records(events, seed=21, users=users)
    one = _one(1, concurrency, traffic)
    two = _one(2, concurrency, traffic)
    if one["checksum"] != two["checksum"]:
        raise RuntimeError("1 and 2 workers ended in different states")
    common = {
        "events": traffic.events,
        "records": len(traffic.records),
        "shards": SHARDS,
        "slots_per_worker": concurrency,
    }
    return [
        {
            "metric": f"celery.ingest.{n}_worker.events_per_s",
            "value": round(r["events_per_s"]),
            "unit": "events/s",
            "apply_window_s": round(r["window_s"], 1),
            "shard_tasks_s": r["spans"],
            "wall_s_put_and_run": round(r["wall_s"], 1),
            **common,
        }
        for n, r in ((1, one), (2, two))
    ] + [
        {
            "metric": "celery.ingest.scale_out_ratio",
            "value": round(two["events_per_s"] / one["events_per_s"], 2),
            "unit": "x (2 workers / 1 worker)",
            "cpus": os.cpu_count(),
            "same_end_state": True,
        }
    ]
