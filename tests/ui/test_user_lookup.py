"""The User lookup of the Drill Progress page (POST /drill-progress/api/lookup), in Airflow's own
api-server app against a real PostgreSQL: one seeded user's whole story as exact JSON, a number
without a user, the stronger permission (read access to the connection drill_progress_db), the
number only ever in a POST body, and Airflow's audit log written with the number masked."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta

import pytest
import report_dataset as dataset
from test_plugin_api import PREFIX, auth, mint_token

from drill_progress import ids
from drill_progress.scheduling import planning
from drill_progress.ui import lookup
from drill_progress.ui.app import AUDIT_EVENT

PHONE = "+15551230001"
SECOND = "+15559870002"  # the same user's second (not primary) number
OTHER = "+15554440003"  # someone else's
NOBODY = "+15557770000"  # no user, but records set aside
USER_ID = ids.user_id_text(PHONE)
I1 = "11111111-1111-4111-8111-111111111111"
I2 = "22222222-2222-4222-8222-222222222222"
I3 = "33333333-3333-4333-8333-333333333333"


def _at(day: date, hour: int, minute: int = 0) -> str:
    return datetime.combine(day, datetime.min.time(), UTC).replace(hour=hour, minute=minute).isoformat()


@pytest.fixture
def story_db(drill_db):
    """One user with three drills in the catalog's order, a fourth drill for another employer
    only, instances with reminded prompts, commands (published and pending) on both of the user's
    numbers, START_DRILLs recorded as sent, and records set aside; and rows of other numbers."""
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    with drill_db.engine.begin() as conn:
        sql = conn.exec_driver_sql
        sql("INSERT INTO drills (drill_slug, drill_name, place_in_sequence, employer_ids) "
            "VALUES ('04-acme-drill', 'Acme only', 3, '{8}')")  # fmt: skip
        sql(
            "INSERT INTO users (user_id, seq, profile, last_interacted_time, created_at) VALUES "
            "(%(u)s, 987654321098765432109876543210987654321, %(profile)s::jsonb, %(last)s, '2026-03-01T00:00Z'), "
            "(%(o)s, 3, '{\"validated\": true}', %(last)s, '2026-03-01T00:00Z')",
            {
                "u": USER_ID,
                "o": ids.user_id_text(OTHER),
                "profile": json.dumps({"validated": True, "name": "Ana", "account_info": {"employer_id": 7}}),
                "last": _at(yesterday, 9),
            },
        )
        sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary) VALUES "
            "(%(p1)s, %(phone)s, %(u)s, true), (%(p2)s, %(second)s, %(u)s, false), (%(p3)s, %(other)s, %(o)s, true)",
            {
                "p1": ids.phone_number_id_text(PHONE),
                "p2": ids.phone_number_id_text(SECOND),
                "p3": ids.phone_number_id_text(OTHER),
                "phone": PHONE,
                "second": SECOND,
                "other": OTHER,
                "u": USER_ID,
                "o": ids.user_id_text(OTHER),
            },
        )
        statuses = [  # 01 done, 02 under way, 03 done, 04 (not the user's employer's) never started
            ("01-sample-drill", 0, "2026-03-01T10:00Z", "2026-03-03T10:00Z", I1),
            ("02-sample-drill", 1, _at(yesterday, 8), None, I2),
            ("03-sample-drill", 2, "2026-03-04T10:00Z", "2026-03-04T11:00Z", I3),
            ("04-acme-drill", 3, None, None, None),
        ]
        for slug, place, started, completed, instance in statuses:
            sql(
                "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time, "
                "drill_instance_id) VALUES (%(id)s, %(u)s, %(slug)s, %(place)s, %(s)s, %(c)s, %(i)s)",
                {"id": ids.status_id_text(USER_ID, slug), "u": USER_ID, "slug": slug, "place": place}
                | {"s": started, "c": completed, "i": instance},
            )
        sql(
            "INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug, "
            "current_prompt_start_time, current_prompt_last_response_time, completion_time, is_valid, "
            "reminded_prompts, created_at) VALUES "
            "(%(i1)s, %(u)s, %(p)s, '01-sample-drill', NULL, NULL, NULL, '2026-03-03T10:00Z', true, NULL, "
            " '2026-03-01T10:00Z'), "
            "(%(i3)s, %(u)s, %(p)s, '03-sample-drill', NULL, NULL, NULL, '2026-03-04T11:00Z', true, NULL, "
            " '2026-03-04T10:00Z'), "
            "(%(i2)s, %(u)s, %(p)s, '02-sample-drill', 'q3', %(q3)s, NULL, NULL, true, '{q1,q2}', %(started)s)",
            {"i1": I1, "i2": I2, "i3": I3, "u": USER_ID, "p": PHONE}
            | {"q3": _at(yesterday, 8, 40), "started": _at(yesterday, 8)},
        )
        sql(
            "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, created_at, "
            "published_at, last_error) VALUES "
            "('ingest:e1', 'START_DRILL', %(p)s, %(start)s::jsonb, 'ingest', '2026-03-01T09:00Z', "
            " '2026-03-01T09:00:01Z', NULL), "
            "('reminder:i2:q2', 'TRIGGER_REMINDER', %(p)s, %(remind)s::jsonb, 'trigger_reminders', %(r)s, %(r)s, "
            " NULL), "
            "('start-drill:x', 'START_DRILL', %(s)s, %(start2)s::jsonb, 'schedule_next_drills', %(t)s, NULL, "
            " %(error)s), "
            "('ingest:other', 'START_DRILL', %(o)s, %(start3)s::jsonb, 'ingest', %(t)s, NULL, NULL)",
            {
                "p": PHONE,
                "s": SECOND,
                "o": OTHER,
                "start": json.dumps({"phone_number": PHONE, "drill_slug": "01-sample-drill"}),
                "remind": json.dumps({"phone_number": PHONE, "drill_instance_id": I2, "prompt_slug": "q2"}),
                "start2": json.dumps({"phone_number": SECOND, "drill_slug": "02-sample-drill"}),
                "start3": json.dumps({"phone_number": OTHER, "drill_slug": "01-sample-drill"}),
                "r": _at(yesterday, 14, 5),
                "t": _at(yesterday, 17, 30),
                "error": f"ProvisionedThroughputExceeded for {SECOND}",
            },
        )
        sql(
            "INSERT INTO sent_start_drills (idempotency_key, send_date) VALUES (%(k1)s, %(d1)s), (%(k2)s, %(d1)s)",
            {
                "k1": planning.idempotency_key(USER_ID, "02-sample-drill", yesterday),
                "k2": planning.idempotency_key(ids.user_id_text(OTHER), "01-sample-drill", yesterday),
                "d1": yesterday,
            },
        )
        sql(
            "INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason, "
            "rejected_at) VALUES "
            "('dialog-events', 'shardId-000000000000', '101', %(p)s, convert_to(%(raw)s, 'UTF8'), %(reason)s, "
            " '2026-03-02T10:00Z'), "
            "('dialog-events', 'shardId-000000000001', '102', %(n)s, convert_to(%(raw)s, 'UTF8'), 'unknown event_type', "
            " '2026-03-05T10:00Z'), "
            "('dialog-events', 'shardId-000000000001', '103', %(o)s, convert_to(%(raw)s, 'UTF8'), 'not valid JSON', "
            " '2026-03-05T11:00Z')",
            {
                "p": PHONE,
                "n": NOBODY,
                "o": OTHER,
                "raw": json.dumps({"phone_number": PHONE}),
                "reason": f"schema: seq of {PHONE} is not a number",
            },
        )
    return drill_db, today


def _audit_rows() -> list:
    from airflow.models import Log
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(Log).where(Log.event == AUDIT_EVENT).order_by(Log.id)).all()
        return [(r.owner, r.owner_display_name, json.loads(r.extra), r.dttm, r.dag_id) for r in rows]


@pytest.fixture(autouse=True)
def _no_audit_rows_before(airflow_app):
    from airflow.models import Log
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Log).where(Log.event == AUDIT_EVENT))


def post(client, phone, token=None, **kwargs):
    return client.post(PREFIX + "/api/lookup", json={"phone_number": phone}, headers=auth(token), **kwargs)


def expected_story(today: date) -> dict:
    yesterday = today - timedelta(days=1)
    key = planning.idempotency_key(USER_ID, "02-sample-drill", today)
    run = datetime.combine(today, datetime.min.time(), UTC).replace(hour=17, minute=5)
    planned = run + timedelta(minutes=180) * planning.planned_fraction(key)
    return {
        "phone_number": "***0001",
        "user": {
            "user_id": USER_ID,
            "seq": "987654321098765432109876543210987654321",
            "profile": {"validated": True, "name": "Ana", "account_info": {"employer_id": 7}},
            "last_interacted_time": _at(yesterday, 9),
            "created_at": "2026-03-01T00:00:00+00:00",
        },
        "phone_numbers": [
            {"phone_number": "***0001", "is_primary": True, "looked_up": True},
            {"phone_number": "***0002", "is_primary": False, "looked_up": False},
        ],
        # 04-acme-drill is the only drill not started, but it is for employer 8's users: the next
        # drill is the first not completed among the user's own drills
        "next_drill": "02-sample-drill",
        "today": {
            "date": today.isoformat(),
            "scheduled_run": run.isoformat(),
            "inactivity_cutoff": (run - timedelta(hours=12)).isoformat(),
            "due": True,
            "why_not": [],
            "drill_slug": "02-sample-drill",
            "idempotency_key": key,
            "planned_time": planned.isoformat(),
            "recorded_as_sent": False,
        },
        "sent_start_drills": [
            {
                "idempotency_key": planning.idempotency_key(USER_ID, "02-sample-drill", yesterday),
                "send_date": yesterday.isoformat(),
            }
        ],
        "drill_statuses": [
            {
                "drill_slug": "01-sample-drill",
                "drill_name": "01-sample-drill",
                "place_in_sequence": 0,
                "started_time": "2026-03-01T10:00:00+00:00",
                "completed_time": "2026-03-03T10:00:00+00:00",
                "drill_instance_id": I1,
                "own_drill": True,
            },
            {
                "drill_slug": "02-sample-drill",
                "drill_name": "02-sample-drill",
                "place_in_sequence": 1,
                "started_time": _at(yesterday, 8),
                "completed_time": None,
                "drill_instance_id": I2,
                "own_drill": True,
            },
            {
                "drill_slug": "03-sample-drill",
                "drill_name": "03-sample-drill",
                "place_in_sequence": 2,
                "started_time": "2026-03-04T10:00:00+00:00",
                "completed_time": "2026-03-04T11:00:00+00:00",
                "drill_instance_id": I3,
                "own_drill": True,
            },
            {
                "drill_slug": "04-acme-drill",
                "drill_name": "Acme only",
                "place_in_sequence": 3,
                "started_time": None,
                "completed_time": None,
                "drill_instance_id": None,
                "own_drill": False,
            },
        ],
        "drill_instances": [
            {
                "drill_instance_id": I2,
                "drill_slug": "02-sample-drill",
                "current_prompt_slug": "q3",
                "current_prompt_start_time": _at(yesterday, 8, 40),
                "current_prompt_last_response_time": None,
                "completion_time": None,
                "is_valid": True,
                "reminded_prompts": ["q1", "q2"],
                "created_at": _at(yesterday, 8),
            },
            {
                "drill_instance_id": I3,
                "drill_slug": "03-sample-drill",
                "current_prompt_slug": None,
                "current_prompt_start_time": None,
                "current_prompt_last_response_time": None,
                "completion_time": "2026-03-04T11:00:00+00:00",
                "is_valid": True,
                "reminded_prompts": [],
                "created_at": "2026-03-04T10:00:00+00:00",
            },
            {
                "drill_instance_id": I1,
                "drill_slug": "01-sample-drill",
                "current_prompt_slug": None,
                "current_prompt_start_time": None,
                "current_prompt_last_response_time": None,
                "completion_time": "2026-03-03T10:00:00+00:00",
                "is_valid": True,
                "reminded_prompts": [],
                "created_at": "2026-03-01T10:00:00+00:00",
            },
        ],
        "commands": [
            {
                "idempotency_key": "start-drill:x",
                "command_type": "START_DRILL",
                "partition_key": "***0002",
                "payload": {"phone_number": "***0002", "drill_slug": "02-sample-drill"},
                "source": "schedule_next_drills",
                "enqueued_at": _at(yesterday, 17, 30),
                "published_at": None,
                "attempts": 0,
                "last_error": "ProvisionedThroughputExceeded for ***0002",
                "pending": True,
            },
            {
                "idempotency_key": "reminder:i2:q2",
                "command_type": "TRIGGER_REMINDER",
                "partition_key": "***0001",
                "payload": {"phone_number": "***0001", "drill_instance_id": I2, "prompt_slug": "q2"},
                "source": "trigger_reminders",
                "enqueued_at": _at(yesterday, 14, 5),
                "published_at": _at(yesterday, 14, 5),
                "attempts": 0,
                "last_error": None,
                "pending": False,
            },
            {
                "idempotency_key": "ingest:e1",
                "command_type": "START_DRILL",
                "partition_key": "***0001",
                "payload": {"phone_number": "***0001", "drill_slug": "01-sample-drill"},
                "source": "ingest",
                "enqueued_at": "2026-03-01T09:00:00+00:00",
                "published_at": "2026-03-01T09:00:01+00:00",
                "attempts": 0,
                "last_error": None,
                "pending": False,
            },
        ],
        "rejected_records": [
            {
                "id": 1,
                "stream": "dialog-events",
                "shard_id": "shardId-000000000000",
                "sequence_number": "101",
                "partition_key": "***0001",
                "reason": "schema: seq of ***0001 is not a number",
                "attempts": 1,
                "rejected_at": "2026-03-02T10:00:00+00:00",
                "resolved_at": None,
                "resolution": None,
            }
        ],
    }


# ---------------------------------------------------------------------------- the story


def test_lookup_shows_the_users_whole_story(client, story_db):
    _, today = story_db
    response = post(client, PHONE)
    assert response.status_code == 200, response.text
    assert response.json() == expected_story(today)
    for full in (PHONE, SECOND, OTHER, PHONE.lstrip("+"), SECOND.lstrip("+")):
        assert full not in response.text


def test_any_number_of_the_user_and_spaces_and_dashes_find_the_same_story(client, story_db):
    _, today = story_db
    by_second = post(client, " +1 555 987-0002 ").json()
    assert by_second["user"]["user_id"] == USER_ID and by_second["phone_number"] == "***0002"
    assert [n["looked_up"] for n in by_second["phone_numbers"]] == [False, True]
    assert {k: v for k, v in by_second.items() if k not in {"phone_number", "phone_numbers"}} == {
        k: v for k, v in expected_story(today).items() if k not in {"phone_number", "phone_numbers"}
    }


def test_todays_send_once_recorded_and_why_a_user_is_not_due(client, story_db):
    db, today = story_db
    key = planning.idempotency_key(USER_ID, "02-sample-drill", today)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO sent_start_drills (idempotency_key, send_date) VALUES (%(k)s, %(d)s)", {"k": key, "d": today}
        )
    body = post(client, PHONE).json()
    assert body["today"]["recorded_as_sent"] is True
    assert body["sent_start_drills"][0]["idempotency_key"] == key

    cutoff = datetime.combine(today, datetime.min.time(), UTC).replace(hour=5, minute=5)
    with db.engine.begin() as conn:  # active after the cutoff, opted out, every drill done
        conn.exec_driver_sql(
            "UPDATE users SET last_interacted_time = %(t)s, profile = profile || '{\"opted_out\": true}' "
            "WHERE user_id = %(u)s",
            {"t": cutoff + timedelta(seconds=1), "u": USER_ID},
        )
        conn.exec_driver_sql(
            "UPDATE drill_statuses SET completed_time = started_time WHERE user_id = %(u)s AND drill_slug <> "
            "'04-acme-drill'",
            {"u": USER_ID},
        )
    body = post(client, PHONE).json()
    assert body["next_drill"] is None
    assert body["today"] | {"date": None, "scheduled_run": None, "inactivity_cutoff": None} == {
        "date": None,
        "scheduled_run": None,
        "inactivity_cutoff": None,
        "due": False,
        "why_not": [
            f"interacted after {cutoff.isoformat()} (less than 12 h before the run)",
            "opted out",
            "no next drill among the user's own drills",
        ],
        "drill_slug": None,
        "idempotency_key": None,
        "planned_time": None,
        "recorded_as_sent": False,
    }


def test_due_today_agrees_with_schedulings_own_due_users(drill_db):
    """The lookup's "due at today's run" is contract §6 applied to one user's rows; scheduling's
    due_users.sql applies it to all users: they agree on users of every kind."""
    dataset.load(drill_db.engine)  # A-J: +15550000000 ... +15550000009
    today = datetime.now(UTC).date()
    cutoff = lookup.scheduled_run(today) - timedelta(minutes=lookup.DEFAULT_INACTIVITY_MINUTES)
    with drill_db.engine.begin() as conn:  # users A-J are seq 1-10
        sql = conn.exec_driver_sql
        sql("UPDATE users SET last_interacted_time = %(t)s WHERE seq = 1", {"t": cutoff})  # A: exactly, due
        sql("UPDATE users SET profile = profile || '{\"opted_out\": true}' WHERE seq = 2")  # B
        sql(  # C: every drill completed
            "UPDATE drill_statuses SET started_time = '2026-03-01', completed_time = '2026-03-02' "
            "WHERE user_id = (SELECT user_id FROM users WHERE seq = 3)"
        )
        sql("UPDATE phone_numbers SET is_primary = false WHERE phone_number = '+15550000003'")  # D
        sql("UPDATE users SET last_interacted_time = NULL WHERE seq = 7")  # G: never, due
        sql('UPDATE users SET profile = profile || \'{"opted_out": "true"}\' WHERE seq = 9')  # I
        sql("UPDATE users SET last_interacted_time = %(t)s WHERE seq = 10", {"t": cutoff + timedelta(minutes=1)})
    with drill_db.engine.begin() as conn:
        due = {u.user_id for u in planning.due_users(conn, cutoff)}
    seen = {}
    for n in range(10):
        story = lookup.lookup(drill_db.engine, f"+1555000{n:04d}")
        seen[story["user"]["user_id"]] = story["today"]["due"]
    assert len(seen) == 10  # F never started a drill
    assert due == {str(dataset.user_id(name)) for name in "AEGH"}
    assert {u for u, d in seen.items() if d} == due


# ---------------------------------------------------------------------------- not found, bad input


def test_a_number_without_a_user_says_so_plainly(client, story_db):
    response = post(client, NOBODY)
    assert response.status_code == 404
    assert response.json() == {
        "detail": "no user with this phone number",
        "phone_number": "***0000",
        "rejected_records": [
            {
                "id": 2,
                "stream": "dialog-events",
                "shard_id": "shardId-000000000001",
                "sequence_number": "102",
                "partition_key": "***0000",
                "reason": "unknown event_type",
                "attempts": 1,
                "rejected_at": "2026-03-05T10:00:00+00:00",
                "resolved_at": None,
                "resolution": None,
            }
        ],
    }
    assert post(client, "+15550001111").json() == {
        "detail": "no user with this phone number",
        "phone_number": "***1111",
        "rejected_records": [],
    }


@pytest.mark.parametrize("typed", ["alice", "+1555", "1' OR '1'='1", "+" + "5" * 30, "   "])
def test_what_is_not_a_phone_number_is_refused_without_being_echoed(client, story_db, typed):
    response = post(client, typed)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "not a phone number: digits, optionally a leading +, spaces and dashes allowed"
    }


@pytest.mark.parametrize(
    "body",
    [{"phone_number": 15551230001}, {"phone_number": "+1555123000" + "1" * 60}, {"number": PHONE}, [PHONE]],
)
def test_a_malformed_body_is_refused_without_quoting_it(client, story_db, body):
    response = client.post(PREFIX + "/api/lookup", json=body, headers=auth())
    assert response.status_code == 422
    assert response.json() == {"detail": 'send the number as a JSON body: {"phone_number": "+15551230001"}'}
    # other routes keep FastAPI's own answer
    assert (
        client.get(PREFIX + "/api/health/lag?hours=49", headers=auth()).json()["detail"][0]["type"] == "less_than_equal"
    )


# ---------------------------------------------------------------------------- the number stays out of URLs


def test_the_number_is_only_accepted_in_a_post_body(client, story_db):
    assert client.get(PREFIX + "/api/lookup", params={"phone_number": PHONE}, headers=auth()).status_code == 405
    assert client.get(PREFIX + "/api/lookup/" + PHONE, headers=auth()).status_code == 404
    assert client.post(PREFIX + "/api/lookup/" + PHONE, headers=auth()).status_code == 404
    # a number in the query string of a POST is not read: the body is required
    refused = client.post(PREFIX + "/api/lookup", params={"phone_number": PHONE}, headers=auth())
    assert refused.status_code == 422
    assert _audit_rows() == []


# ---------------------------------------------------------------------------- permission


def test_lookup_needs_credentials(client, story_db):
    assert client.post(PREFIX + "/api/lookup", json={"phone_number": PHONE}).status_code == 401
    assert _audit_rows() == []


@pytest.mark.parametrize("role", ["viewer", "user"])
def test_the_pages_permission_is_not_enough(client, story_db, role):
    """A viewer (or user) may read every DAG, so may see the page, but not the Airflow connection
    drill_progress_db: refused, and nothing is read nor audit-logged."""
    token = mint_token(username=f"someone-{role}", role=role)
    assert client.get(PREFIX + "/api/employers", headers=auth(token)).status_code == 200
    response = post(client, PHONE, token)
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Forbidden: the user lookup needs read access to the Airflow connection drill_progress_db"
    }
    assert _audit_rows() == []


def test_read_access_to_the_connection_and_the_pages_dags_is_required(client, story_db, monkeypatch):
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    asked = []
    original = manager.is_authorized_connection

    def only_other_connections(*, method, details=None, user):
        asked.append((method, details.conn_id if details else None))
        return details is not None and details.conn_id == "aws_default"

    assert post(client, PHONE, mint_token(username="operator", role="op")).status_code == 200
    monkeypatch.setattr(manager, "is_authorized_connection", only_other_connections)
    assert post(client, PHONE, mint_token(username="operator", role="op")).status_code == 403
    assert asked == [("GET", "drill_progress_db")]
    monkeypatch.setattr(manager, "is_authorized_connection", original)
    # the connection alone is not enough either: the page's DAGs must be readable
    monkeypatch.setattr(manager, "is_authorized_dag", lambda **kwargs: False)
    assert post(client, PHONE, mint_token(username="operator", role="op")).status_code == 403


# ---------------------------------------------------------------------------- audit


def test_every_lookup_is_in_airflows_audit_log_with_the_number_masked(client, story_db, caplog):
    started = datetime.now(UTC) - timedelta(seconds=1)
    with caplog.at_level(logging.DEBUG):
        assert post(client, PHONE, mint_token(username="ops-ana", role="op")).status_code == 200
        assert post(client, NOBODY).status_code == 404
        assert post(client, "+1555").status_code == 422
    rows = _audit_rows()
    assert [(owner, shown, extra, dag_id) for owner, shown, extra, _, dag_id in rows] == [
        ("ops-ana", "ops-ana", {"phone_number": "***0001", "outcome": "found", "method": "POST"}, None),
        ("admin", "admin", {"phone_number": "***0000", "outcome": "not found", "method": "POST"}, None),
        ("admin", "admin", {"phone_number": "***", "outcome": "not a phone number", "method": "POST"}, None),
    ]
    assert all(started <= r[3] <= datetime.now(UTC) for r in rows)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "user lookup by ops-ana for ***0001: found" in logged
    for full in (PHONE, NOBODY, PHONE.lstrip("+"), NOBODY.lstrip("+")):
        assert full not in logged
        assert full not in json.dumps([r[2] for r in rows])


def test_the_audit_rows_are_what_airflows_audit_log_api_serves(client, story_db):
    post(client, PHONE)
    events = client.get("/api/v2/eventLogs", params={"event": AUDIT_EVENT}, headers=auth()).json()
    assert events["total_entries"] == 1
    entry = events["event_logs"][0]
    assert (entry["event"], entry["owner"], json.loads(entry["extra"])) == (
        AUDIT_EVENT,
        "admin",
        {"phone_number": "***0001", "outcome": "found", "method": "POST"},
    )


# ---------------------------------------------------------------------------- cost


@pytest.mark.parametrize(
    ("template", "index"),
    [
        ("ui/lookup/commands.sql", "command_outbox_partition_key_idx"),
        ("ui/lookup/rejected.sql", "rejected_records_partition_key_idx"),
    ],
)
def test_a_lookup_reads_the_outbox_and_set_aside_records_by_index(drill_db, template, index):
    """Migration 0014: with many numbers' rows the lookup reads one number's by its index, not the
    whole table (the outbox holds tens of millions of rows at a million users)."""
    from drill_progress.db import load_sql

    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, published_at) "
            "SELECT 'k' || g, 'START_DRILL', '+1555' || lpad(g::text, 7, '0'), '{}'::jsonb, 'test', now() "
            "FROM generate_series(1, 20000) AS g"
        )
        conn.exec_driver_sql(
            "INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason) "
            "SELECT 'dialog-events', 'shardId-000000000000', g::text, '+1555' || lpad(g::text, 7, '0'), '\\x00', 'x' "
            "FROM generate_series(1, 20000) AS g"
        )
        conn.exec_driver_sql("ANALYZE command_outbox; ANALYZE rejected_records")
        plan = conn.exec_driver_sql(
            "EXPLAIN " + load_sql(template), {"phone_numbers": [PHONE, SECOND], "limit": 100}
        ).scalars()
        plan = "\n".join(plan)
    assert index in plan, plan
    assert "Seq Scan on" not in plan.replace("Seq Scan on command_outbox_pending", ""), plan
