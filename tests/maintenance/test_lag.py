"""Ingestion lag: measured from the stream (moto) and the committed checkpoints, the sustained-lag
alert and its recovery message read back from SNS, and drill_progress_monitor end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import report_dataset as dataset
from airflow_support import return_value, run_state
from maintenance_support import alert_topic, rows

from drill_progress.maintenance import lag
from drill_progress.maintenance.lag import RAISE, RECOVER, Sample
from drill_progress.setup.aws_resources import ensure_stream

STREAM = "dialog-events"
FIVE = timedelta(minutes=5)
T = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _samples(*lags_and_alerts, threshold=300, start=T, step=FIVE):
    return [
        Sample(start + i * step, value, value > threshold, alerted)
        for i, (value, alerted) in enumerate(lags_and_alerts)
    ]


# ---------------------------------------------------------------------------- the decision


def test_alert_only_when_above_in_every_sample_for_the_sustain_time():
    now = T + 2 * FIVE
    above = Sample(now, 900, True)
    assert lag.decide([], above, FIVE) is None  # just started: not sustained yet
    assert lag.decide(_samples((20, False), (900, False)), above, FIVE) == RAISE  # above at 5 and 10 min
    assert lag.decide(_samples((900, False), (20, False)), above, FIVE) is None  # broken by a good sample
    assert lag.decide(_samples((900, False), (900, True)), above, FIVE) is None  # raised once per episode
    assert lag.decide(_samples((900, False), (900, False)), above, 3 * FIVE) is None  # sustain 15 min: 10 so far
    assert lag.decide(_samples((900, False), (900, False)), above, timedelta(0)) == RAISE
    assert lag.decide([], Sample(now, 900, True), timedelta(0)) == RAISE  # sustain 0: the first sample


def test_recovery_message_only_after_an_episode_that_alerted():
    now = T + 3 * FIVE
    below = Sample(now, 10, False)
    assert lag.decide(_samples((900, False), (900, True), (900, False)), below, FIVE) == RECOVER
    assert lag.decide(_samples((900, False), (900, False)), below, FIVE) is None  # never alerted
    assert lag.decide(_samples((900, True), (10, False)), below, FIVE) is None  # recovered already
    assert lag.decide([], below, FIVE) is None


# ---------------------------------------------------------------------------- measuring on the stream


def _put(kinesis, n: int, key: str) -> list[str]:
    return [
        kinesis.put_record(StreamName=STREAM, Data=json.dumps({"n": i}).encode(), PartitionKey=key)["SequenceNumber"]
        for i in range(n)
    ]


def _shard_of(kinesis, key: str) -> str:
    return kinesis.put_record(StreamName=STREAM, Data=b"{}", PartitionKey=key)["ShardId"]


def test_lag_is_the_age_of_the_oldest_unapplied_record_per_shard(aws):
    ensure_stream(aws.kinesis, STREAM, 1)
    shard = aws.kinesis.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
    assert lag.shard_lags(aws.kinesis, STREAM, {}, datetime.now(UTC)) == {shard: 0.0}  # empty stream
    sequence_numbers = _put(aws.kinesis, 3, "k")
    later = datetime.now(UTC) + timedelta(minutes=10)  # as seen ten minutes from now
    never_read = lag.shard_lags(aws.kinesis, STREAM, {}, later)[shard]
    assert 595 <= never_read <= 610
    behind = lag.shard_lags(aws.kinesis, STREAM, {shard: (sequence_numbers[0], False)}, later)[shard]
    assert 595 <= behind <= never_read  # the second record is the oldest unapplied one
    assert lag.shard_lags(aws.kinesis, STREAM, {shard: (sequence_numbers[-1], False)}, later) == {shard: 0.0}
    assert lag.shard_lags(aws.kinesis, STREAM, {shard: (None, True)}, later) == {shard: 0.0}  # drained


def test_sustained_lag_alerts_once_then_reports_recovery(airflow_env, moto_server, monkeypatch):
    aws, db = airflow_env["aws"], airflow_env["db"]
    topic = alert_topic(moto_server)
    monkeypatch.setenv("AIRFLOW_VAR_ALERT_TOPIC_ARN", topic.arn)
    ensure_stream(aws.kinesis, STREAM, 1)
    sequence_numbers = _put(aws.kinesis, 2, "k")
    start = datetime.now(UTC)
    threshold, sustain = timedelta(minutes=5), timedelta(minutes=5)

    def sample(minutes: float) -> dict:
        return lag.sample_lag(
            db.engine, aws.kinesis, STREAM, now=start + timedelta(minutes=minutes), threshold=threshold, sustain=sustain
        )

    assert sample(3)["alert"] == "none"  # 3 minutes behind: under the threshold
    first = sample(6)
    assert (first["above_threshold"], first["alert"]) == (True, "none")  # above, not for 5 minutes yet
    assert topic.received() == []
    raised = sample(11)
    assert raised["alert"] == RAISE
    assert sample(16)["alert"] == "none"  # still behind: no second alert
    shard = raised["shards"] and next(iter(raised["shards"]))
    with db.engine.begin() as conn:  # ingestion caught up: its checkpoint covers the last record
        conn.exec_driver_sql(
            "INSERT INTO stream_checkpoints (stream, shard_id, sequence_number) VALUES (%(s)s, %(sh)s, %(n)s)",
            {"s": STREAM, "sh": shard, "n": sequence_numbers[-1]},
        )
    assert sample(21)["alert"] == RECOVER
    assert sample(26)["alert"] == "none"

    received = topic.received()
    assert [m["Subject"] for m in received] == [
        f"Drill Progress: ingestion of {STREAM} is 11.0 minutes behind",
        f"Drill Progress: ingestion of {STREAM} caught up",
    ]
    assert (
        f"above the 5.0 minutes threshold since {(start + timedelta(minutes=6)).isoformat()}" in received[0]["Message"]
    )
    assert "back under the 5.0 minutes threshold: 0.0 minutes behind now" in received[1]["Message"]
    history = rows(
        db.engine,
        "SELECT round(lag_seconds / 60), threshold_seconds, above, alerted FROM ingestion_lag_samples "
        "WHERE stream = %(s)s ORDER BY sampled_at",
        {"s": STREAM},
    )
    assert history == [
        (3, 300.0, False, False),
        (6, 300.0, True, False),
        (11, 300.0, True, True),
        (16, 300.0, True, False),
        (0, 300.0, False, False),
        (0, 300.0, False, False),
    ]


@pytest.mark.parametrize(("threshold", "sustain"), [("0", "5"), ("5", "-1")])
def test_lag_settings_must_make_sense(monkeypatch, threshold, sustain):
    monkeypatch.setenv("AIRFLOW_VAR_INGESTION_LAG_ALERT_MINUTES", threshold)
    monkeypatch.setenv("AIRFLOW_VAR_INGESTION_LAG_ALERT_SUSTAIN_MINUTES", sustain)
    with pytest.raises(ValueError, match="must be > 0"):
        lag.settings()


# ---------------------------------------------------------------------------- the monitor DAG


def test_monitor_dag_samples_the_lag_and_refreshes_today(run_dag, airflow_env):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, STREAM, 2)
    dataset.load(db.engine)  # the report tests' hand-built aggregate: employers 7, 8 and none
    run = run_dag("drill_progress_monitor")
    assert run_state(run) == "success"
    sampled = return_value(run, "check_ingestion_lag")
    assert sampled["stream"] == STREAM and sampled["lag_seconds"] == 0.0 and sampled["alert"] == "none"
    assert len(sampled["shards"]) == 2
    assert rows(db.engine, "SELECT count(*), max(lag_seconds) FROM ingestion_lag_samples") == [(1, 0.0)]

    today = datetime.now(UTC).date()
    written = rows(
        db.engine,
        "SELECT employer_id, drill_slug, users_enrolled FROM drill_progress_daily WHERE report_date = %(d)s "
        "ORDER BY 1, 2",
        {"d": today},
    )
    assert [(e, s) for e, s, _ in written] == [(e, s) for e in ("7", "8", "unknown") for s in dataset.CATALOG]
    assert return_value(run, "today_so_far")["report_date"] == today.isoformat()
