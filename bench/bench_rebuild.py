"""Rebuild from the event history: every user of a generated month, and one user through the DAG.

A month of real-shaped traffic for REBUILD_USERS users (default 2,000): each validates, then does a
drill every ~3 days (DRILL_STARTED with the real producer's drill object, prompts answered, failed
and advanced, DRILL_COMPLETED, NEXT_DRILL_REQUESTED, the odd reminder): ~60 batches per user, ~2 a
day, applied by the live apply path (which writes the history). Then:

- `rebuild.all_users.dry_run_records_per_s`: every user compared with their history (nothing written);
- `rebuild.all_users.records_per_s`: every user rebuilt after the aggregate was wiped (every row
  written again), and its events/s; `rebuild.all_users.seconds_at_1m_users_month` extrapolates
  linearly to 1,000,000 users (the rebuild is per user, chunk by chunk: linear in the history);
- `rebuild.one_user_task_seconds`: the `rebuild_users` task of `airflow dags test
  drill_progress_rebuild` for one phone number, from "Task started" to its return value;
  `rebuild.one_user_dag_run_seconds`: that whole DAG run (a fresh process: DAG parsing and
  Airflow's own bookkeeping included).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import bench_dags
from drill_progress import rebuild
from drill_progress.ingest import pipeline
from drill_progress.ingest.pipeline import RawRecord

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "ingest" / "data" / "real-producer"
SEQ_BASE = 49606593837744405372328183282036461982495705134159739085
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _template(name: str) -> dict:
    return json.loads((REAL / f"{name}.json").read_bytes())


def _uuid(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def month_of(user: int) -> list[bytes]:
    """About 60 real-shaped batches of one user over 30 days."""
    phone = f"+1777{user:07d}"
    profile = _template("drill_started")["events"][0]["user_profile"]
    drill = _template("drill_started")["events"][0]["drill"]
    out: list[bytes] = []
    seq = SEQ_BASE + user * 10_000
    moment = T0 + timedelta(minutes=user % 600)

    def batch(*events: dict) -> None:
        nonlocal seq, moment
        seq += 7
        moment += timedelta(minutes=3)
        stamped = []
        for n, (kind, extra) in enumerate(events):
            stamped.append(
                {
                    "created_time": (moment + timedelta(microseconds=n)).isoformat(),
                    "user_profile": profile,
                    "event_id": _uuid(phone, seq, n),
                    "schema_version": 1,
                    "phone_number": phone,
                    "event_type": kind,
                    **extra,
                }
            )
        doc = {
            "batch_id": _uuid("batch", phone, seq),
            "seq": str(seq),
            "phone_number": phone,
            "created_time": stamped[-1]["created_time"],
            "events": stamped,
        }
        out.append(json.dumps(doc).encode())

    batch(("USER_VALIDATED", {"code_validation_payload": {"valid": True, "is_demo": False, "account_info": {}}}))
    slugs = ["01-sample-drill", "02-sample-drill", "03-sample-drill"]
    for day in range(0, 30, 3):
        moment = T0 + timedelta(days=day, minutes=user % 600)
        instance = _uuid("instance", phone, day)
        prompts = drill["prompts"]
        batch(
            (
                "DRILL_STARTED",
                {
                    "drill": {**drill, "slug": slugs[(day // 3) % 3]},
                    "drill_instance_id": instance,
                    "first_prompt": prompts[0],
                },
            )
        )
        for prompt in prompts[1:]:
            batch(
                ("COMPLETED_PROMPT", {"prompt": prompt, "response": "b", "drill_instance_id": instance}),
                ("ADVANCED_TO_NEXT_PROMPT", {"prompt": prompt, "drill_instance_id": instance}),
            )
        batch(("DRILL_COMPLETED", {"drill_instance_id": instance}), ("NEXT_DRILL_REQUESTED", {}))
    return out


def _apply(engine, users: int) -> tuple[int, int]:
    records, events, position = [], 0, 0
    for user in range(users):
        for data in month_of(user):
            position += 1
            records.append(RawRecord(str(position), f"+1777{user:07d}", data))
        if len(records) >= 5000 or user == users - 1:
            for start in range(0, len(records), 500):
                stats = pipeline.apply_micro_batch(
                    engine, "dialog-events", "shardId-000000000000", records[start : start + 500]
                )
                events += stats.batches_applied
            records = []
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT count(*) FROM event_history").scalar_one()
    return rows, events


def _events_in_history(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT sum(jsonb_array_length(convert_from(raw_data, 'UTF8')::jsonb -> 'events')) FROM event_history"
        ).scalar_one()


def _one_user_through_the_dag(url: str, phone: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="drill-bench-rebuild-") as home:
        # bench_dags's Airflow home, at INFO: the task's start and return lines are what is timed
        env = bench_dags._env(home) | {"AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO", "AIRFLOW_CONN_DRILL_PROGRESS_DB": url}
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=env, cwd=ROOT, capture_output=True, check=True, timeout=600)
        conf = json.dumps({"phone_numbers": [phone], "dry_run": False})
        proc = subprocess.run(
            [airflow, "dags", "test", "drill_progress_rebuild", "-c", conf],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        out = proc.stdout + proc.stderr
        duration = re.findall(r"run_duration=([0-9.]+)", out)
        stamps = [
            datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            for m in re.finditer(r"^(\S+Z) \[info\s*\] (?:Task started|Done\. Returned value was)", out, re.M)
        ]
        if not duration or len(stamps) != 2:
            raise RuntimeError("no run_duration or task start/end in the output of airflow dags test")
        return float(duration[-1]), (stamps[1] - stamps[0]).total_seconds()


def run(ctx) -> list[dict]:
    users = ctx.size("REBUILD_USERS", 2000)
    url, engine = ctx.new_database("rebuild")
    started = time.perf_counter()
    history_rows, _ = _apply(engine, users)
    apply_s = time.perf_counter() - started
    events = _events_in_history(engine)

    started = time.perf_counter()
    dry = rebuild.rebuild(engine, all_users=True, dry_run=True)
    dry_s = time.perf_counter() - started
    assert dry.changed == 0, dry.as_dict()

    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM drill_instances")
        conn.exec_driver_sql("UPDATE drill_statuses SET started_time = NULL, completed_time = NULL")
        conn.exec_driver_sql("UPDATE users SET seq = 0")
    started = time.perf_counter()
    done = rebuild.rebuild(engine, all_users=True, dry_run=False)
    rebuild_s = time.perf_counter() - started
    assert done.changed == users, done.as_dict()

    dag_s, task_s = _one_user_through_the_dag(url, "+17770000001")
    engine.dispose()
    per_user = history_rows / users
    return [
        {
            "metric": "rebuild.history.records_per_user_month",
            "value": round(per_user, 1),
            "unit": "records",
            "users": users,
            "records": history_rows,
            "events": events,
            "apply_seconds": round(apply_s, 1),
        },
        {
            "metric": "rebuild.all_users.dry_run_records_per_s",
            "value": round(history_rows / dry_s),
            "unit": "records/s",
            "seconds": round(dry_s, 2),
        },
        {
            "metric": "rebuild.all_users.records_per_s",
            "value": round(history_rows / rebuild_s),
            "unit": "records/s",
            "seconds": round(rebuild_s, 2),
            "users_rebuilt": done.changed,
        },
        {"metric": "rebuild.all_users.events_per_s", "value": round(events / rebuild_s), "unit": "events/s"},
        {
            "metric": "rebuild.all_users.seconds_at_1m_users_month",
            "value": round(1_000_000 * per_user / (history_rows / rebuild_s)),
            "unit": "s",
            "note": "linear extrapolation of the rebuild of every user from a month of history",
        },
        {
            "metric": "rebuild.one_user_task_seconds",
            "value": round(task_s, 2),
            "unit": "s",
            "note": "the rebuild_users task of drill_progress_rebuild for one phone number: its run, from "
            "'Task started' to its return value (dags test's own start-up of its in-process API excluded)",
        },
        {
            "metric": "rebuild.one_user_dag_run_seconds",
            "value": round(dag_s, 2),
            "unit": "s",
            "note": "airflow dags test drill_progress_rebuild: the whole run in a fresh process",
        },
    ]
