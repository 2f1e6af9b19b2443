"""Read models of the Drill Progress page: plain functions of an Engine returning JSON-ready dicts.

No Airflow here (testable on its own). Phone numbers never leave this module in full: rejected
records' `raw_data` is never selected, and their partition key (the phone number) and reason are
masked with `drill_progress.privacy`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from drill_progress.db import run
from drill_progress.privacy import mask_phone, mask_phones_in


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(engine: Engine, template: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [{k: _json(v) for k, v in row.items()} for row in run(conn, template, params).mappings()]


def employers(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, "ui/employers.sql")


def in_progress(report_date: str, computed_at: list[str]) -> bool:
    """A report day whose rows were computed before it ended: today's figures so far
    (drill_progress_monitor), not yet replaced by drill_progress_report's whole day."""
    day_end = datetime.combine(date.fromisoformat(report_date), time(0), tzinfo=UTC) + timedelta(days=1)
    return bool(computed_at) and max(datetime.fromisoformat(c) for c in computed_at) < day_end


def completions(engine: Engine, employer_id: str, days: int = 30, until: date | None = None) -> dict[str, Any]:
    """Completions per report day for one employer: the total and one series per drill, and which
    day (the latest) is still in progress (`live`: its date and when its figures were computed)."""
    rows = _rows(engine, "ui/completions.sql", {"employer_id": employer_id, "days": days, "until": until})
    dates = sorted({r["report_date"] for r in rows})
    index = {d: i for i, d in enumerate(dates)}
    total = [0] * len(dates)
    cumulative = [0] * len(dates)
    by_drill: dict[str, list[int]] = defaultdict(lambda: [0] * len(dates))
    computed: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        i = index[r["report_date"]]
        total[i] += r["completed_day"]
        cumulative[i] += r["completed_cumulative"]
        by_drill[r["drill_slug"]][i] = r["completed_day"]
        computed[r["report_date"]].append(r["computed_at"])
    live = None
    if dates and in_progress(dates[-1], computed[dates[-1]]):
        live = {"date": dates[-1], "computed_at": max(computed[dates[-1]])}
    return {
        "employer_id": employer_id,
        "dates": dates,
        "completed": total,
        "completed_cumulative": cumulative,
        "by_drill": dict(sorted(by_drill.items())),
        "live": live,
    }


def funnel(engine: Engine, employer_id: str, report_date: date | None = None) -> dict[str, Any]:
    """One employer's enrolled -> started -> completed per drill on one report day; `live` when
    that day is still in progress (today's figures so far)."""
    rows = _rows(engine, "ui/funnel.sql", {"employer_id": employer_id, "report_date": report_date})
    day = rows[0]["report_date"] if rows else (report_date.isoformat() if report_date else None)
    computed = [r["computed_at"] for r in rows]
    drills = [{k: v for k, v in r.items() if k not in {"report_date", "computed_at"}} for r in rows]
    live = bool(day and in_progress(day, computed))
    return {"employer_id": employer_id, "report_date": day, "live": live, "drills": drills}


def checkpoints(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, "ui/checkpoints.sql")


def rejections(engine: Engine, hours: int = 24, limit: int = 50) -> dict[str, Any]:
    """Records set aside in the last `hours`: counts per (masked) reason and the latest records."""
    params = {"hours": hours, "limit": limit}
    reasons: dict[str, dict[str, Any]] = {}
    for r in _rows(engine, "ui/rejection_reasons.sql", params):
        reason = mask_phones_in(r["reason"])
        entry = reasons.setdefault(reason, {"reason": reason, "records": 0, "last_rejected_at": None})
        entry["records"] += r["records"]
        entry["last_rejected_at"] = max(filter(None, (entry["last_rejected_at"], r["last_rejected_at"])))
    recent = []
    for r in _rows(engine, "ui/rejections.sql", params):
        r["partition_key"] = mask_phone(r["partition_key"]) if r["partition_key"] else None
        r["reason"] = mask_phones_in(r["reason"])
        recent.append(r)
    by_reason = sorted(reasons.values(), key=lambda e: (-e["records"], e["reason"]))
    return {"hours": hours, "total": sum(e["records"] for e in by_reason), "by_reason": by_reason, "recent": recent}


def commands(engine: Engine, days: int = 14) -> dict[str, Any]:
    """Commands published per UTC day and type over the last `days` days, and the outbox backlog."""
    return {
        "days": days,
        "published": _rows(engine, "ui/commands.sql", {"days": days}),
        "pending": _rows(engine, "ui/commands_pending.sql"),
    }


def lag(engine: Engine, hours: int = 6) -> dict[str, Any]:
    """Ingestion lag samples of the last `hours` hours per stream (drill_progress_monitor)."""
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in _rows(engine, "ui/lag.sql", {"hours": hours}):
        streams[r.pop("stream")].append(r)
    return {"hours": hours, "streams": dict(streams)}
