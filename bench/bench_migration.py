"""Migration 0012 (users.seq numeric(30,0) -> numeric) at 1,000,000 users: how long it takes,
whether it rewrites the table, and how long it blocks ingestion.

A database is migrated up to 0011 only (copies of migrations 0001..0011 in a temporary folder,
passed to `apply_migrations` as its `directory`), filled with MIGRATION_BENCH_USERS users (default
1,000,000) by one set-based INSERT ... SELECT generate_series, each with a profile shaped like the
real producer's (devtools.simulator.profile: seven self ratings, employer and unit names) and a
30-digit seq (the most numeric(30,0) holds), then CHECKPOINTed and analysed. Then 0012 is applied
the way the setup DAG applies it (`apply_migrations` with the product's folder), while another
connection updates one user after another as ingestion does (`UPDATE users ... WHERE user_id`),
every ~0.5 ms, and records how long each update took.

Figures: `migration.0012.seconds_at_1m_users` (the wall time of applying it: its transaction,
lock, catalog change and commit), `migration.0012.rewrote_table` (1 when
pg_relation_filenode('users') changed: a rewrite), `migration.0012.ingest_blocked_ms` (the longest
of those updates while the migration ran: what ingestion waited for its lock),
`migration.0012.lock_held_ms` (the same ALTER run again by hand on a copy of the column type,
timed from the statement to the commit, i.e. how long its ACCESS EXCLUSIVE lock is held).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench.urls import libpq_uri
from devtools import simulator as sim
from drill_progress.db import make_engine
from drill_progress.setup import migrations

VERSION = 12
PROBE_INTERVAL_S = 0.0005

FILL_SQL = """
INSERT INTO users (user_id, seq, profile, last_interacted_time, created_at)
SELECT md5('bench-user-' || i)::uuid,
       %(seq_base)s::numeric + i,
       jsonb_set(%(profile)s::jsonb, '{account_info}',
                 jsonb_build_object('employer_id', 1 + i %% 40, 'employer_name', 'Employer ' || (1 + i %% 40),
                                    'unit_id', (1 + i %% 40) * 100 + i %% 7, 'unit_name', 'Unit ' || (i %% 7))),
       %(t0)s::timestamptz - make_interval(secs => i),
       %(t0)s::timestamptz - make_interval(secs => 2 * i)
FROM generate_series(1, %(users)s) AS i
"""
SEQ_TYPE_SQL = """
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'users'::regclass AND attname = 'seq'
"""


def _until(source: Path, directory: Path, below: int) -> Path:
    """`directory` with copies of the migrations of `source` below version `below`."""
    for m in migrations.discover(source):
        if m.version < below:
            shutil.copy2(m.path, directory / m.path.name)
    return directory


class UpdateProbe:
    """Updates one user after another on its own connection (autocommit, like a micro-batch's
    short transaction), recording (start, seconds) of each, until stopped."""

    def __init__(self, url: str, user_ids: list[str]):
        self.url = url
        self.user_ids = user_ids
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        time.sleep(0.3)  # some samples before the migration starts
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)  # and some after it
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            n = 0
            while not self._stop.is_set():
                user_id = self.user_ids[n % len(self.user_ids)]
                n += 1
                started = time.perf_counter()
                conn.execute("UPDATE users SET last_interacted_time = now() WHERE user_id = %s", (user_id,))
                self.samples.append((started, time.perf_counter() - started))
                time.sleep(PROBE_INTERVAL_S)


def _lock_hold_ms(url: str) -> float:
    """0012's ALTER run by hand on a scratch column of the same type, in one transaction: from the
    statement (the lock is taken) to the commit (the lock is released)."""
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN seq_probe numeric(30,0)")
        conn.commit()
        started = time.perf_counter()
        conn.execute("ALTER TABLE users ALTER COLUMN seq_probe TYPE numeric")
        conn.commit()
        held = time.perf_counter() - started
        conn.execute("ALTER TABLE users DROP COLUMN seq_probe")
        conn.commit()
    return held * 1000


def run(ctx) -> list[dict]:
    return measure(ctx, ctx.size("MIGRATION_BENCH_USERS", 1_000_000))


def measure(ctx, users: int, directory: Path = migrations.MIGRATIONS_DIR) -> list[dict]:
    """The figures for migration VERSION of `directory` (the product's; a test passes another)."""
    url, engine = ctx.new_database("migration", migrated=False)
    engine.dispose()
    engine = make_engine(url, "migrations")
    with tempfile.TemporaryDirectory(prefix="drill-migrations-") as tmp:
        applied = migrations.apply_migrations(engine, directory=_until(directory, Path(tmp), VERSION))
    assert max(applied) == VERSION - 1 and VERSION not in applied, applied
    plain = libpq_uri(url)
    profile = sim.profile(validated=True, account=sim.account_info(1, 1))
    started = time.perf_counter()
    with psycopg.connect(plain) as conn:
        conn.execute(
            FILL_SQL,
            {
                "seq_base": str(10**29),  # 30 digits, numeric(30,0)'s limit
                "profile": json.dumps(profile),
                "t0": "2026-03-02T08:00:00+00:00",
                "users": users,
            },
        )
        conn.commit()
    fill_seconds = time.perf_counter() - started
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE users")
        conn.execute("CHECKPOINT")
        before_type = conn.execute(SEQ_TYPE_SQL).fetchone()[0]
        filenode_before = conn.execute("SELECT pg_relation_filenode('users')").fetchone()[0]
        table_bytes = conn.execute("SELECT pg_table_size('users')").fetchone()[0]
        probe_ids = [r[0] for r in conn.execute("SELECT user_id::text FROM users LIMIT 1000").fetchall()]
    assert before_type == "numeric(30,0)", before_type

    with tempfile.TemporaryDirectory(prefix="drill-migrations-") as tmp, UpdateProbe(plain, probe_ids) as probe:
        upto = _until(directory, Path(tmp), VERSION + 1)  # this one alone: the later ones are not measured
        t_start = time.perf_counter()
        applied = migrations.apply_migrations(engine, directory=upto)
        t_end = time.perf_counter()
    assert applied == [VERSION], applied
    seconds = t_end - t_start
    during = [d for s, d in probe.samples if s <= t_end and s + d >= t_start]
    outside = [d for s, d in probe.samples if s + d < t_start or s > t_end]

    with psycopg.connect(plain, autocommit=True) as conn:
        after_type = conn.execute(SEQ_TYPE_SQL).fetchone()[0]
        filenode_after = conn.execute("SELECT pg_relation_filenode('users')").fetchone()[0]
        # the column now holds the real 56-digit values (and the 129-digit limit) exactly
        big = str(sim.SEQ_PREFIX * 10**25 + 1) + "0" * 73
        conn.execute("UPDATE users SET seq = %s::numeric WHERE user_id = %s", (big, probe_ids[0]))
        stored = conn.execute("SELECT seq::text FROM users WHERE user_id = %s", (probe_ids[0],)).fetchone()[0]
    assert after_type == "numeric", after_type
    assert stored == big and len(big) == 129
    lock_ms = _lock_hold_ms(plain)
    engine.dispose()
    return [
        {
            "metric": "migration.0012.seconds_at_1m_users",
            "value": round(seconds, 3),
            "unit": "s",
            "users": users,
            "table_mib": round(table_bytes / 2**20),
            "fill_seconds": round(fill_seconds, 1),
            "seq_type": f"{before_type} -> {after_type}",
        },
        {
            "metric": "migration.0012.rewrote_table",
            "value": int(filenode_before != filenode_after),
            "unit": "bool",
            "filenode": f"{filenode_before} -> {filenode_after}",
        },
        {
            "metric": "migration.0012.ingest_blocked_ms",
            "value": round(max(during) * 1000, 1) if during else 0.0,
            "unit": "ms",
            "updates_during_migration": len(during),
            "update_p50_ms_otherwise": round(statistics.median(outside) * 1000, 2) if outside else None,
            "note": "longest single-user UPDATE (another connection) overlapping the migration",
        },
        {
            "metric": "migration.0012.lock_held_ms",
            "value": round(lock_ms, 1),
            "unit": "ms",
            "note": "the same ALTER on a scratch numeric(30,0) column: statement to commit",
        },
    ]
