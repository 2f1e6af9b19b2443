"""Due users, recording and sending against real PostgreSQL and the moto server."""

from __future__ import annotations

import uuid
from datetime import timedelta
from itertools import product

import pytest
from scheduling_support import COMPLETED, STARTED, T0, UNSTARTED, add_user, read_stream, scan_table, set_state

from drill_progress.config import INITIAL_CATALOG
from drill_progress.next_drill import next_drills
from drill_progress.scheduling import planning as scheduling
from drill_progress.scheduling import sending
from drill_progress.scheduling.planning import Window
from drill_progress.setup.aws_resources import ensure_stream, ensure_table

D1, D2, D3 = INITIAL_CATALOG
INACTIVITY = timedelta(minutes=720)
CUTOFF = T0 - INACTIVITY
TABLE, STREAM = "schedule", "commands"


def _due(engine, cutoff=CUTOFF) -> dict[str, tuple[str, str]]:
    with engine.begin() as conn:
        return {u.user_id: (u.phone_number, u.drill_slug) for u in scheduling.due_users(conn, cutoff)}


def test_selection_rules_and_exclusions(drill_db):
    long_ago = T0 - timedelta(days=2)
    with drill_db.engine.begin() as conn:
        due_never = add_user(conn, phone="+15550000001", last_interacted=None)
        due_long_ago = add_user(conn, phone="+15550000002", last_interacted=long_ago)
        due_at_cutoff = add_user(conn, phone="+15550000003", last_interacted=CUTOFF)
        due_opted_false = add_user(conn, phone="+15550000004", profile={"validated": True, "opted_out": False})
        due_no_profile_keys = add_user(conn, phone="+15550000005", profile={})
        recent = add_user(conn, phone="+15550000006", last_interacted=CUTOFF + timedelta(seconds=1))
        not_primary = add_user(conn, phone="+15550000007", primary=False)
        no_phone = add_user(conn, phone=None)
        never_started = add_user(conn, phone="+15550000008", states=(UNSTARTED,) * 3)
        all_complete = add_user(conn, phone="+15550000009", states=(COMPLETED,) * 3)
        opted_out = add_user(conn, phone="+15550000010", profile={"validated": True, "opted_out": True})
    due = _due(drill_db.engine)
    assert set(due) == {due_never, due_long_ago, due_at_cutoff, due_opted_false, due_no_profile_keys}
    assert due[due_never] == ("+15550000001", D2)
    for excluded in (recent, not_primary, no_phone, never_started, all_complete, opted_out):
        assert excluded not in due
    # the same query, an inactivity of 0: the user who interacted recently is due as well
    assert recent in _due(drill_db.engine, cutoff=T0)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ((STARTED, UNSTARTED, UNSTARTED), D2),  # first unstarted
        ((COMPLETED, COMPLETED, UNSTARTED), D3),
        ((COMPLETED, UNSTARTED, STARTED), D2),  # unstarted before started-incomplete
        ((STARTED, COMPLETED, COMPLETED), D1),  # all started: first incomplete
        ((COMPLETED, STARTED, STARTED), D2),
    ],
)
def test_next_drill_choice(drill_db, states, expected):
    with drill_db.engine.begin() as conn:
        user = add_user(conn, phone="+15550000001", states=states)
    assert _due(drill_db.engine)[user][1] == expected


def test_due_users_next_drill_agrees_with_the_shared_rule(drill_db):
    """Every combination of 4 states x 3 drills: the due set follows the selection rule and its
    drill is exactly scheduling/next_drill.sql's."""
    kinds = [(None, None), ("s", None), ("s", "c"), (None, "c")]  # incl. the odd completed-but-unstarted
    users = {}
    with drill_db.engine.begin() as conn:
        for i, combo in enumerate(product(kinds, repeat=3)):
            user_id = add_user(conn, phone=f"+1555100{i:04d}", states=(UNSTARTED,) * 3)
            for slug, (started, completed) in zip(INITIAL_CATALOG, combo, strict=True):
                conn.exec_driver_sql(
                    "UPDATE drill_statuses SET started_time = %(s)s, completed_time = %(c)s"
                    " WHERE user_id = %(u)s AND drill_slug = %(d)s",
                    {"u": user_id, "d": slug, "s": T0 if started else None, "c": T0 if completed else None},
                )
            users[user_id] = combo
        shared = next_drills(conn, list(users))
    due = _due(drill_db.engine, cutoff=T0)
    expected_due = {u for u, combo in users.items() if any(s for s, _ in combo) and any(c is None for _, c in combo)}
    assert set(due) == expected_due
    assert {u: due[u][1] for u in due} == {u: shared[u] for u in due}


def test_a_user_with_two_primary_numbers_is_scheduled_once(drill_db):
    with drill_db.engine.begin() as conn:
        user = add_user(conn, phone="+15550000009")
        conn.exec_driver_sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary)"
            " VALUES (gen_random_uuid(), '+15550000001', %(u)s, true)",
            {"u": user},
        )
    assert _due(drill_db.engine) == {user: ("+15550000001", D2)}


@pytest.fixture
def resources(aws):
    ensure_table(aws.dynamodb, TABLE, "pk", "sk")
    ensure_stream(aws.kinesis, STREAM)
    return aws


def _plan(drill_db, aws, reference=T0, spread=180, now=None):
    return scheduling.plan_run(
        drill_db.engine,
        aws.dynamodb,
        TABLE,
        reference=reference,
        now=now or reference,
        spread_minutes=spread,
        inactivity_minutes=720,
    )


def _send_all(drill_db, aws, slots):
    return [
        sending.send_slot(drill_db.engine, aws.dynamodb, aws.kinesis, table=TABLE, stream=STREAM, slot=s) for s in slots
    ]


def test_plan_records_every_send_in_dynamodb_with_ttl(drill_db, resources):
    with drill_db.engine.begin() as conn:
        users = {add_user(conn, phone=f"+1555000{i:04d}"): f"+1555000{i:04d}" for i in range(40)}
    out = _plan(drill_db, resources)
    assert out["summary"]["due_users"] == 40 and out["summary"]["items_written"] == 40
    assert sum(s["users"] for s in out["slots"]) == 40 and len(out["slots"]) <= 40
    items = scan_table(resources.dynamodb, TABLE)
    assert {i["sk"] for i in items} == set(users)
    window = Window.for_run(T0, 180)
    for item in items:
        assert item["phone_number"] == users[item["user_id"]] and item["drill_slug"] == D2
        assert item["idempotency_key"] == f"start-drill:{item['user_id']}:{D2}:2026-03-02"
        assert item["pk"] == window.slot_pk(int(item["slot"]))
        assert T0.isoformat() <= item["planned_time"] < window.end.isoformat()
        assert int(item["expires_at"]) == int((window.end + timedelta(days=3)).timestamp())
    # re-planning the same day writes the same items (same times, same slots)
    assert _plan(drill_db, resources)["slots"] == out["slots"]
    assert sorted(scan_table(resources.dynamodb, TABLE), key=lambda i: i["sk"]) == sorted(items, key=lambda i: i["sk"])


def test_stale_requests_are_dropped_at_wake_time(drill_db, resources):
    with drill_db.engine.begin() as conn:
        keep = add_user(conn, phone="+15550000001")
        moved_on = add_user(conn, phone="+15550000002")
        finished = add_user(conn, phone="+15550000003", states=(COMPLETED, COMPLETED, STARTED))
        opted_out_later = add_user(conn, phone="+15550000004")
        number_changed = add_user(conn, phone="+15550000005")
    out = _plan(drill_db, resources, spread=0)
    with drill_db.engine.begin() as conn:
        set_state(conn, moved_on, D2, STARTED)  # the user started the drill meanwhile
        set_state(conn, finished, D3, COMPLETED)  # ... or finished the catalog
        conn.exec_driver_sql(
            "UPDATE users SET profile = '{\"opted_out\": true}' WHERE user_id = %(u)s", {"u": opted_out_later}
        )
        conn.exec_driver_sql("UPDATE phone_numbers SET is_primary = false WHERE user_id = %(u)s", {"u": number_changed})
    [result] = _send_all(drill_db, resources, out["slots"])
    assert result["items"] == 5 and result["stale"] == 4 and result["published"] == 1
    records = read_stream(resources.kinesis, STREAM)
    assert [r["body"]["payload"] for r in records] == [{"phone_number": "+15550000001", "drill_slug": D2}]
    assert records[0]["partition_key"] == "+15550000001"
    assert records[0]["body"]["type"] == "START_DRILL"
    assert records[0]["body"]["idempotency_key"].startswith(f"start-drill:{keep}:{D2}:")


def test_no_duplicates_on_retry_rerun_and_second_run_the_same_day(drill_db, resources):
    with drill_db.engine.begin() as conn:
        for i in range(30):
            add_user(conn, phone=f"+1555000{i:04d}")
    first = _plan(drill_db, resources, spread=5)
    results = _send_all(drill_db, resources, first["slots"])
    assert sum(r["published"] for r in results) == 30
    retried = _send_all(drill_db, resources, first["slots"])  # a task retry / cleared slot
    assert sum(r["published"] for r in retried) == 0 and sum(r["already_enqueued"] for r in retried) == 30
    second = _plan(drill_db, resources, reference=T0 + timedelta(hours=2), spread=5)  # another run, same day
    assert sum(s["users"] for s in second["slots"]) == 30
    assert sum(r["published"] for r in _send_all(drill_db, resources, second["slots"])) == 0
    records = read_stream(resources.kinesis, STREAM)
    assert len(records) == 30
    assert len({r["body"]["idempotency_key"] for r in records}) == 30
    next_day = _plan(drill_db, resources, reference=T0 + timedelta(days=1), spread=0)
    assert sum(r["published"] for r in _send_all(drill_db, resources, next_day["slots"])) == 30


def test_a_window_long_past_plans_and_sends_nothing(drill_db, resources):
    with drill_db.engine.begin() as conn:
        add_user(conn, phone="+15550000001")
    out = _plan(drill_db, resources, now=T0 + timedelta(days=2))
    assert out["slots"] == [] and out["summary"]["skipped"] == "sending window in the past"
    assert scan_table(resources.dynamodb, TABLE) == []


class _Throttled:
    """The real client, except that every BatchWriteItem call leaves its last item unprocessed
    the first time it is offered (DynamoDB does this under throttling)."""

    def __init__(self, client):
        self.client, self.seen = client, set()
        self.calls = 0

    def batch_write_item(self, RequestItems):
        self.calls += 1
        ((table, requests),) = RequestItems.items()
        last = requests[-1]["PutRequest"]["Item"]["sk"]["S"]
        if last in self.seen:
            return self.client.batch_write_item(RequestItems=RequestItems)
        self.seen.add(last)
        response = self.client.batch_write_item(RequestItems={table: requests[:-1]}) if requests[:-1] else {}
        return {**response, "UnprocessedItems": {table: [requests[-1]]}}


def test_batch_write_retries_unprocessed_items(drill_db, resources):
    window = Window.for_run(T0, 180)
    users = [scheduling.DueUser(str(uuid.uuid4()), f"+1555000{i:04d}", D2) for i in range(60)]
    throttled = _Throttled(resources.dynamodb)
    scheduling.batch_write(
        throttled,
        TABLE,
        [scheduling.schedule_item(s, window, 0) for s in scheduling.plan(users, window)],
        base_delay=0.001,
    )
    assert throttled.calls == 6  # 3 chunks (25, 25, 10), each retried once
    assert len(scan_table(resources.dynamodb, TABLE)) == 60


def test_slot_with_more_than_a_page_of_items_is_read_whole(drill_db, resources):
    window = Window.for_run(T0, 0)
    users = [scheduling.DueUser(str(uuid.uuid4()), f"+1555000{i:04d}" + "x" * 2000, D2) for i in range(700)]
    scheduling.record(resources.dynamodb, TABLE, scheduling.plan(users, window), window)
    assert len(sending.read_slot(resources.dynamodb, TABLE, window.slot_pk(0))) == 700  # > 1 MB: 2+ pages
