"""Ingestion lag: how far what ingestion has committed is behind the tip of the dialog event stream.

Measured from the stream and the committed checkpoints only (`stream_checkpoints`), never from
DAG runs, so it holds whatever shape ingestion takes (scheduled micro-batches or a continuous
run). Per shard, the lag is the age of its oldest record not yet applied: read with one
GetRecords (Limit 1) right after the checkpoint's sequence number (from the shard's start when
it has none yet); 0 when there is nothing unread. A shard drained after resharding counts 0. The
stream's lag is its worst shard's.

drill_progress_monitor samples it every 5 minutes into `ingestion_lag_samples` (the Drill
Progress page charts the last hours; drill_progress_maintenance keeps 7 days) and alerts when
the lag has stayed above the threshold (Variable `ingestion_lag_alert_minutes`, default 5) for at
least `ingestion_lag_alert_sustain_minutes` (default 5: two samples in a row): one alert per
episode, and one "recovered" message when it is back under the threshold.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from drill_progress import alerting
from drill_progress.db import run
from drill_progress.ingest import reader

log = logging.getLogger(__name__)

THRESHOLD_VARIABLE = "ingestion_lag_alert_minutes"
SUSTAIN_VARIABLE = "ingestion_lag_alert_sustain_minutes"
DEFAULT_THRESHOLD_MINUTES = 5
DEFAULT_SUSTAIN_MINUTES = 5
MEMORY = timedelta(hours=24)  # how far back an episode is looked for
EMPTY_READS = 5  # GetRecords calls on an empty page before trusting MillisBehindLatest

RAISE, RECOVER = "raise", "recover"


@dataclass(frozen=True)
class Sample:
    sampled_at: datetime
    lag_seconds: float
    above: bool
    alerted: bool = False


def settings() -> tuple[timedelta, timedelta]:
    """(threshold, sustain) from the Variables, with their defaults."""
    from airflow.sdk import Variable

    threshold = float(Variable.get(THRESHOLD_VARIABLE, default=DEFAULT_THRESHOLD_MINUTES))
    sustain = float(Variable.get(SUSTAIN_VARIABLE, default=DEFAULT_SUSTAIN_MINUTES))
    if threshold <= 0 or sustain < 0:
        raise ValueError(f"{THRESHOLD_VARIABLE} must be > 0 and {SUSTAIN_VARIABLE} >= 0 (minutes)")
    return timedelta(minutes=threshold), timedelta(minutes=sustain)


# ---- measuring ---------------------------------------------------------------------------------------


def _iterator(kinesis, stream: str, shard_id: str, after: str | None) -> str:
    """Right after the checkpoint, or from the shard's start when there is none or its record has
    left the stream (everything there is unread then)."""
    from botocore.exceptions import ClientError

    if after:
        try:
            return reader.shard_iterator(kinesis, stream, shard_id, after)
        except ClientError:
            pass
    return reader.shard_iterator(kinesis, stream, shard_id, None)


def oldest_unread_age(kinesis, iterator: str | None, now: datetime) -> float:
    """Seconds since the first record at `iterator` reached the stream; 0 when there is none."""
    behind_ms = 0
    for _ in range(EMPTY_READS):
        if iterator is None:
            return 0.0
        page = kinesis.get_records(ShardIterator=iterator, Limit=1)
        if page["Records"]:
            arrived = page["Records"][0]["ApproximateArrivalTimestamp"]
            return max(0.0, (now - arrived).total_seconds())
        behind_ms = int(page.get("MillisBehindLatest") or 0)
        if behind_ms == 0:
            return 0.0
        iterator = page.get("NextShardIterator")
    return behind_ms / 1000  # AWS can return empty pages over a gap: its own estimate then


def shard_lags(kinesis, stream: str, checkpoints: dict[str, tuple[str | None, bool]], now: datetime) -> dict:
    """Seconds behind per listed shard (see the module's docstring)."""
    lags = {}
    for shard in reader.list_shards(kinesis, stream):
        shard_id = shard.shard_id
        sequence_number, drained = checkpoints.get(shard_id, (None, False))
        if drained:
            lags[shard_id] = 0.0
            continue
        iterator = _iterator(kinesis, stream, shard_id, sequence_number)
        lags[shard_id] = round(oldest_unread_age(kinesis, iterator, now), 1)
    return lags


# ---- deciding ------------------------------------------------------------------------------------------


def _trailing_above(samples: list[Sample]) -> list[Sample]:
    episode: list[Sample] = []
    for sample in reversed(samples):
        if not sample.above:
            break
        episode.append(sample)
    return episode[::-1]


def decide(history: list[Sample], current: Sample, sustain: timedelta) -> str | None:
    """RAISE when the lag has been above the threshold in every sample since one at least `sustain`
    before `current`, and no sample of this episode raised the alert yet; RECOVER when `current` is
    back under it after an episode that raised it; None otherwise. `history`: oldest first."""
    if current.above:
        episode = _trailing_above([*history, current])
        long_enough = current.sampled_at - episode[0].sampled_at >= sustain
        return RAISE if long_enough and not any(s.alerted for s in episode) else None
    return RECOVER if any(s.alerted for s in _trailing_above(history)) else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes"


def alert_text(
    decision: str, stream: str, current: Sample, shards: dict, *, threshold: timedelta, since: datetime
) -> tuple[str, str]:
    worst = max(shards, key=shards.get) if shards else "-"
    if decision == RAISE:
        return (
            f"{alerting.SUBJECT_PREFIX}ingestion of {stream} is {_minutes(current.lag_seconds)} behind",
            f"Ingestion of the stream {stream} is {_minutes(current.lag_seconds)} behind its tip (worst shard "
            f"{worst}), above the {_minutes(threshold.total_seconds())} threshold since {since.isoformat()}.\n"
            f"Per shard (seconds): {json.dumps(shards, sort_keys=True)}\n"
            "What to do: check dialog_event_ingest in the Airflow UI (failing or not running?) and the "
            "Drill Progress page's lag chart.",
        )
    return (
        f"{alerting.SUBJECT_PREFIX}ingestion of {stream} caught up",
        f"Ingestion of the stream {stream} is back under the {_minutes(threshold.total_seconds())} threshold: "
        f"{_minutes(current.lag_seconds)} behind now.",
    )


def sample_lag(engine: Engine, kinesis, stream: str, *, now: datetime, threshold: timedelta, sustain: timedelta):
    """Measure, alert if the decision says so, record the sample; a summary for the task's return."""
    with engine.connect() as conn:
        rows = run(conn, "maintenance/lag_checkpoints.sql", {"stream": stream}).all()
        history = [
            Sample(*row)
            for row in run(conn, "maintenance/recent_lag_samples.sql", {"stream": stream, "since": now - MEMORY})
            if row[0] < now
        ]
    shards = shard_lags(kinesis, stream, {r[0]: (r[1], bool(r[2])) for r in rows}, now)
    lag = max(shards.values(), default=0.0)
    current = Sample(now, lag, lag > threshold.total_seconds())
    decision = decide(history, current, sustain)
    if decision:
        since = (_trailing_above([*history, current]) or [current])[0].sampled_at
        alerting.notify(*alert_text(decision, stream, current, shards, threshold=threshold, since=since))
    params = {
        "stream": stream,
        "sampled_at": now,
        "lag_seconds": lag,
        "shards": json.dumps(shards, sort_keys=True),
        "threshold_seconds": threshold.total_seconds(),
        "above": current.above,
        "alerted": decision == RAISE,
    }
    with engine.begin() as conn:
        run(conn, "maintenance/record_lag_sample.sql", params)
    log.info("ingestion lag of %s: %.1f s (threshold %s), alert: %s", stream, lag, threshold, decision or "none")
    return {
        "stream": stream,
        "sampled_at": now.isoformat(),
        "lag_seconds": lag,
        "shards": shards,
        "above_threshold": current.above,
        "alert": decision or "none",
    }
