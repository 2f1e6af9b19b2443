"""The drill database's prunes against real PostgreSQL: what goes, what stays, dry runs, batches,
retention 0, locks never waited for."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from maintenance_support import rows

from drill_progress.maintenance import prune

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def _outbox(engine, key: str, created: datetime, published: datetime | None) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, created_at, "
            "published_at) VALUES (%(k)s, 'START_DRILL', '+15550001111', '{\"drill_slug\": \"01-sample-drill\"}', "
            "'test', %(c)s, %(p)s)",
            {"k": key, "c": created, "p": published},
        )


def _rejected(engine, sequence_number: str, rejected: datetime, resolved: bool = False) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason, "
            "rejected_at, resolved_at, resolution) VALUES ('dialog-events', 'shardId-000000000000', %(n)s, "
            "'+15550001111', convert_to('{\"phone_number\": \"+15550001111\"}', 'UTF8'), 'not valid JSON', %(t)s, "
            "%(r)s, %(res)s)",
            {
                "n": sequence_number,
                "t": rejected,
                "r": rejected if resolved else None,
                "res": "reapplied" if resolved else None,
            },
        )


def _keys(engine, table: str, column: str) -> list:
    return [r[0] for r in rows(engine, f"SELECT {column} FROM {table} ORDER BY 1")]


def _prune(engine, outbox=30, rejected=30, dry_run=False, batch=prune.BATCH_ROWS):
    return prune.prune_drill_database(
        engine,
        now=NOW,
        outbox_retention_days=outbox,
        rejected_retention_days=rejected,
        dry_run=dry_run,
        batch=batch,
    )["tables"]


@pytest.fixture
def outbox_rows(drill_db):
    """Published 40 and 31 days ago (go), published 29 days ago and 1 hour ago (stay), and a command
    pending for 40 days (stays: never delivered)."""
    for key, created, published in [
        ("old-1", NOW - 40 * DAY, NOW - 40 * DAY),
        ("old-2", NOW - 40 * DAY, NOW - 31 * DAY),
        ("pending", NOW - 40 * DAY, None),
        ("young", NOW - 29 * DAY, NOW - 29 * DAY),
        ("fresh", NOW - timedelta(hours=1), NOW - timedelta(hours=1)),
    ]:
        _outbox(drill_db.engine, key, created, published)
    return drill_db


def test_outbox_prune_deletes_only_published_rows_older_than_the_retention(outbox_rows):
    result = _prune(outbox_rows.engine, batch=2)["command_outbox"]
    assert _keys(outbox_rows.engine, "command_outbox", "idempotency_key") == ["fresh", "pending", "young"]
    assert result["rows"] == 2 and result["bytes"] > 2 * 100
    assert result["batches"] == 3  # 2 keys a batch, read until past the cutoff
    assert result["cutoff"] == (NOW - 30 * DAY).isoformat()
    # the pending command is still claimable and publishable
    assert rows(
        outbox_rows.engine, "SELECT o.idempotency_key FROM command_outbox_pending p JOIN command_outbox o USING (id)"
    ) == [("pending",)]
    assert _prune(outbox_rows.engine)["command_outbox"]["rows"] == 0  # a second run finds nothing


def test_dry_run_counts_exactly_what_a_run_deletes_and_deletes_nothing(outbox_rows):
    for n, days in enumerate([45, 40, 3]):
        _rejected(outbox_rows.engine, str(n), NOW - days * DAY, resolved=n == 0)
    before = (
        rows(outbox_rows.engine, "SELECT count(*) FROM command_outbox"),
        rows(outbox_rows.engine, "SELECT count(*) FROM rejected_records"),
    )
    dry = _prune(outbox_rows.engine, dry_run=True)
    assert (dry["command_outbox"]["rows"], dry["rejected_records"]["rows"]) == (2, 2)
    after = (
        rows(outbox_rows.engine, "SELECT count(*) FROM command_outbox"),
        rows(outbox_rows.engine, "SELECT count(*) FROM rejected_records"),
    )
    assert after == before
    real = _prune(outbox_rows.engine)
    assert {t: (r["rows"], r["bytes"]) for t, r in real.items() if t in ("command_outbox", "rejected_records")} == {
        t: (r["rows"], r["bytes"]) for t, r in dry.items() if t in ("command_outbox", "rejected_records")
    }


def test_retention_zero_deletes_everything_published_and_every_set_aside_record(outbox_rows):
    _rejected(outbox_rows.engine, "1", NOW - timedelta(seconds=5))
    _rejected(outbox_rows.engine, "2", NOW - 50 * DAY, resolved=True)
    result = _prune(outbox_rows.engine, outbox=0, rejected=0)
    assert _keys(outbox_rows.engine, "command_outbox", "idempotency_key") == ["pending"]
    assert rows(outbox_rows.engine, "SELECT count(*) FROM rejected_records") == [(0,)]
    assert (result["command_outbox"]["rows"], result["rejected_records"]["rows"]) == (4, 2)


def test_rejected_records_prune_by_age_resolved_or_not(drill_db):
    for n, (days, resolved) in enumerate([(60, True), (31, False), (29, False), (0, False)]):
        _rejected(drill_db.engine, str(n), NOW - days * DAY, resolved)
    result = _prune(drill_db.engine)["rejected_records"]
    assert _keys(drill_db.engine, "rejected_records", "sequence_number") == ["2", "3"]
    assert result["rows"] == 2 and result["bytes"] > 0


def test_ids_out_of_time_order_within_the_margin_are_still_pruned(drill_db):
    """Ids are drawn at insert time, created_at at transaction start: a row can follow a newer one.
    The scan reads on until a batch is TIME_ORDER_MARGIN past the cutoff."""
    cutoff = NOW - 30 * DAY
    _outbox(drill_db.engine, "a-newer-first", cutoff + timedelta(minutes=30), cutoff + timedelta(minutes=30))
    _outbox(drill_db.engine, "b-older-second", cutoff - DAY, cutoff - DAY)
    assert _prune(drill_db.engine, batch=1)["command_outbox"]["rows"] == 1
    assert _keys(drill_db.engine, "command_outbox", "idempotency_key") == ["a-newer-first"]


def test_a_row_locked_by_a_running_reapply_is_skipped_not_waited_for(drill_db):
    for n in range(3):
        _rejected(drill_db.engine, str(n), NOW - 40 * DAY)
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with drill_db.engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1 FROM rejected_records WHERE sequence_number = '1' FOR UPDATE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        result = _prune(drill_db.engine)["rejected_records"]
        assert time.monotonic() - started < 5  # far below the 30 s lock_timeout: nothing waited
    finally:
        release.set()
        holder.join()
    assert result["rows"] == 2
    assert _keys(drill_db.engine, "rejected_records", "sequence_number") == ["1"]
    assert _prune(drill_db.engine)["rejected_records"]["rows"] == 1  # the next run takes it


def test_start_drill_guards_go_two_days_after_their_day_whatever_the_retention(drill_db):
    today = NOW.date()
    with drill_db.engine.begin() as conn:
        for days in (0, 1, 2, 3, 10):
            day = today - timedelta(days=days)
            conn.exec_driver_sql(
                "INSERT INTO sent_start_drills (idempotency_key, send_date) VALUES (%(k)s, %(d)s)",
                {"k": f"start-drill:u:01-sample-drill:{day.isoformat()}", "d": day},
            )
    result = _prune(drill_db.engine, outbox=0, rejected=0, batch=2)["sent_start_drills"]
    assert result["rows"] == 2 and result["cutoff"] == (today - 2 * DAY).isoformat()
    assert [r[0] for r in rows(drill_db.engine, "SELECT send_date FROM sent_start_drills ORDER BY 1")] == [
        today - 2 * DAY,
        today - DAY,
        today,
    ]


def test_lag_history_keeps_seven_days(drill_db):
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ingestion_lag_samples (stream, sampled_at, lag_seconds, shards, threshold_seconds, above) "
            "SELECT 'dialog-events', %(now)s - g * interval '1 day' - interval '1 minute', 0, '{}', 300, false "
            "FROM generate_series(0, 9) AS g",
            {"now": NOW},
        )
    assert _prune(drill_db.engine, dry_run=True)["ingestion_lag_samples"]["rows"] == 3
    assert _prune(drill_db.engine)["ingestion_lag_samples"]["rows"] == 3  # 7, 8 and 9 days old
    assert rows(drill_db.engine, "SELECT count(*) FROM ingestion_lag_samples") == [(7,)]


@pytest.mark.parametrize("bad", [-1, "x", None, 1.5, True])
def test_retention_must_be_a_whole_number_of_days(drill_db, bad):
    with pytest.raises(prune.InvalidRetention):
        _prune(drill_db.engine, outbox=bad)
    with pytest.raises(prune.InvalidRetention):
        _prune(drill_db.engine, rejected=bad)
