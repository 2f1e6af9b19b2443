"""A small hand-built aggregate for the report tests, and the figures worked out by hand.

Report day D = 2026-03-10: day_start 03-10 00:00Z, day_end 03-11 00:00Z, "inactive" means
last_interacted_time before 03-04 00:00Z. Catalog: 01/02/03-sample-drill.

employer "7"
  A  created 03-01, last 03-10 12:00. 01 started 03-01 10:00, completed 03-03 10:00 (172800 s);
     02 started 03-10 09:00, completed 03-10 10:00 (3600 s)
  B  created 03-01, last 03-02 08:00 (inactive). 01 started 03-02 08:00, not completed (stalled)
  C  created 03-10 05:00, last 03-10 20:00. 01 started 03-10 06:00, completed 03-10 07:30 (5400 s)
  D  created 03-12 09:00, last 03-12 11:00. 01 started 03-12 10:00 -> unknown before 03-12: not enrolled
  E  row created late (2026-11-28, a replay), last 03-09 12:00. 01 started 03-05 12:00, completed
     03-09 12:00 (345600 s): known since 03-05 12:00 -> enrolled
employer "unknown"
  F  no account_info. created 03-01, last 03-01 09:00 (inactive), never started
  G  employer_id "" -> unknown. created 03-08, last 03-10 23:59:59. 01 started 03-10 23:59:59,
     completed 03-11 00:00:00 (= day_end: NOT in D, in D+1; 1 s)
employer "8"
  H  is_demo: excluded everywhere. 01 started 03-02, completed 03-03
  I  employer_id 8 (a JSON number). created 03-01, last 03-04 00:00:00 (exactly the bound: active on D,
     inactive on D+1). 01 started 03-03 00:00, not completed
  J  created 03-01, last 03-06. 01 completed 03-06 but started_time cleared (e.g. opted out afterwards):
     counts as completed, not as started, not in the rate nor the median
"""

from __future__ import annotations

import json
import uuid
from datetime import date

DAY = date(2026, 3, 10)
NEXT_DAY = date(2026, 3, 11)

# user -> (profile, created_at, last_interacted_time, {drill: (started_time, completed_time)})
USERS = {
    "A": (
        {"account_info": {"employer_id": 7, "unit_id": 1}},
        "2026-03-01T00:00Z",
        "2026-03-10T12:00Z",
        {
            "01-sample-drill": ("2026-03-01T10:00Z", "2026-03-03T10:00Z"),
            "02-sample-drill": ("2026-03-10T09:00Z", "2026-03-10T10:00Z"),
        },
    ),
    "B": (
        {"account_info": {"employer_id": "7"}},
        "2026-03-01T00:00Z",
        "2026-03-02T08:00Z",
        {"01-sample-drill": ("2026-03-02T08:00Z", None)},
    ),
    "C": (
        {"account_info": {"employer_id": 7}},
        "2026-03-10T05:00Z",
        "2026-03-10T20:00Z",
        {"01-sample-drill": ("2026-03-10T06:00Z", "2026-03-10T07:30Z")},
    ),
    "D": (
        {"account_info": {"employer_id": 7}},
        "2026-03-12T09:00Z",
        "2026-03-12T11:00Z",
        {"01-sample-drill": ("2026-03-12T10:00Z", None)},
    ),
    "E": (
        {"account_info": {"employer_id": 7}},
        "2026-11-28T00:00Z",
        "2026-03-09T12:00Z",
        {"01-sample-drill": ("2026-03-05T12:00Z", "2026-03-09T12:00Z")},
    ),
    "F": ({"validated": False}, "2026-03-01T00:00Z", "2026-03-01T09:00Z", {}),
    "G": (
        {"account_info": {"employer_id": ""}},
        "2026-03-08T00:00Z",
        "2026-03-10T23:59:59Z",
        {"01-sample-drill": ("2026-03-10T23:59:59Z", "2026-03-11T00:00:00Z")},
    ),
    "H": (
        {"is_demo": True, "account_info": {"employer_id": 8}},
        "2026-03-01T00:00Z",
        "2026-03-03T00:00Z",
        {"01-sample-drill": ("2026-03-02T00:00Z", "2026-03-03T00:00Z")},
    ),
    "I": (
        {"account_info": {"employer_id": 8}},
        "2026-03-01T00:00Z",
        "2026-03-04T00:00:00Z",
        {"01-sample-drill": ("2026-03-03T00:00Z", None)},
    ),
    "J": (
        {"account_info": {"employer_id": 8}},
        "2026-03-01T00:00Z",
        "2026-03-06T00:00Z",
        {"01-sample-drill": (None, "2026-03-06T00:00Z")},
    ),
}

COLUMNS = (
    "users_enrolled",
    "started_day",
    "started_cumulative",
    "completed_day",
    "completed_cumulative",
    "completion_rate",
    "median_completion_seconds",
    "inactive_7d",
    "stalled_7d",
)

# (employer, drill) -> figures in COLUMNS order, worked out by hand from the docstring above.
EXPECTED_DAY = {
    # employer 7: A, B, C, E enrolled (D not yet known)
    ("7", "01-sample-drill"): (4, 1, 4, 1, 3, 0.75, 172800.0, 1, 1),  # median of 172800, 5400, 345600
    ("7", "02-sample-drill"): (4, 1, 1, 1, 1, 1.0, 3600.0, 1, 0),
    ("7", "03-sample-drill"): (4, 0, 0, 0, 0, None, None, 1, 0),
    # 8: I, J (H is a demo user)
    ("8", "01-sample-drill"): (2, 0, 1, 0, 1, 0.0, None, 0, 0),
    ("8", "02-sample-drill"): (2, 0, 0, 0, 0, None, None, 0, 0),
    ("8", "03-sample-drill"): (2, 0, 0, 0, 0, None, None, 0, 0),
    # unknown: F, G; G completed exactly at day_end -> not on D
    ("unknown", "01-sample-drill"): (2, 1, 1, 0, 0, 0.0, None, 1, 0),
    ("unknown", "02-sample-drill"): (2, 0, 0, 0, 0, None, None, 1, 0),
    ("unknown", "03-sample-drill"): (2, 0, 0, 0, 0, None, None, 1, 0),
}

# D+1 = 2026-03-11 (inactive: before 03-05 00:00Z): G's completion lands; I becomes inactive.
EXPECTED_NEXT_DAY = {
    ("7", "01-sample-drill"): (4, 0, 4, 0, 3, 0.75, 172800.0, 1, 1),
    ("7", "02-sample-drill"): (4, 0, 1, 0, 1, 1.0, 3600.0, 1, 0),
    ("7", "03-sample-drill"): (4, 0, 0, 0, 0, None, None, 1, 0),
    ("8", "01-sample-drill"): (2, 0, 1, 0, 1, 0.0, None, 1, 1),
    ("8", "02-sample-drill"): (2, 0, 0, 0, 0, None, None, 1, 0),
    ("8", "03-sample-drill"): (2, 0, 0, 0, 0, None, None, 1, 0),
    ("unknown", "01-sample-drill"): (2, 0, 1, 1, 1, 1.0, 1.0, 1, 0),
    ("unknown", "02-sample-drill"): (2, 0, 0, 0, 0, None, None, 1, 0),
    ("unknown", "03-sample-drill"): (2, 0, 0, 0, 0, None, None, 1, 0),
}

CATALOG = ("01-sample-drill", "02-sample-drill", "03-sample-drill")


def user_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"report-test-user-{name}")


def load(engine, users_spec: dict | None = None) -> None:
    """Insert USERS (or users_spec, same shape) into a migrated drill database, one status row per
    catalog drill per user."""
    users, phones, statuses = [], [], []
    for n, (name, (profile, created, last, drills)) in enumerate(sorted((users_spec or USERS).items())):
        uid = user_id(name)
        users.append(
            {"user_id": uid, "seq": n + 1, "profile": json.dumps(profile), "created_at": created, "last": last}
        )
        phones.append({"id": uuid.uuid5(uid, "phone"), "phone": f"+1555000{n:04d}", "user_id": uid})
        for place, slug in enumerate(CATALOG):
            started, completed = drills.get(slug, (None, None))
            statuses.append(
                {
                    "id": uuid.uuid5(uid, slug),
                    "user_id": uid,
                    "slug": slug,
                    "place": place,
                    "started": started,
                    "completed": completed,
                }
            )
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        with driver.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (user_id, seq, profile, created_at, last_interacted_time) "
                "VALUES (%(user_id)s, %(seq)s, %(profile)s::jsonb, %(created_at)s, %(last)s)",
                users,
            )
            cur.executemany(
                "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary) "
                "VALUES (%(id)s, %(phone)s, %(user_id)s, true)",
                phones,
            )
            cur.executemany(
                "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, "
                "completed_time) VALUES (%(id)s, %(user_id)s, %(slug)s, %(place)s, %(started)s, %(completed)s)",
                statuses,
            )


def as_expected(rows: list[dict]) -> dict:
    """Stored rows -> {(employer, drill): figures tuple} comparable with EXPECTED_*."""
    out = {}
    for r in rows:
        figures = []
        for c in COLUMNS:
            v = r[c]
            figures.append(float(v) if v is not None and c in {"completion_rate", "median_completion_seconds"} else v)
        out[(r["employer_id"], r["drill_slug"])] = tuple(figures)
    return out
