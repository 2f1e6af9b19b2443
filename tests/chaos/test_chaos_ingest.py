"""Chaos scenarios 1-5: the ingestion run under SIGKILL, a PostgreSQL restart, an unreachable and
throttling AWS emulator, malformed and re-delivered records. Each compares the final state with
the clean run's (checksum over users, phone_numbers, drill_statuses, drill_instances) and audits
the command stream by idempotency key.

Sizes: CHAOS_EVENTS (default 1500; `make chaos` with CHAOS_EVENTS=50000), CHAOS_KILLS (5),
CHAOS_OUTAGE_SECONDS (5; 30 at scale), CHAOS_MICRO_BATCH (100), CHAOS_SEED (8).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from chaos_support import EVENTS, KILLS, MICRO_BATCH, OUTAGE_SECONDS, SEED, ingest_argv, new_streams

from devtools import aggregate, chaos
from devtools.services import PostgresServer, free_port
from drill_progress.db import make_engine
from drill_progress.setup import migrations

pytestmark = pytest.mark.chaos

PUT_CHUNK = 500  # commands.MAX_RECORDS_PER_PUT: the most one lost PutRecords answer can resend
KILL_MICRO_BATCH = 20  # many commits per run, for kills to land in


def _say(scenario: str, **figures) -> None:
    print(f"\n[{scenario}] " + json.dumps(figures, default=str))


def _table_rows(checksum: dict) -> dict:
    return {t: v["rows"] for t, v in checksum.items() if t != "all"}


def _assert_same_state(engine, clean) -> dict:
    got = aggregate.aggregate_checksum(engine)
    assert _table_rows(got) == _table_rows(clean.checksum)
    assert got == clean.checksum, "final state differs from the clean run's"
    return got


def _assert_history_complete(engine, records) -> dict:
    """Every record whose effects are committed is in the event history (they are all committed
    once the runs caught up), a duplicate is harmless, and a rebuild of every user from it finds
    nothing to change: the history holds exactly what ingestion applied."""
    from drill_progress import rebuild

    with engine.connect() as conn:
        kept = [bytes(r[0]) for r in conn.exec_driver_sql("SELECT raw_data FROM event_history").all()]
    missing = {r.data for r in records} - set(kept)
    assert not missing, f"{len(missing)} records applied but missing from the event history"
    check = rebuild.rebuild(engine, all_users=True, dry_run=True)
    assert (check.changed, check.incomplete_history, check.no_history) == (0, 0, 0), check.as_dict()
    return {"history_rows": len(kept), "history_duplicates": len(kept) - len(set(kept)), "rebuilt_equal": True}


def _sum(report, key: str) -> int:
    return sum(int((a.result or {}).get(key) or 0) for a in report.attempts)


# --------------------------------------------------------------------------- 1. SIGKILL at random points


def test_ingest_worker_killed_at_random_points(make_db, kinesis, moto_server, traffic, clean_run):
    """Each attempt is SIGKILLed a few milliseconds after one of its first micro-batch commits (shard
    consumers running concurrently, as the DAG's shard tasks): every planned kill lands inside a run.
    Small micro-batches give the runs enough commits to be killed in."""
    db = make_db()
    events, commands = new_streams(kinesis, "kill")
    chaos.put_records(kinesis, events, traffic.records)
    rng = random.Random(SEED)
    plan = [chaos.KillAt("COMMIT ingest-", rng.randint(1, 3), rng.uniform(0.0, 0.05)) for _ in range(KILLS)]
    report = chaos.drive(
        ingest_argv(db.url, moto_server.endpoint_url, events, commands, micro_batch=KILL_MICRO_BATCH),
        done=chaos.ingest_caught_up,
        kill_plan=plan,
    )
    got = _assert_same_state(db.engine, clean_run)
    history = _assert_history_complete(db.engine, traffic.records)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    _say(
        "1 sigkill",
        injected={
            "planned": KILLS,
            "sigkills": report.kills,
            "kill_times_s": report.summary()["kill_times_s"],
            "micro_batch": KILL_MICRO_BATCH,
        },
        attempts=len(report.attempts),
        failed_attempts=report.failures,
        events=traffic.events,
        records=len(traffic.records),
        verified={
            "checksum_equal": got["all"][:16],
            "unconfirmed_puts": report.unconfirmed_puts(),
            **history,
            **audit.as_dict(),
        },
    )
    assert report.kills == KILLS, "every planned kill lands inside a run"
    assert not audit.missing and not audit.unexpected and not audit.payload_mismatch
    # The only duplicate the design allows: killed after Kinesis accepted a PutRecords call and before
    # its published_at committed: exactly those records may be sent again, same key, same bytes.
    assert audit.duplicates <= report.unconfirmed_puts()
    assert audit.duplicates_identical


def test_continuous_consumers_killed_while_traffic_arrives(make_db, kinesis, moto_server, traffic, clean_run):
    """The continuous mode (the DAG's scheduled runs): shard consumers reading the stream for a while,
    publishing each micro-batch's commands as it commits, while the producer is still putting half of
    the traffic; two runs SIGKILLed after a micro-batch commit; then the runs that follow catch up."""
    db = make_db()
    events, commands = new_streams(kinesis, "continuous")
    half = len(traffic.records) // 2
    chaos.put_records(kinesis, events, traffic.records[:half])
    producer = threading.Timer(1.0, chaos.put_records, args=(kinesis, events, traffic.records[half:]))
    producer.start()
    rng = random.Random(SEED + 7)
    argv = ingest_argv(db.url, moto_server.endpoint_url, events, commands, micro_batch=KILL_MICRO_BATCH)
    killed = [
        chaos.run_worker(
            [*argv, "--continuous", "30"],
            kill_after=chaos.KillAt("COMMIT ingest-", rng.randint(2, 6), rng.uniform(0.0, 0.05)),
        )
        for _ in range(2)
    ]
    producer.join()
    report = chaos.drive(argv, done=chaos.ingest_caught_up)
    got = _assert_same_state(db.engine, clean_run)
    history = _assert_history_complete(db.engine, traffic.records)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    unconfirmed = sum(a.unconfirmed_puts() for a in killed) + report.unconfirmed_puts()
    _say(
        "1b continuous + sigkill",
        injected={
            "sigkills": sum(a.outcome == "killed" for a in killed),
            "killed_after_s": [round(a.killed_after or 0, 3) for a in killed],
        },
        attempts_after=len(report.attempts),
        verified={"checksum_equal": got["all"][:16], "unconfirmed_puts": unconfirmed, **history, **audit.as_dict()},
    )
    assert [a.outcome for a in killed] == ["killed", "killed"]
    assert not audit.missing and not audit.unexpected and not audit.payload_mismatch
    assert audit.duplicates <= unconfirmed
    assert audit.duplicates_identical


def test_old_consumer_killed_during_the_handover(make_db, kinesis, moto_server, traffic, clean_run):
    """Issue 24, the hand-over between runs: run 1's continuous consumers read the stream while
    traffic arrives; run 2's start and wait for the shards' leases; run 1 is SIGKILLed within 50 ms of
    learning that run 2 waits (its last micro-batch in flight, committed, or its lease released).
    Run 2 goes on from the checkpoints (a lease its dead holder kept expires first), then the runs
    that follow catch up: nothing lost, nothing applied twice, nothing sent twice beyond the
    unconfirmed window."""
    db = make_db()
    events, commands = new_streams(kinesis, "handover")
    half = len(traffic.records) // 2
    chaos.put_records(kinesis, events, traffic.records[:half])
    rng = random.Random(SEED + 24)
    argv = ingest_argv(db.url, moto_server.endpoint_url, events, commands, micro_batch=KILL_MICRO_BATCH)
    ready, old = threading.Event(), {}

    def run_old() -> None:
        kill = chaos.KillAt("WAITER", 1, rng.uniform(0.0, 0.05))
        old["attempt"] = chaos.run_worker([*argv, "--continuous", "60"], kill_after=kill, on_ready=ready.set)

    old_thread = threading.Thread(target=run_old)
    old_thread.start()
    assert ready.wait(60)
    # the second half over about 8 s: still arriving when run 2 comes (its worker starts in ~2 s)
    rate = (len(traffic.records) - half) / 8
    producer = threading.Thread(target=chaos.put_records_paced, args=(kinesis, events, traffic.records[half:], rate))
    producer.start()
    time.sleep(1.5)  # run 1 is consuming, traffic arriving
    new = chaos.run_worker([*argv, "--continuous", "25"])
    old_thread.join()
    producer.join()
    report = chaos.drive(argv, done=chaos.ingest_caught_up)
    got = _assert_same_state(db.engine, clean_run)
    history = _assert_history_complete(db.engine, traffic.records)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    unconfirmed = old["attempt"].unconfirmed_puts() + new.unconfirmed_puts() + report.unconfirmed_puts()
    _say(
        "1c hand-over + sigkill",
        injected={"sigkills": 1, "killed_after_s": round(old["attempt"].killed_after or 0, 3)},
        run_2=new.result and {k: new.result.get(k) for k in ("records_read", "batches_applied")},
        attempts_after=len(report.attempts),
        verified={"checksum_equal": got["all"][:16], "unconfirmed_puts": unconfirmed, **history, **audit.as_dict()},
    )
    assert old["attempt"].outcome == "killed" and new.outcome == "ok", new.stderr_tail
    assert new.result["records_read"] > 0  # run 2 took over and read
    assert not audit.missing and not audit.unexpected and not audit.payload_mismatch
    assert audit.duplicates <= unconfirmed
    assert audit.duplicates_identical


# --------------------------------------------------------------------------- 2. PostgreSQL restarted


@pytest.fixture
def own_pg():
    """A PostgreSQL server of its own, so restarting it disturbs no other test. Durable commits, as
    in production (fsync and synchronous_commit on, the defaults): the pipeline's premise is that a
    commit PostgreSQL acknowledged survives a crash (a micro-batch's commit is its checkpoint's).
    With synchronous_commit off, a crash loses acknowledged commits, and a consumer that reconnects
    and goes on skips their records: measured, 7 drill instances missing of 219."""
    base = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
    base.chmod(0o755)
    settings = {"fsync": "on", "synchronous_commit": "on"}
    server = PostgresServer(base / "data", free_port())
    server.start(settings)
    server.settings = settings
    yield server
    server.stop(mode="immediate")
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_postgres_restarted_in_the_middle_of_a_run(own_pg, kinesis, moto_server, traffic, clean_run):
    """PostgreSQL crashes (stop -m immediate) right after the first run's second micro-batch commit,
    inside that run, and comes back: the retries reach the clean run's state, nothing sent twice
    beyond what was accepted by Kinesis and unconfirmed when it crashed."""
    own_pg.create_database("drill")
    url = own_pg.uri("drill")
    engine = make_engine(url)
    migrations.apply_migrations(engine)
    events, commands = new_streams(kinesis, "pgrestart")
    chaos.put_records(kinesis, events, traffic.records)
    restarts: list[float] = []

    def restart() -> None:
        restarts.append(time.monotonic())
        own_pg.stop(mode="immediate")  # like a crash: no checkpoint, in-flight transactions lost
        own_pg.start(own_pg.settings)

    commits = itertools.count(1)

    def on_marker(attempt: int, line: str) -> None:
        if attempt == 1 and line.startswith("COMMIT ingest-") and next(commits) == 2:
            threading.Thread(target=restart).start()

    report = chaos.drive(
        ingest_argv(url, moto_server.endpoint_url, events, commands, micro_batch=KILL_MICRO_BATCH),
        done=chaos.ingest_caught_up,
        on_marker=on_marker,
        retry_delay=2.0,
    )
    got = _assert_same_state(engine, clean_run)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    engine.dispose()
    first = report.attempts[0]
    _say(
        "2 postgres restart",
        injected={
            "restarts": len(restarts),
            "mode": "pg_ctl stop -m immediate, then start",
            "after_s": round(restarts[0] - first.started_at, 3) if restarts else None,
        },
        attempts=len(report.attempts),
        failed_attempts=report.failures,
        first_attempt=first.outcome,
        verified={"checksum_equal": got["all"][:16], "unconfirmed_puts": report.unconfirmed_puts(), **audit.as_dict()},
    )
    assert len(restarts) == 1 and first.started_at < restarts[0] < first.ended_at, "the restart hit the first run"
    assert not audit.missing and not audit.unexpected and not audit.payload_mismatch
    assert audit.duplicates <= report.unconfirmed_puts()
    assert audit.duplicates_identical


# --------------------------------------------------------------------------- 3. emulator unreachable, throttling


@pytest.fixture
def proxy(moto_server):
    proxy = chaos.FaultProxy(moto_server.port, seed=SEED).start()
    yield proxy
    proxy.stop()


def test_aws_unreachable_and_throttling(make_db, kinesis, moto_server, proxy, traffic, clean_run):
    db = make_db()
    events, commands = new_streams(kinesis, "outage")
    chaos.put_records(kinesis, events, traffic.records)  # the producer side is not disturbed
    # 1 call in 10, the first included, is answered HTTP 400 throttling; botocore retries it
    proxy.throttle = {"GetRecords": 10, "PutRecords": 10}
    proxy.put_record_failure = 0.10  # records of a PutRecords call: ErrorCode, commands.publish retries
    outage_at = 0.2

    def on_ready(attempt: int) -> None:
        if attempt == 1:
            threading.Timer(outage_at, proxy.outage, args=(OUTAGE_SECONDS,)).start()

    report = chaos.drive(
        ingest_argv(db.url, proxy.endpoint_url, events, commands),
        done=chaos.ingest_caught_up,
        on_ready=on_ready,
        retry_delay=2.0,
    )
    got = _assert_same_state(db.engine, clean_run)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    _say(
        "3 aws outage + throttling",
        injected={"outage_s": OUTAGE_SECONDS, "outage_at_s": outage_at, **dict(proxy.counts)},
        attempts=len(report.attempts),
        failed_attempts=report.failures,
        seconds=round(report.seconds, 1),
        clean_run_s=round(clean_run.run_seconds, 2),
        verified={"checksum_equal": got["all"][:16], **audit.as_dict()},
    )
    assert proxy.counts["requests_dropped_in_outage"] > 0, "the outage should have hit the run"
    assert proxy.counts["throttled_GetRecords"] > 0, "the first GetRecords call is always throttled"
    assert proxy.counts["throttled_PutRecords"] > 0, "the first PutRecords call is always throttled"
    assert audit.exactly_once, audit.as_dict()


def test_lost_putrecords_answer_is_resent_once_with_the_same_key(
    make_db, kinesis, moto_server, proxy, traffic, clean_run
):
    """A network failure after Kinesis accepted a PutRecords call: botocore retries the call, so its
    records arrive twice. The at-least-once window of the outbox, reached without any kill."""
    db = make_db()
    events, commands = new_streams(kinesis, "lostanswer")
    chaos.put_records(kinesis, events, traffic.records)
    proxy.lose_put_responses = 1
    report = chaos.drive(ingest_argv(db.url, proxy.endpoint_url, events, commands), done=chaos.ingest_caught_up)
    _assert_same_state(db.engine, clean_run)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    lost = proxy.counts["put_records_in_lost_responses"]
    _say(
        "3b lost PutRecords answer",
        injected={"responses_lost": proxy.counts["put_responses_lost"], "records_in_them": lost},
        attempts=len(report.attempts),
        verified=audit.as_dict(),
    )
    assert proxy.counts["put_responses_lost"] == 1
    assert not audit.missing and not audit.unexpected and not audit.payload_mismatch
    assert audit.duplicates == lost <= PUT_CHUNK
    assert audit.duplicates_identical


# --------------------------------------------------------------------------- 4. malformed records


def test_one_percent_malformed_records(make_db, kinesis, moto_server):
    mixed = chaos.make_records(EVENTS, seed=SEED + 4, malformed_rate=0.01)
    good = [r for r in mixed.records if not r.malformed]
    bad = [r for r in mixed.records if r.malformed]
    results = {}
    for label, records in (("mixed", mixed.records), ("good_only", good)):
        db = make_db()
        events, commands = new_streams(kinesis, f"malformed-{label}")
        chaos.put_records(kinesis, events, records)
        report = chaos.drive(
            ingest_argv(db.url, moto_server.endpoint_url, events, commands), done=chaos.ingest_caught_up
        )
        results[label] = {
            "checksum": aggregate.aggregate_checksum(db.engine),
            "applied": _sum(report, "batches_applied"),
            "rejected": _sum(report, "records_rejected"),
            "rejected_rows": _rows(db.engine, "SELECT raw_data, reason FROM rejected_records"),
            "commands": chaos.read_commands(kinesis, commands),
        }
    mixed_r, good_r = results["mixed"], results["good_only"]
    kinds: dict[str, int] = {}
    for r in bad:
        kinds[r.malformed] = kinds.get(r.malformed, 0) + 1
    _say(
        "4 malformed",
        injected={"records": len(mixed.records), "malformed": len(bad), "by_kind": kinds},
        verified={
            "applied": mixed_r["applied"],
            "rejected_rows": len(mixed_r["rejected_rows"]),
            "state_equals_good_only_run": mixed_r["checksum"] == good_r["checksum"],
            "commands": len(mixed_r["commands"]),
        },
    )
    assert len(bad) >= 1
    assert mixed_r["applied"] == len(good) and good_r["rejected"] == 0
    assert sorted(bytes(raw) for raw, _ in mixed_r["rejected_rows"]) == sorted(r.data for r in bad)
    assert all(reason for _, reason in mixed_r["rejected_rows"])
    assert mixed_r["checksum"] == good_r["checksum"]
    audit = chaos.audit_commands(mixed_r["commands"], chaos.commands_by_key(good_r["commands"]))
    assert audit.exactly_once, audit.as_dict()


def _rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql).all()]


# --------------------------------------------------------------------------- 5. records delivered twice


def test_ten_percent_of_records_delivered_twice(make_db, kinesis, moto_server, traffic, clean_run):
    rng = random.Random(SEED + 5)
    records = list(traffic.records)
    twice = rng.sample(range(len(records)), k=max(1, len(records) // 10))
    # each duplicate lands 0-50 records after the original (a producer retry, a replayed chunk)
    pending: dict[int, list] = {}
    for i in sorted(twice):
        pending.setdefault(min(len(records) - 1, i + rng.randint(0, 50)), []).append(records[i])
    stream_order: list = []
    for i, rec in enumerate(records):
        stream_order.append(rec)
        stream_order += pending.get(i, [])
    db = make_db()
    events, commands = new_streams(kinesis, "twice")
    chaos.put_records(kinesis, events, stream_order)
    report = chaos.drive(ingest_argv(db.url, moto_server.endpoint_url, events, commands), done=chaos.ingest_caught_up)
    got = _assert_same_state(db.engine, clean_run)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    skipped = _sum(report, "duplicates_skipped")
    _say(
        "5 delivered twice",
        injected={
            "records": len(records),
            "duplicated": len(twice),
            "on_stream": len(stream_order),
            "micro_batch": MICRO_BATCH,
        },
        verified={"duplicates_skipped": skipped, "checksum_equal": got["all"][:16], **audit.as_dict()},
    )
    assert len(stream_order) == len(records) + len(twice)
    assert skipped == len(twice)
    assert audit.exactly_once, audit.as_dict()
