"""Security checks (issue 8): hostile input is stored literally or refused, never executed.

Covered elsewhere, not repeated here:
- drill_rollout params carrying SQL/script injection are refused: tests/rollout/test_rollout_unit.py,
  test_rollout_db.py (`test_invalid_and_hostile_params_change_nothing`) and test_rollout_dag.py
  (`test_the_form_schema_refuses_bad_params_before_a_run`);
- no credentials committed: tests/test_secrets_scan.py (a scan over the repository);
- phone numbers masked in task logs: tests/test_log_masking.py;
- plugin routes refuse unauthenticated requests: tests/report/test_plugin_api.py
  (`test_every_route_refuses_requests_without_credentials`, `test_invalid_or_expired_tokens_are_refused`).

Here: dialog events whose fields carry SQL or script injection, through the real ingestion path
(parse, fold, the set-based writes with hand-built array literals) into PostgreSQL; and the params
of the other DAGs.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from drill_progress import ids
from drill_progress.ingest import pipeline

SQLI = "'); DROP TABLE users; --"
XSS = "<script>alert(1)</script>"
# characters that matter to PostgreSQL array literals, JSON and psycopg placeholders
TRICKY = 'a","b\\",NULL,{x},%(p)s,%s,$1,\'\'--'
HOSTILE = [SQLI, XSS, TRICKY, "1 OR 1=1", "Robert'); DELETE FROM drill_statuses; --"]
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TABLES = (
    "users",
    "phone_numbers",
    "drill_statuses",
    "drill_instances",
    "drills",
    "command_outbox",
    "rejected_records",
    "stream_checkpoints",
)


def _uuid(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def _event(kind: str, phone: str, minute: int, name: str, **extra) -> dict:
    doc = {
        "event_id": _uuid(kind, phone, minute),
        "event_type": kind,
        "phone_number": phone,
        "created_time": (T0 + timedelta(minutes=minute)).isoformat(),
        "schema_version": 1,
        "user_profile": {
            "validated": True,
            "name": name,
            "language": name,
            "account_info": {"employer_id": name, "unit_id": 1},
        },
    }
    doc.update(extra)
    return doc


def _story(phone: str, text: str) -> list[dict]:
    """Validation, a drill whose prompt slugs and responses are `text`, then a hostile prompt advance."""
    instance = _uuid("instance", phone)
    prompt = {"slug": text, "messages": [{"text": text}]}
    batches = [
        [
            _event(
                "USER_VALIDATED",
                phone,
                0,
                text,
                code_validation_payload={"valid": True, "is_demo": False, "account_info": {"employer_id": text}},
            )
        ],
        [
            _event(
                "DRILL_STARTED",
                phone,
                1,
                text,
                drill={"slug": "01-sample-drill", "name": text, "prompts": [prompt]},
                drill_instance_id=instance,
                first_prompt=prompt,
            ),
            _event("COMPLETED_PROMPT", phone, 2, text, prompt=prompt, response=text, drill_instance_id=instance),
            _event(
                "FAILED_PROMPT",
                phone,
                3,
                text,
                prompt=prompt,
                response=text,
                abandoned=False,
                drill_instance_id=instance,
            ),
        ],
        [_event("ADVANCED_TO_NEXT_PROMPT", phone, 4, text, prompt={"slug": text + "-2"}, drill_instance_id=instance)],
    ]
    return [
        {
            "batch_id": _uuid("batch", phone, n),
            "seq": str(n),
            "phone_number": phone,
            "created_time": events[-1]["created_time"],
            "events": events,
        }
        for n, events in enumerate(batches, 1)
    ]


def _raws(docs: list) -> list[pipeline.RawRecord]:
    return [
        pipeline.RawRecord(
            f"{n:030d}",
            d.get("phone_number") if isinstance(d, dict) else None,
            d if isinstance(d, bytes) else json.dumps(d).encode(),
        )
        for n, d in enumerate(docs, 1)
    ]


def _tables_intact(engine) -> dict[str, int]:
    with engine.connect() as conn:
        for table in TABLES:
            assert conn.exec_driver_sql("SELECT to_regclass(%(t)s)", {"t": table}).scalar() == table
        return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in TABLES}


def test_hostile_event_fields_are_stored_literally(drill_db):
    phones = {text: f"+1555300{n:04d}" for n, text in enumerate(HOSTILE)}
    docs = [batch for text, phone in phones.items() for batch in _story(phone, text)]
    stats = pipeline.apply_micro_batch(drill_db.engine, "dialog-events", "shardId-000000000000", _raws(docs))
    assert stats.records_rejected == 0 and stats.batches_applied == len(docs)
    counts = _tables_intact(drill_db.engine)
    assert counts["users"] == len(HOSTILE) and counts["drill_statuses"] == 3 * len(HOSTILE)
    assert counts["drills"] == 3  # the catalog untouched
    with drill_db.engine.connect() as conn:
        for text, phone in phones.items():
            user_id = ids.user_id(phone)
            profile = conn.exec_driver_sql("SELECT profile FROM users WHERE user_id = %(u)s", {"u": user_id}).scalar()
            assert profile["name"] == text and profile["language"] == text
            assert profile["account_info"]["employer_id"] == text
            slug = conn.exec_driver_sql(
                "SELECT current_prompt_slug FROM drill_instances WHERE user_id = %(u)s", {"u": user_id}
            ).scalar()
            assert slug == text + "-2"
            command = conn.exec_driver_sql(
                "SELECT payload FROM command_outbox WHERE partition_key = %(p)s", {"p": phone}
            ).scalar()
            assert command == {"phone_number": phone, "drill_slug": "01-sample-drill"}


@pytest.mark.parametrize("where", ["drill_slug", "event_type", "phone_number", "seq", "not_json"])
@pytest.mark.parametrize("text", [SQLI, XSS])
def test_hostile_identifiers_are_refused_and_kept_literally(drill_db, where, text):
    """Fields that name things (a drill, an event type, a phone number, seq) carrying injection: the
    record is stored literally or set aside byte for byte in rejected_records; a good record
    behind it is applied; nothing else changes."""
    phone = "+15553009999"
    good = _story("+15553001111", "fine")[0]
    hostile = _story(phone, "ok")[1] if where == "drill_slug" else _story(phone, "ok")[0]
    if where == "drill_slug":
        hostile["events"][0]["drill"]["slug"] = text
        raw: bytes | dict = hostile
    elif where == "event_type":
        hostile["events"][0]["event_type"] = text
        raw = hostile
    elif where == "phone_number":
        hostile["phone_number"] = hostile["events"][0]["phone_number"] = text
        raw = hostile
    elif where == "seq":
        hostile["seq"] = text
        raw = hostile
    else:
        raw = text.encode()
    records = _raws([raw, good])
    stats = pipeline.apply_micro_batch(drill_db.engine, "dialog-events", "shardId-000000000000", records)
    counts = _tables_intact(drill_db.engine)
    assert counts["drills"] == 3
    with drill_db.engine.connect() as conn:
        rejected = conn.exec_driver_sql("SELECT raw_data, reason FROM rejected_records").all()
        slugs = conn.exec_driver_sql("SELECT drill_slug FROM drill_instances").scalars().all()
        phones = conn.exec_driver_sql("SELECT phone_number FROM phone_numbers").scalars().all()
    assert "+15553001111" in phones  # the good record behind it is applied
    if where in ("drill_slug", "phone_number"):  # free text the schema allows: stored literally
        assert rejected == [] and stats.records_rejected == 0
        assert text in (slugs if where == "drill_slug" else phones)
    else:  # an unknown event type, a seq that is not digits, not JSON: set aside byte for byte
        assert [bytes(r[0]) for r in rejected] == [records[0].data] and rejected[0][1]
        assert stats.records_rejected == 1


@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [
        pytest.param("trigger_reminders", {"floor_minutes": "240; DROP TABLE users; --"}, id="reminders-floor-sqli"),
        pytest.param("trigger_reminders", {"ceil_minutes": XSS}, id="reminders-ceil-script"),
        pytest.param(
            "schedule_next_drills", {"spread_minutes": "0); DROP TABLE users; --"}, id="scheduling-spread-sqli"
        ),
        pytest.param("schedule_next_drills", {"inactivity_minutes": XSS}, id="scheduling-inactivity-script"),
        pytest.param("dialog_event_ingest", {"micro_batch_records": "1; DROP TABLE users"}, id="ingest-batch-sqli"),
        pytest.param(
            "drill_progress_report", {"report_date": "2026-03-02'; DROP TABLE users; --"}, id="report-date-sqli"
        ),
        pytest.param("drill_progress_report", {"report_date": XSS}, id="report-date-script"),
        pytest.param("drill_progress_setup", {"dialog_stream_shards": "2; DROP TABLE users"}, id="setup-shards-sqli"),
    ],
)
def test_hostile_dag_params_are_refused_before_a_run(run_dag, airflow_env, dag_id, conf):
    from airflow.sdk.definitions.param import ParamValidationError

    before = _tables_intact(airflow_env["db"].engine)
    with pytest.raises(ParamValidationError):
        run_dag(dag_id, conf=conf)
    assert _tables_intact(airflow_env["db"].engine) == before


@pytest.mark.parametrize(
    ("shard", "since"),
    [
        pytest.param(SQLI, "2026-03-02T15:00:00+00:00", id="shard-sqli"),
        pytest.param("shardId-000000000000", "2026-03-02'; DROP TABLE users; --", id="from-sqli"),
        pytest.param(XSS, XSS, id="script"),
    ],
)
def test_hostile_replay_params_are_refused(drill_db, aws, shard, since):
    """dialog_event_ingest's free-text params (replay_shard_id, replay_from) reach plan_shards,
    which refuses a shard that is not listed and a timestamp that does not parse."""
    from drill_progress.ingest import runs
    from drill_progress.setup.aws_resources import ensure_stream

    ensure_stream(aws.kinesis, "dialog-events", 1)
    before = _tables_intact(drill_db.engine)
    with pytest.raises(ValueError):
        runs.plan_shards(drill_db.engine, aws.kinesis, "dialog-events", shard, since)
    assert _tables_intact(drill_db.engine) == before
