"""The last check of a `schedule_next_drills` run: were the planned START_DRILLs sent?

Every request the plan recorded ends, in a send task's result, as sent (`enqueued`, or
`already_enqueued` by an earlier attempt or run) or as a legitimate drop (`late_dropped`,
`active_again`, `stale`). What no result accounts for is **missing**: a send task that failed or
never ran, or a schedule item lost. The run alerts when the missing requests are more than
`TOLERANCE` of those recorded (and at least `MIN_MISSING`): far fewer were sent than planned.
"""

from __future__ import annotations

TOLERANCE = 0.01  # missing / recorded above which a run alerts
MIN_MISSING = 1
ACCOUNTED = ("enqueued", "already_enqueued", "late_dropped", "active_again", "stale")


def compare(summary: dict | None, results: list[dict]) -> dict:
    """Planned (recorded by the plan) against the send tasks' results; `alert` when far fewer were
    sent than planned, minus the legitimate drops."""
    recorded = int((summary or {}).get("recorded") or 0)
    totals = {name: sum(int(r.get(name) or 0) for r in results) for name in (*ACCOUNTED, "items", "published")}
    sent = totals["enqueued"] + totals["already_enqueued"]
    drops = totals["late_dropped"] + totals["active_again"] + totals["stale"]
    missing = max(0, recorded - sent - drops)
    expected = recorded - drops
    return {
        "planned": None if summary is None else int(summary.get("due_users") or 0),
        "late_dropped_at_plan": None if summary is None else int(summary.get("late_dropped") or 0),
        "recorded": recorded,
        "send_tasks_planned": None if summary is None else int(summary.get("slots") or 0),
        "send_tasks_reporting": len(results),
        "sent": sent,
        "published": totals["published"],
        "late_dropped": totals["late_dropped"],
        "active_again": totals["active_again"],
        "stale": totals["stale"],
        "missing": missing,
        "sent_share_of_expected": round(sent / expected, 4) if expected > 0 else None,
        # the pacing error: the latest a send task sent a request after its planned second
        "max_lateness_s": max((float(r.get("max_lateness_s") or 0.0) for r in results), default=0.0),
        "alert": missing >= MIN_MISSING and missing > TOLERANCE * recorded,
    }


def alert_text(report: dict, run_id: str) -> tuple[str, str]:
    subject = "Drill Progress: schedule_next_drills sent far fewer START_DRILL than planned"
    message = (
        f"Run {run_id}: {report['recorded']} START_DRILL planned, {report['sent']} sent, "
        f"{report['late_dropped']} dropped late, {report['active_again']} active again, {report['stale']} stale, "
        f"{report['missing']} unaccounted for ({report['send_tasks_reporting']} of "
        f"{report['send_tasks_planned']} send tasks reported). Clear the failed send_slot tasks (with downstream) "
        "to send what is left: nothing is sent twice."
    )
    return subject, message
