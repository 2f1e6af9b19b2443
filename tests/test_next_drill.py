"""The next-drill rule, as pure logic and as the shared SQL template (they must agree)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from itertools import product

import pytest

from drill_progress.next_drill import StatusRow, next_drill, next_drills

T = datetime(2026, 3, 2, tzinfo=UTC)
SLUGS = ("01-sample-drill", "02-sample-drill", "03-sample-drill")
# each drill: (started, completed)
STATES = [(False, False), (True, False), (True, True), (False, True)]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([(False, False)] * 3, "01-sample-drill"),
        ([(True, True), (False, False), (False, False)], "02-sample-drill"),
        ([(True, False), (False, False), (False, False)], "02-sample-drill"),
        ([(True, False), (True, True), (True, False)], "01-sample-drill"),
        ([(True, True)] * 3, None),
    ],
)
def test_next_drill(states, expected):
    rows = [StatusRow(s, i, T if st else None, T if c else None) for i, (s, (st, c)) in enumerate(zip(SLUGS, states))]
    assert next_drill(reversed(rows)) == expected


def test_sql_agrees_with_python_for_every_combination(drill_db):
    cases = {}
    with drill_db.engine.begin() as conn:
        for combo in product(STATES, repeat=3):
            user_id = str(uuid.uuid4())
            conn.exec_driver_sql("INSERT INTO users (user_id, seq, profile) VALUES (%(u)s, 1, '{}')", {"u": user_id})
            for place, (slug, (started, completed)) in enumerate(zip(SLUGS, combo)):
                conn.exec_driver_sql(
                    "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time)"
                    " VALUES (gen_random_uuid(), %(u)s, %(s)s, %(p)s, %(st)s, %(c)s)",
                    {"u": user_id, "s": slug, "p": place, "st": T if started else None, "c": T if completed else None},
                )
            rows = [
                StatusRow(s, i, T if st else None, T if c else None) for i, (s, (st, c)) in enumerate(zip(SLUGS, combo))
            ]
            cases[user_id] = next_drill(rows)
        got = next_drills(conn, list(cases))
    assert {u: got.get(u) for u in cases} == cases
