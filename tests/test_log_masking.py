"""Phone numbers are masked in task logs: real DAG runs (dag.test) whose work touches phone numbers,
then every log line they produced — captured stdout/stderr, Python log records, and any log file
under the Airflow home — is searched for a full phone number. The masked form
('***0001', drill_progress.privacy.mask_phone) may appear; the full number may not.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import seed
from airflow_support import run_state as _state

from drill_progress.privacy import mask_phone
from drill_progress.setup.aws_resources import ensure_stream

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PHONES = ["+15557770001", "+15557770002", "+15557770003"]


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def _leaks(text: str, phones: list[str]) -> list[str]:
    """Full phone numbers in text, with or without the '+' (the masked form does not match)."""
    return [p for p in phones if _digits(p) in re.sub(r"[\s().-]", "", text)]


def _event(kind: str, phone: str, minute: int, **extra) -> dict:
    doc = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{phone}/{minute}")),
        "event_type": kind,
        "phone_number": phone,
        "created_time": (T0 + timedelta(minutes=minute)).isoformat(),
        "schema_version": 1,
        "user_profile": {"validated": True, "name": "Ana"},
    }
    doc.update(extra)
    return doc


def _batch(seq: int, events: list[dict]) -> bytes:
    return json.dumps(
        {
            "batch_id": str(uuid.uuid4()),
            "seq": str(seq),
            "phone_number": events[0]["phone_number"],
            "created_time": events[-1]["created_time"],
            "events": events,
        }
    ).encode()


@pytest.fixture
def captured_logs(capfd, caplog):
    """Everything a DAG run logs: stdout/stderr, log records, and log files under AIRFLOW_HOME."""
    caplog.set_level(logging.INFO)
    home = Path(os.environ["AIRFLOW_HOME"])
    before = {p: p.stat().st_size for p in home.rglob("*.log")} | {
        p: p.stat().st_size for p in home.rglob("*.json") if "logs" in p.parts
    }

    def collect() -> dict[str, str]:
        out, err = capfd.readouterr()
        files = {}
        for path in [*home.rglob("*.log"), *(p for p in home.rglob("*") if "logs" in p.parts and p.is_file())]:
            with open(path, "rb") as fh:
                fh.seek(before.get(path, 0))
                files[str(path)] = fh.read().decode(errors="replace")
        records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
        return {"stdout": out, "stderr": err, "records": records, **files}

    return collect


def test_ingest_run_logs_no_full_phone_number(run_dag, airflow_env, captured_logs):
    aws = airflow_env["aws"]
    ensure_stream(aws.kinesis, "dialog-events", 1)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    instance = str(uuid.uuid4())
    for phone in PHONES:
        aws.kinesis.put_record(
            StreamName="dialog-events", PartitionKey=phone, Data=_batch(1, [_event("USER_VALIDATED", phone, 0)])
        )
    phone = PHONES[0]
    aws.kinesis.put_record(
        StreamName="dialog-events",
        PartitionKey=phone,
        Data=_batch(
            2,
            [
                _event(
                    "DRILL_STARTED",
                    phone,
                    1,
                    drill={"slug": "01-sample-drill", "name": "d", "prompts": []},
                    drill_instance_id=instance,
                    first_prompt={"slug": "q1"},
                )
            ],
        ),
    )
    # bad input naming phone numbers: set aside with a logged reason (must be masked)
    aws.kinesis.put_record(
        StreamName="dialog-events",
        PartitionKey=phone,
        Data=_batch(3, [_event("DRILL_EXPLODED", phone, 2, note=f"call {PHONES[1]}")]),
    )
    aws.kinesis.put_record(
        StreamName="dialog-events", PartitionKey=phone, Data=f'{{"phone_number": "{PHONES[2]}", "seq": '.encode()
    )

    run = run_dag("dialog_event_ingest")
    logs = captured_logs()
    assert _state(run) == "success"
    text = "\n".join(logs.values())
    assert "set aside" in text, "the run's log lines were not captured"  # the rejected records were logged
    leaks = {where: _leaks(body, PHONES) for where, body in logs.items() if _leaks(body, PHONES)}
    assert not leaks, f"full phone numbers in logs: {leaks}"


def test_reminder_run_logs_no_full_phone_number(run_dag, airflow_env, captured_logs):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    reference = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)

    seed.seed_reminder_instances(db.engine, 2, reference, phone_base=7_770_001)
    phones = ["+15557770001", "+15557770002"]
    run = run_dag("trigger_reminders", logical_date=reference)
    logs = captured_logs()
    assert _state(run) == "success"
    text = "\n".join(logs.values())
    assert mask_phone(phones[0]) in text, "the reminder log lines were not captured"
    leaks = {where: _leaks(body, phones) for where, body in logs.items() if _leaks(body, phones)}
    assert not leaks, f"full phone numbers in logs: {leaks}"


def test_the_check_catches_an_unmasked_phone_number(run_dag, airflow_env, captured_logs, monkeypatch):
    """Negative control: with masking switched off, the same reading of the logs finds the number."""
    from drill_progress.reminders import due as reminders

    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    reference = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    seed.seed_reminder_instances(db.engine, 1, reference, phone_base=7_770_009)
    monkeypatch.setattr(reminders, "mask_phone", lambda phone: phone)
    assert _state(run_dag("trigger_reminders", logical_date=reference)) == "success"
    leaks = {where for where, body in captured_logs().items() if _leaks(body, ["+15557770009"])}
    assert leaks, "an unmasked phone number in a task log went unnoticed"
    print(f"unmasked number found in: {sorted(leaks)}")


_REFUSE_PHONES = """
CREATE FUNCTION refuse_phone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'phone number % refused', NEW.phone_number
        USING ERRCODE = '42501', DETAIL = 'Key (phone_number)=(' || NEW.phone_number || ') is not allowed';
END $$;
CREATE TRIGGER refuse_phone BEFORE INSERT ON phone_numbers FOR EACH ROW EXECUTE FUNCTION refuse_phone();
"""


def test_a_database_error_that_fails_an_ingest_task_logs_no_full_phone_number(airflow_env, captured_logs):
    """A database error the task cannot get past (a permission error raised with the phone number in
    its message and DETAIL): the task fails, and its log says why without the number."""
    from airflow_support import load_dag
    from sqlalchemy.exc import ProgrammingError

    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-events", 1)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    with db.engine.begin() as conn:
        from drill_progress.db import run_script

        run_script(conn, _REFUSE_PHONES)
    with pytest.raises(ProgrammingError) as raw, db.engine.begin() as conn:  # the control: the error names it
        conn.exec_driver_sql("INSERT INTO users (user_id, seq) VALUES (gen_random_uuid(), 1) RETURNING user_id")
        conn.exec_driver_sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id) SELECT gen_random_uuid(), %(p)s, user_id FROM users",
            {"p": PHONES[0]},
        )
    assert _leaks(str(raw.value), PHONES)
    aws.kinesis.put_record(
        StreamName="dialog-events",
        PartitionKey=PHONES[0],
        Data=_batch(1, [_event("USER_VALIDATED", PHONES[0], 0, code_validation_payload={"valid": True})]),
    )
    dag = load_dag("dialog_event_ingest")
    for task in dag.tasks:
        task.retries = 0
    run = dag.test()
    logs = captured_logs()
    states = {ti.task_id: _state(ti) for ti in run.get_task_instances()}
    assert states["ingest_shard"] == "failed", states
    text = "\n".join(logs.values())
    assert "DatabaseError: 42501: phone number ***0001 refused" in text
    leaks = {where: _leaks(body, PHONES) for where, body in logs.items() if _leaks(body, PHONES)}
    assert not leaks, f"full phone numbers in logs: {leaks}"
