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


def test_reference_time_is_the_logical_date_for_scheduled_and_backfill_runs_else_trigger_time():
    triggered = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)
    assert scheduling.reference_time("scheduled", REF, REF) == REF
    assert scheduling.reference_time("backfill", REF, triggered) == REF
    assert scheduling.reference_time("manual", REF, triggered) == triggered
    assert scheduling.reference_time("manual", None, triggered) == triggered

    class RunType:  # airflow passes an enum
        value = "scheduled"

    assert scheduling.reference_time(RunType(), REF, triggered) == REF


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


def test_spread_zero_sends_everything_at_once():
    window = Window.for_run(REF, 0)
    sends = scheduling.plan(_users(100), window)
    assert {s.planned_time for s in sends} == {REF} and {s.slot for s in sends} == {0}
    specs = scheduling.slot_specs(sends, window)
    assert specs == [
        {
            "slot": 0,
            "pk": "2026-03-02T170500#slot000",
            "send_at": REF.isoformat(),
            "window_end": REF.isoformat(),
            "users": 100,
        }
    ]


def test_100000_users_make_at_most_60_mapped_tasks():
    window = Window.for_run(REF, 180)
    sends = scheduling.plan(_users(100_000), window)
    specs = scheduling.slot_specs(sends, window)
    assert len(specs) == 60  # the number of mapped send_slot task instances
    assert sum(s["users"] for s in specs) == 100_000
    assert len({s["pk"] for s in specs}) == 60
    assert all(datetime.fromisoformat(s["send_at"]) == window.slot_start(s["slot"]) for s in specs)


def test_only_non_empty_slots_are_mapped():
    window = Window.for_run(REF, 180)
    specs = scheduling.slot_specs(scheduling.plan(_users(3), window), window)
    assert 1 <= len(specs) <= 3 and sum(s["users"] for s in specs) == 3


def test_window_in_the_past():
    window = Window.for_run(REF, 180)
    assert not scheduling.window_is_past(window, REF + timedelta(hours=5))
    assert scheduling.window_is_past(window, REF + timedelta(hours=6, seconds=1))
    assert scheduling.window_is_past(window, REF + timedelta(days=2))
