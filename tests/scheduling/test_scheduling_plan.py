"""Planning as pure logic: reference time, window and slots, the spread, determinism, scale."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from drill_progress.scheduling import planning as scheduling
from drill_progress.scheduling.planning import DueUser, Window

REF = datetime(2026, 3, 2, 17, 5, tzinfo=UTC)


def _users(n: int, seed: int = 0) -> list[DueUser]:
    return [DueUser(str(uuid.UUID(int=seed * 10_000_000 + i)), f"+1555{i:07d}", "02-sample-drill") for i in range(n)]


def test_reference_time_is_the_logical_date_when_the_run_has_one_else_the_trigger_time():
    triggered = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)
    # a scheduled run, a backfill, `airflow dags test schedule_next_drills <date>`: the logical date
    assert scheduling.reference_time(REF, REF) == REF
    assert scheduling.reference_time(REF, triggered) == REF
    # a manual trigger without a logical date (Airflow 3): when it was triggered
    assert scheduling.reference_time(None, triggered) == triggered
    with pytest.raises(ValueError, match="without logical date"):
        scheduling.reference_time(None, None)


def test_idempotency_key_is_per_user_drill_and_day():
    assert (
        scheduling.idempotency_key("u1", "02-sample-drill", date(2026, 3, 2))
        == "start-drill:u1:02-sample-drill:2026-03-02"
    )


@pytest.mark.parametrize(
    ("spread", "slots", "width"),
    [
        (180, 60, timedelta(minutes=3)),
        (30, 30, timedelta(minutes=1)),
        (1, 1, timedelta(minutes=1)),
        (0, 1, timedelta(0)),
        (1440, 60, timedelta(minutes=24)),
    ],
)
def test_window_slots_are_bounded(spread, slots, width):
    window = Window.for_run(REF, spread)
    assert window.slots == slots <= scheduling.MAX_SLOTS
    assert window.slot_width == width
    assert window.end == REF + timedelta(minutes=spread)


def test_spread_stays_inside_the_window_and_is_uniform():
    window = Window.for_run(REF, 180)
    sends = scheduling.plan(_users(12_000), window)
    assert all(REF <= s.planned_time < REF + timedelta(minutes=180) for s in sends)
    # each send's slot starts at or before its planned time and ends after it
    assert all(
        window.slot_start(s.slot) <= s.planned_time < window.slot_start(s.slot) + window.slot_width for s in sends
    )
    per_slot = Counter(s.slot for s in sends)
    assert set(per_slot) == set(range(60))
    assert min(per_slot.values()) > 120 and max(per_slot.values()) < 280  # 200 expected each
    first_half = sum(1 for s in sends if s.planned_time < REF + timedelta(minutes=90))
    assert 5_700 < first_half < 6_300


def test_planning_the_same_day_again_plans_the_same_times():
    window = Window.for_run(REF, 180)
    users = _users(500)
    assert scheduling.plan(users, window) == scheduling.plan(list(reversed(users)), window)[::-1]
    other_day = scheduling.plan(users, Window.for_run(REF + timedelta(days=1), 180))
    assert [s.planned_time - timedelta(days=1) for s in other_day] != [
        s.planned_time for s in scheduling.plan(users, window)
    ]


def _specs(sends, window, now=REF - timedelta(hours=1), **policy):
    counts = Counter(s.slot for s in sends)
    return scheduling.slot_specs(counts, window, scheduling.Policy(planned_at=now, **policy), now)


def test_spread_zero_sends_everything_at_once():
    window = Window.for_run(REF, 0)
    sends = scheduling.plan(_users(100), window)
    assert {s.planned_time for s in sends} == {REF} and {s.slot for s in sends} == {0}
    assert _specs(sends, window, rate_limited=True, max_send_delay=timedelta(minutes=60)) == [
        {
            "slot": 0,
            "pks": ["2026-03-02T170500#slot000"],
            "send_at": REF.isoformat(),
            "slot_end": REF.isoformat(),
            "window_end": REF.isoformat(),
            "send_date": "2026-03-02",
            "users": 100,
            "max_send_delay_s": 3600.0,
            "max_per_second": None,  # nothing to pace
        }
    ]


def test_100000_users_make_at_most_60_mapped_tasks():
    window = Window.for_run(REF, 180)
    sends = scheduling.plan(_users(100_000), window)
    specs = _specs(sends, window, rate_limited=True)
    assert len(specs) == 60  # the number of mapped send_slot task instances
    assert sum(s["users"] for s in specs) == 100_000
    assert len({pk for s in specs for pk in s["pks"]}) == 60
    assert all(datetime.fromisoformat(s["send_at"]) == window.slot_start(s["slot"]) for s in specs)
    # the pacing ceiling: 2 x the mean rate (100,000 / 10,800 s = 9.26/s) + 5, rounded up
    assert {s["max_per_second"] for s in specs} == {24}


def test_slots_already_begun_when_the_plan_ends_make_one_task():
    window = Window.for_run(REF, 180)
    sends = scheduling.plan(_users(6_000), window)
    now = REF + timedelta(minutes=40)  # slots 0..13 have begun (3-minute slots)
    specs = _specs(sends, window, now=now)
    assert specs[0]["pks"] == [window.slot_pk(s) for s in range(14)] and specs[0]["slot"] == 0
    assert specs[0]["slot_end"] == window.slot_start(14).isoformat()
    assert [s["pks"] for s in specs[1:]] == [[window.slot_pk(s)] for s in range(14, 60)]
    assert sum(s["users"] for s in specs) == 6_000
    assert {s["max_per_second"] for s in specs} == {None}  # not rate limited: the harness's default


def test_only_non_empty_slots_are_mapped():
    window = Window.for_run(REF, 180)
    specs = _specs(scheduling.plan(_users(3), window), window)
    assert 1 <= len(specs) <= 3 and sum(s["users"] for s in specs) == 3


def test_the_late_guard():
    guard = timedelta(minutes=60)
    assert not scheduling.is_late(REF, REF + guard, guard)  # exactly the guard: still sent
    assert scheduling.is_late(REF, REF + guard + timedelta(microseconds=1), guard)
    assert not scheduling.is_late(REF, REF + timedelta(days=9), None)  # no guard


def test_items_sort_by_planned_time_whatever_the_microseconds():
    window = Window.for_run(REF, 180)
    sends = scheduling.plan(_users(2_000), window)
    assert sorted(sends, key=scheduling.sort_key) == sorted(sends, key=lambda s: (s.planned_time, s.user_id))
    on_the_second = scheduling.PlannedSend("u", "p", "d", "k", REF, 0)  # isoformat() would drop ".000000"
    assert scheduling.sort_key(on_the_second) == "2026-03-02T17:05:00.000000Z#u"
