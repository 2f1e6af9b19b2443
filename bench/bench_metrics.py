"""What the pipeline's metrics (drill_progress.metrics, docs/metrics.md) cost on the ingest hot path.

Sizes (env): METRICS_BENCH_CALLS (default 20,000 calls per figure), METRICS_BENCH_APPLY_RATE
(events/s of the apply path, default 37,000: the measured figure in README.md),
METRICS_BENCH_MICRO_BATCH (records per micro-batch, default 500, the DAG's default).

Measures, with Airflow's metrics off (the facade's no-op logger) and with StatsD on towards a real
receiver on loopback (devtools.metrics_sink in a child process, writing to a temporary file):
the time of what ingestion calls per usual micro-batch (one `behind` gauge for its GetRecords call,
then `ShardMetrics.committed`: the events-applied counter and the duration timer; the set-aside
counter only when something was set aside), per emit, and that time as a share of one micro-batch
at the apply rate (500 records of one event each: the shortest micro-batch, so the largest
share). The receiver's line count is compared with what was sent (UDP drops datagrams when the
receiver falls behind a burst like this one: the figure says how many arrived).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.services import wait_for

REPO = Path(__file__).resolve().parents[1]
SHARD = "shardId-000000000000"
EMITS = 3  # per micro-batch: the lag gauge, events applied, the duration


def _initialize() -> None:
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    stats.initialize(
        factory=stats_utils.get_stats_factory(),
        export_legacy_names=conf.getboolean("metrics", "legacy_names_on"),
    )


def _per_call_us(calls: int, fn) -> float:
    fn()  # the backend is created on first use
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(ctx) -> list[dict]:
    from drill_progress.metrics import ShardMetrics

    calls = ctx.size("METRICS_BENCH_CALLS", 20_000)
    rate = ctx.size("METRICS_BENCH_APPLY_RATE", 37_000)
    micro_batch = ctx.size("METRICS_BENCH_MICRO_BATCH", 500)
    micro_batch_us = micro_batch / rate * 1e6
    shard = ShardMetrics(SHARD)

    def per_micro_batch() -> None:  # the usual micro-batch: nothing set aside (a counter of 0 is not sent)
        shard.behind(1234)
        shard.committed(1000, 0, 0.0123)

    out: list[dict] = []
    names = ("AIRFLOW__METRICS__STATSD_ON", "AIRFLOW__METRICS__STATSD_HOST", "AIRFLOW__METRICS__STATSD_PORT")
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        port = _free_udp_port()
        log = Path(tmp) / "metrics.log"
        sink = subprocess.Popen(
            [sys.executable, "-m", "devtools.metrics_sink", "--port", str(port), "--out", str(log)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _udp_bound(port), 30, "the StatsD receiver")
            for label, env in (
                ("off", {"AIRFLOW__METRICS__STATSD_ON": "False"}),
                ("statsd", {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                            "AIRFLOW__METRICS__STATSD_PORT": str(port)}),
            ):  # fmt: skip
                os.environ.update(env)
                _initialize()
                us = _per_call_us(calls, per_micro_batch)
                out.append(
                    {"metric": f"metrics_per_micro_batch_{label}", "value": round(us, 2), "unit": "µs",
                     "emits": EMITS, "calls": calls}
                )  # fmt: skip
                out.append({"metric": f"metrics_per_emit_{label}", "value": round(us / EMITS, 2), "unit": "µs"})
                out.append(
                    {"metric": f"metrics_share_of_micro_batch_{label}", "value": round(us / micro_batch_us * 100, 4),
                     "unit": "%", "micro_batch_records": micro_batch, "apply_rate_events_s": rate}
                )  # fmt: skip
            sent = EMITS * (calls + 1)
            time.sleep(1.0)
            arrived = sum(1 for line in log.read_text().splitlines() if "drill_progress" in line)
            out.append({"metric": "metrics_statsd_lines_arrived", "value": arrived, "unit": "lines", "sent": sent})
        finally:
            sink.terminate()
            sink.wait(10)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _initialize()
    return out


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
