"""The pipeline's own metrics, sent through Airflow's metrics facade (docs/metrics.md).

Airflow's task process sets its `Stats` facade up from `[metrics]` (StatsD with `statsd_on`,
Datadog's DogStatsD with `statsd_datadog_enabled`, OpenTelemetry with `otel_on`, else nothing):
these helpers only call that facade, so the metrics go wherever the deployment sends Airflow's own
(under its `statsd_prefix` / `otel_prefix`, `airflow` by default), and nowhere when metrics are off.
No client, socket or setting of our own.

Names: all under `drill_progress.`. A per-shard metric carries the shard id twice: as the last name
segment (plain StatsD drops tags, so that is what Graphite or the Helm chart's statsd-exporter
mapping sees) and as the tag `shard_id` (kept by OpenTelemetry, DogStatsD and InfluxDB-style
StatsD). Same for the table of `maintenance.rows_pruned.<table>` and the source of
`outbox.published.<source>`. A value is reduced to Airflow's allowed characters (letters, digits,
`_`, `-`; a `.` would split the segment) before it becomes a name segment.

Cost (bench/bench_metrics.py): an emit is one call into Airflow's facade, a few µs with metrics off;
with StatsD on, Airflow's name checks and one UDP datagram make it some 25-50 µs. Ingestion emits
three per usual micro-batch (never per event): about 1 % of a 500-record micro-batch at 37,000
events/s, less for larger batches; the other DAGs a few per run.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from airflow.sdk.observability import stats

log = logging.getLogger(__name__)

PREFIX = "drill_progress"

# per shard of the dialog event stream (name + "." + shard id)
INGEST_BEHIND_MS = f"{PREFIX}.ingest.ms_behind_tip"
INGEST_EVENTS_APPLIED = f"{PREFIX}.ingest.events_applied"
INGEST_SET_ASIDE = f"{PREFIX}.ingest.records_set_aside"
INGEST_MICRO_BATCH_MS = f"{PREFIX}.ingest.micro_batch_duration"
INGEST_PUBLISHED = f"{PREFIX}.ingest.commands_published"
INGEST_PUBLISH_FAILURES = f"{PREFIX}.ingest.publish_failures"
INGEST_HANDOVERS = f"{PREFIX}.ingest.handovers"  # this consumer let go of its shard for a waiting one
INGEST_LEASES_LOST = f"{PREFIX}.ingest.leases_lost"  # this consumer found its lease taken: it stopped

# every command published from the outbox, whoever enqueued it (name + "." + source)
OUTBOX_PUBLISHED = f"{PREFIX}.outbox.published"
OUTBOX_PUBLISH_FAILURES = f"{PREFIX}.outbox.publish_failures"

# per run of schedule_next_drills (gauges: the last run's figures)
SCHEDULING_PLANNED = f"{PREFIX}.scheduling.planned"
SCHEDULING_SENT = f"{PREFIX}.scheduling.sent"
SCHEDULING_LATE_DROPPED = f"{PREFIX}.scheduling.late_dropped"
SCHEDULING_ACTIVE_AGAIN = f"{PREFIX}.scheduling.active_again"
SCHEDULING_STALE = f"{PREFIX}.scheduling.stale"
SCHEDULING_MISSING = f"{PREFIX}.scheduling.missing"
SCHEDULING_PACING_ERROR_MS = f"{PREFIX}.scheduling.pacing_error_max_ms"

REMINDERS_ENQUEUED = f"{PREFIX}.reminders.enqueued"

# per table (name + "." + table): the drill database's, Airflow's metadata database's
MAINTENANCE_ROWS_PRUNED = f"{PREFIX}.maintenance.rows_pruned"
MAINTENANCE_AIRFLOW_ROWS_PRUNED = f"{PREFIX}.maintenance.airflow_rows_pruned"
MAINTENANCE_LOG_FILES_PRUNED = f"{PREFIX}.maintenance.log_files_pruned"
MAINTENANCE_HISTORY_PARTITIONS_DROPPED = f"{PREFIX}.maintenance.history_partitions_dropped"

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@lru_cache(maxsize=1024)
def segment(value: object) -> str:
    """`value` as one name segment: Airflow's allowed characters only, no `.` (it would add a level)."""
    return _UNSAFE.sub("_", str(value))[:100] or "_"


def _count(name: str, value: int, tags: dict | None = None) -> None:
    if value:  # a counter of 0 adds nothing: no datagram
        stats.incr(name, int(value), tags=tags)


class ShardMetrics:
    """The metrics of one shard's consumer; names built once, then one call per micro-batch."""

    __slots__ = (
        "_behind",
        "_duration",
        "_events",
        "_failures",
        "_handovers",
        "_leases_lost",
        "_published",
        "_set_aside",
        "tags",
    )

    def __init__(self, shard_id: str):
        tail = "." + segment(shard_id)
        self.tags = {"shard_id": shard_id}
        self._behind = INGEST_BEHIND_MS + tail
        self._events = INGEST_EVENTS_APPLIED + tail
        self._set_aside = INGEST_SET_ASIDE + tail
        self._duration = INGEST_MICRO_BATCH_MS + tail
        self._published = INGEST_PUBLISHED + tail
        self._failures = INGEST_PUBLISH_FAILURES + tail
        self._handovers = INGEST_HANDOVERS + tail
        self._leases_lost = INGEST_LEASES_LOST + tail

    def behind(self, ms: int | None) -> None:
        """After each GetRecords call (busy or idle): MillisBehindLatest."""
        if ms is not None:
            stats.gauge(self._behind, ms, tags=self.tags)

    def committed(self, events: int, set_aside: int, seconds: float) -> None:
        """After each committed micro-batch (or part of one, when it was bisected)."""
        _count(self._events, events, self.tags)
        _count(self._set_aside, set_aside, self.tags)
        stats.timing(self._duration, seconds * 1000.0, tags=self.tags)

    def set_aside(self, records: int) -> None:
        _count(self._set_aside, records, self.tags)

    def published(self, published: int, failed: int) -> None:
        _count(self._published, published, self.tags)
        _count(self._failures, failed, self.tags)

    def handed_over(self) -> None:
        """Once per hand-over: the consumer committed, published and let go for the next one."""
        _count(self._handovers, 1, self.tags)

    def lease_lost(self) -> None:
        """The fence stopped this consumer: another one took its lease (an expiry, a stall)."""
        _count(self._leases_lost, 1, self.tags)


def outbox_published(source: str, published: int, failed: int) -> None:
    tags = {"source": source}
    _count(f"{OUTBOX_PUBLISHED}.{segment(source)}", published, tags)
    _count(f"{OUTBOX_PUBLISH_FAILURES}.{segment(source)}", failed, tags)


def scheduling_run(report: dict) -> None:
    """The figures of one schedule_next_drills run (`shortfall.compare`'s report), as gauges."""
    for name, key in (
        (SCHEDULING_PLANNED, "recorded"),
        (SCHEDULING_SENT, "sent"),
        (SCHEDULING_LATE_DROPPED, "late_dropped"),
        (SCHEDULING_ACTIVE_AGAIN, "active_again"),
        (SCHEDULING_STALE, "stale"),
        (SCHEDULING_MISSING, "missing"),
    ):
        stats.gauge(name, int(report.get(key) or 0))
    stats.gauge(SCHEDULING_PACING_ERROR_MS, round(float(report.get("max_lateness_s") or 0.0) * 1000.0, 3))


def reminders_enqueued(count: int) -> None:
    _count(REMINDERS_ENQUEUED, count)


def rows_pruned(table: str, rows: int) -> None:
    _count(f"{MAINTENANCE_ROWS_PRUNED}.{segment(table)}", rows, {"table": table})


def airflow_rows_pruned(table: str, rows: int) -> None:
    _count(f"{MAINTENANCE_AIRFLOW_ROWS_PRUNED}.{segment(table)}", rows, {"table": table})


def log_files_pruned(files: int) -> None:
    _count(MAINTENANCE_LOG_FILES_PRUNED, files)


def history_partitions_dropped(partitions: int) -> None:
    """Monthly partitions of the event history dropped whole (past `history_retention_days`)."""
    _count(MAINTENANCE_HISTORY_PARTITIONS_DROPPED, partitions)
