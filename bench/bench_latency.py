"""Event -> command latency on the running local stack (issue 13): how long a user who texts their code
waits for their first drill.

Starts the local stack (`make up`'s devtools.devstack) on spare ports in a temporary state folder,
with the scheduler, triggerer, dag-processor, api-server and the simulator running, waits until
`dialog_event_ingest` answers, then puts LATENCY_BENCH_PROBES (30) probes on the dialog event stream
at random 1-4 s intervals, each a USER_VALIDATED batch of a new phone number, and times the
START_DRILL of each on the command stream: command's ApproximateArrivalTimestamp (stamped by the
emulator) minus the moment the probe was put. Prints p50, p95 and max, and the metadata the
continuous DAG writes per day.

It measures the stack on each executor of LATENCY_BENCH_EXECUTORS (default "local,celery": the
default stack, then `EXECUTOR=celery make up`'s, issue 16) and prints the Celery / local ratio.
LATENCY_BENCH_ENDPOINT=http://127.0.0.1:5055 probes a stack that is already running instead (e.g.
`make up`, or an older version of the project, to compare); LATENCY_BENCH_PROBES sets the count.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime

from devtools import simulator as sim

EVENTS, COMMANDS = "dialog-events", "dialog-commands"
TIMEOUT_S = 60.0
WARM_UP_TIMEOUT_S = 600.0


def _client(endpoint: str):
    import boto3

    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


_SEQ = sim.KinesisSeq()


def _probe_batch(phone: str) -> bytes:
    """A USER_VALIDATED batch as the real producer writes it (full profile, microsecond times,
    a 56-digit seq)."""
    now = datetime.now(UTC)
    account = sim.account_info(99, 1)
    profile = sim.profile(validated=True, account=account)
    payload = {"is_demo": False, "account_info": account, "valid": True}
    event = sim.event(
        "USER_VALIDATED", str(uuid.uuid4()), phone, sim.iso(now), profile, code_validation_payload=payload
    )
    return sim.encode(sim.batch(str(uuid.uuid4()), _SEQ.next(now), phone, sim.iso(now), [event]))


class CommandWatch:
    """Reads the command stream from its tip on a thread; the first START_DRILL per phone number."""

    def __init__(self, kinesis):
        self.kinesis = kinesis
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        shard = kinesis.list_shards(StreamName=COMMANDS)["Shards"][0]["ShardId"]
        self._iterator = kinesis.get_shard_iterator(StreamName=COMMANDS, ShardId=shard, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            page = self.kinesis.get_records(ShardIterator=self._iterator, Limit=1000)
            self._iterator = page["NextShardIterator"]
            for record in page["Records"]:
                command = json.loads(record["Data"])
                if command.get("type") == "START_DRILL":
                    self.seen.setdefault(record["PartitionKey"], record["ApproximateArrivalTimestamp"].timestamp())
            time.sleep(0.05)

    def wait(self, phone: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if phone in self.seen:
                return self.seen[phone]
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def probe(kinesis, watch: CommandWatch, timeout: float = TIMEOUT_S) -> float | None:
    """Seconds from putting a USER_VALIDATED batch of a new phone number to its START_DRILL."""
    phone = f"+1999{random.randrange(10**7):07d}"
    put_at = time.time()
    kinesis.put_record(StreamName=EVENTS, Data=_probe_batch(phone), PartitionKey=phone)
    arrived = watch.wait(phone, timeout)
    return None if arrived is None else max(0.0, arrived - put_at)


def warm_up_probe(kinesis, watch: CommandWatch) -> float:
    """The first probe, given WARM_UP_TIMEOUT_S: answered once ingestion runs and has caught up."""
    warm_up = probe(kinesis, watch, WARM_UP_TIMEOUT_S)
    if warm_up is None:
        raise RuntimeError(f"no START_DRILL within {WARM_UP_TIMEOUT_S:.0f}s: is dialog_event_ingest running?")
    return warm_up


def measure(endpoint: str, probes: int) -> dict:
    kinesis = _client(endpoint)
    watch = CommandWatch(kinesis)
    try:
        warm_up = warm_up_probe(kinesis, watch)
        latencies = []
        for _ in range(probes):
            time.sleep(random.uniform(1.0, 4.0))
            latencies.append(probe(kinesis, watch))
    finally:
        watch.stop()
    answered = sorted(x for x in latencies if x is not None)
    return {"warm_up": warm_up, "latencies": latencies, "answered": answered, "missing": probes - len(answered)}


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def stack_settings(executor: str, label: str = "latency", **extra: str):
    """The settings of a stack on spare ports in a new temporary state folder (nothing started);
    `extra` (e.g. DRILL_SIM_RATE="20") on top of its environment."""
    from devtools import devstack

    state = tempfile.mkdtemp(prefix=f"drill-{label}-{executor}-")
    os.chmod(state, 0o755)
    settings = devstack.Settings.from_env(devstack.spare_stack_environment(state, EXECUTOR=executor, **extra))
    return settings, state


def _measure_stack(executor: str, probes: int) -> dict:
    """Start a stack on `executor` (local or celery), probe it, stop it (also when it failed to start)."""
    from devtools import devstack

    settings, state = stack_settings(executor)
    try:
        devstack.up(settings, with_simulator=True)
        return measure(settings.aws_endpoint_url, probes)
    finally:
        devstack.down(settings)
        shutil.rmtree(state, ignore_errors=True)


def _figures(result: dict, probes: int, prefix: str) -> list[dict]:
    answered = result["answered"]
    return [
        {
            "metric": f"{prefix}.p50_s",
            "value": round(statistics.median(answered), 2),
            "unit": "s",
            "probes": probes,
            "answered": len(answered),
        },
        {"metric": f"{prefix}.p95_s", "value": round(_percentile(answered, 95), 2), "unit": "s"},
        {
            "metric": f"{prefix}.max_s",
            "value": round(answered[-1], 2),
            "unit": "s",
            "unanswered_within_s": {"probes": result["missing"], "timeout": TIMEOUT_S},
        },
        {
            "metric": f"{prefix}.all_s",
            "value": len(answered),
            "unit": "probes",
            "seconds": [None if x is None else round(x, 2) for x in result["latencies"]],
        },
    ]


def run(ctx) -> list[dict]:
    probes = ctx.size("LATENCY_BENCH_PROBES", 30)
    endpoint = os.environ.get("LATENCY_BENCH_ENDPOINT")
    if endpoint:
        return _figures(measure(endpoint, probes), probes, "latency.event_to_command") + metadata_per_day()
    executors = [e.strip() for e in os.environ.get("LATENCY_BENCH_EXECUTORS", "local,celery").split(",") if e]
    results = {executor: _measure_stack(executor, probes) for executor in executors}
    out = []
    for executor, result in results.items():
        prefix = "latency.event_to_command" if executor == "local" else f"latency.{executor}.event_to_command"
        out += _figures(result, probes, prefix)
    if "local" in results and "celery" in results:
        local, celery = (statistics.median(results[e]["answered"]) for e in ("local", "celery"))
        p95 = {e: _percentile(results[e]["answered"], 95) for e in ("local", "celery")}
        out.append(
            {
                "metric": "latency.celery_vs_local.p50_ratio",
                "value": round(celery / local, 2),
                "unit": "x",
                "p95_ratio": round(p95["celery"] / p95["local"], 2),
            }
        )
    return out + metadata_per_day()


def metadata_per_day(shards: int = 2, run_minutes: int = 60) -> list[dict]:
    """Runs and task instances `dialog_event_ingest` adds to Airflow's metadata per day: a continuous
    run of run_minutes has plan_shards, one ingest_shard per shard, publish_commands, summary."""
    runs = 24 * 60 / run_minutes
    return [
        {
            "metric": "ingest.metadata.runs_per_day",
            "value": round(runs),
            "unit": "runs",
            "shards": shards,
            "before": 1440,
            "note": "continuous runs of run_minutes; before: one run a minute",
        },
        {
            "metric": "ingest.metadata.task_instances_per_day",
            "value": round(runs * (shards + 3)),
            "unit": "task instances",
            "shards": shards,
            "before": 1440 * (shards + 3),
        },
    ]
