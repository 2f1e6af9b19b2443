"""Pacing as pure logic, on a virtual clock: when each sub-batch goes out, and the per-second
ceiling; and the run's last check, planned against sent."""

from __future__ import annotations

from collections import Counter

from scheduling_support import VirtualClock

from drill_progress.scheduling import shortfall
from drill_progress.scheduling.sending import Scheduled, paced

T = 1_800_000_000.0  # a whole second


def _at(*times: float) -> list[Scheduled]:
    return [Scheduled(f"u{i}", f"+1555{i:07d}", "d", f"k{i}", t, None) for i, t in enumerate(times)]


def _run(items, clock, **kwargs) -> list[tuple[float, list[str]]]:
    return [(now, [i.user_id for i in batch]) for now, batch in paced(items, clock=clock, sleep=clock.sleep, **kwargs)]


def test_each_request_goes_out_in_the_second_of_its_planned_time():
    clock = VirtualClock(T)
    items = _at(T + 0.2, T + 0.7, T + 1.5, T + 4.25, T + 4.5, T + 9.0)
    sent = _run(items, clock)
    assert sent == [
        (T + 0.2, ["u0"]),  # the first request of a second: at its time
        (T + 1.0, ["u1"]),  # the rest of that second: at the next second (one sub-batch a second)
        (T + 2.0, ["u2"]),  # its second had its sub-batch
        (T + 4.25, ["u3"]),
        (T + 5.0, ["u4"]),
        (T + 9.0, ["u5"]),
    ]
    for now, users in sent:
        for user in users:
            planned = items[int(user[1:])].planned
            assert 0 <= now - planned < 1.0  # never early, less than a second late


def test_a_backlog_is_caught_up_at_the_ceiling_per_second():
    clock = VirtualClock(T + 100.0)  # woke 100 s late: everything is due
    items = _at(*(T + i * 0.1 for i in range(3_000)))  # 10 a second were planned, over 300 s
    sent = _run(items, clock, per_second=25, max_batch=10)
    per_second = Counter(int(now) for now, users in sent for _ in users)
    assert max(per_second.values()) == 25  # the ceiling, never more
    assert [u for _, users in sent for u in users] == [f"u{i}" for i in range(3_000)]  # in order, all
    # 25 a second against 10 a second planned: the 100 s backlog shrinks by 15 a second, gone at ~167 s
    assert per_second[int(T) + 100] == 25 and per_second[int(T) + 160] == 25
    lateness = {int(u[1:]): now - items[int(u[1:])].planned for now, users in sent for u in users}
    assert lateness[0] == 100.0 and max(lateness.values()) == 100.0
    assert all(0 <= late < 1.0 for i, late in lateness.items() if items[i].planned >= T + 170)  # on time again
    assert per_second[int(T) + 200] == 10  # the planned rate


def test_without_a_ceiling_a_backlog_goes_out_at_once_in_chunks():
    clock = VirtualClock(T + 50.0)
    sent = _run(_at(*(T + i for i in range(1_200))), clock, max_batch=500)
    assert [(now, len(users)) for now, users in sent[:3]] == [(T + 50.0, 51), (T + 51.0, 1), (T + 52.0, 1)]
    clock = VirtualClock(T + 5_000.0)
    sent = _run(_at(*(T + i for i in range(1_200))), clock, max_batch=500)
    assert [(now, len(users)) for now, users in sent] == [(T + 5_000.0, 500), (T + 5_000.0, 500), (T + 5_000.0, 200)]
    assert clock.sleeps == []


def test_nothing_to_send_sends_nothing():
    clock = VirtualClock(T)
    assert _run([], clock) == [] and clock.sleeps == []


def _summary(recorded: int) -> dict:
    return {"due_users": recorded + 7, "late_dropped": 7, "recorded": recorded, "slots": 3}


def _result(enqueued=0, already=0, late=0, active=0, stale=0, lateness=0.0) -> dict:
    items = enqueued + already + late + active + stale
    return {
        "max_lateness_s": lateness,
        "items": items,
        "enqueued": enqueued,
        "already_enqueued": already,
        "published": enqueued,
        "late_dropped": late,
        "active_again": active,
        "stale": stale,
    }


def test_planned_against_sent_counts_legitimate_drops_and_alerts_on_the_missing():
    results = [
        _result(enqueued=90, late=5, lateness=0.4),
        _result(enqueued=80, already=10, active=3, stale=2, lateness=1.25),
    ]
    report = shortfall.compare(_summary(190), results)
    assert report == {
        "planned": 197,
        "late_dropped_at_plan": 7,
        "recorded": 190,
        "send_tasks_planned": 3,
        "send_tasks_reporting": 2,
        "sent": 180,
        "published": 170,
        "late_dropped": 5,
        "active_again": 3,
        "stale": 2,
        "missing": 0,
        "sent_share_of_expected": 1.0,
        "max_lateness_s": 1.25,
        "alert": False,
    }
    # the third send task failed: its 100 requests are unaccounted for
    failed = shortfall.compare(_summary(290), results)
    assert failed["missing"] == 100 and failed["alert"] is True
    assert failed["sent_share_of_expected"] == round(180 / 280, 4)
    subject, message = shortfall.alert_text(failed, "scheduled__x")
    assert "far fewer" in subject and "100 unaccounted" in message and "2 of 3 send tasks" in message


def test_a_shortfall_within_the_tolerance_does_not_alert():
    assert shortfall.compare(_summary(1_000), [_result(enqueued=990)])["alert"] is False  # 1 %
    assert shortfall.compare(_summary(1_000), [_result(enqueued=989)])["alert"] is True
    assert shortfall.compare(_summary(3), [_result(enqueued=2)])["alert"] is True  # small runs: any
    assert shortfall.compare(_summary(0), [])["alert"] is False


def test_the_gate_is_asked_before_each_sub_batch_and_told_when_the_task_is_behind():
    clock = VirtualClock(T + 30.0)  # 30 s late
    calls: list[tuple[float, bool]] = []
    items = _at(*(T + i for i in range(40)))
    sent = _run(items, clock, per_second=10, gate=lambda behind: calls.append((clock.now, behind)))
    assert sum(len(users) for _, users in sent) == 40
    behind = [b for _, b in calls]
    assert behind[0] is True and behind[-1] is False  # catching up first, on time at the end
    # 10 a second against 1 planned: after 3 sub-batches the next request is 2 s late (< CATCH_UP_AFTER_S)
    assert behind.index(False) == 3


def test_a_slow_send_does_not_let_two_sub_batches_land_in_the_same_second():
    """Each sub-batch takes 0.8 s to reach the stream: counted by arrival, no second carries more
    than the ceiling (the second a sending ran into counts as used)."""
    clock = VirtualClock(T + 20.5)  # behind: a backlog at the ceiling
    landed: Counter = Counter()
    for _now, batch in paced(_at(*(T + i * 0.1 for i in range(400))), per_second=12, clock=clock, sleep=clock.sleep):
        clock.now += 0.8  # the database and PutRecords
        landed[int(clock.now)] += len(batch)
    assert sum(landed.values()) == 400 and max(landed.values()) <= 12
