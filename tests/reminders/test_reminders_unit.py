"""Pure logic of the reminder window and reference time, without Airflow or a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from drill_progress.reminders import due as reminders


def test_window_defaults_and_bounds():
    win = reminders.window()
    assert (win.floor_minutes, win.ceil_minutes) == (240, 1440)
    ref = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    assert win.bounds(ref) == (datetime(2026, 3, 1, 15, 0, tzinfo=UTC), datetime(2026, 3, 2, 11, 0, tzinfo=UTC))


@pytest.mark.parametrize(("floor", "ceil"), [(240, 240), (1440, 240), (10, 5)])
def test_window_refuses_floor_not_below_ceil(floor, ceil):
    with pytest.raises(reminders.InvalidWindow, match=r"floor_minutes .* must be less than ceil_minutes"):
        reminders.window(floor, ceil)


def test_window_refuses_negative_floor():
    with pytest.raises(reminders.InvalidWindow, match="floor_minutes must be >= 0"):
        reminders.window(-1, 10)


def test_window_accepts_zero_floor_and_numeric_strings():
    assert reminders.window("0", "60") == reminders.Window(0, 60)


def test_reference_time_prefers_logical_date_then_run_after():
    scheduled = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
    triggered = datetime(2026, 3, 2, 3, 17, 42, tzinfo=UTC)
    assert reminders.reference_time(scheduled, scheduled + timedelta(seconds=3)) == scheduled
    # a manual run without a logical date, at 03:17 (outside the schedule's hours)
    assert reminders.reference_time(None, triggered) == triggered


def test_reference_time_is_utc_and_aware():
    paris = timezone(timedelta(hours=1))
    assert reminders.reference_time(datetime(2026, 3, 2, 16, 0, tzinfo=paris), None) == datetime(
        2026, 3, 2, 15, 0, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        reminders.reference_time(datetime(2026, 3, 2, 15, 0), None)
    with pytest.raises(ValueError, match="logical date or a run_after"):
        reminders.reference_time(None, None)


def test_candidate_command_is_the_contracts():
    cand = reminders.Candidate(
        "6b090220-cb8c-4d3d-b49b-dc50e37b49ff",
        "+15551230001",
        "q2",
        datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
        "reminder:6b090220-cb8c-4d3d-b49b-dc50e37b49ff:q2",
        False,
    )
    cmd = cand.command()
    assert cmd.record() == {
        "type": "TRIGGER_REMINDER",
        "payload": {
            "phone_number": "+15551230001",
            "drill_instance_id": "6b090220-cb8c-4d3d-b49b-dc50e37b49ff",
            "prompt_slug": "q2",
        },
        "idempotency_key": "reminder:6b090220-cb8c-4d3d-b49b-dc50e37b49ff:q2",
    }
    assert cmd.phone_number == "+15551230001"
