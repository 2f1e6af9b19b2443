"""Seed and inspect drill databases for the rollout tests (set-based SQL, no per-row round trips)."""

from __future__ import annotations

import json

SEED_USERS = """
INSERT INTO users (user_id, seq, profile)
SELECT md5('rollout-user-' || i)::uuid, i,
       jsonb_build_object('validated', true, 'account_info',
                          jsonb_build_object('employer_id', i %% %(employers)s, 'unit_id', 7))
FROM generate_series(%(first)s, %(first)s + %(n)s - 1) AS i
"""

# Each seeded user gets the catalog; the first drill is started (and completed for even users),
# so the tests can check that a shift keeps progress with its drill.
SEED_STATUSES = """
INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time)
SELECT gen_random_uuid(), u.user_id, d.drill_slug, d.place_in_sequence,
       CASE WHEN d.place_in_sequence = 0 THEN timestamptz '2026-01-05 10:00+00' END,
       CASE WHEN d.place_in_sequence = 0 AND u.seq %% 2 = 0 THEN timestamptz '2026-01-05 10:30+00' END
FROM users u CROSS JOIN drills d
WHERE u.seq BETWEEN %(first)s AND %(first)s + %(n)s - 1
"""


def seed_users(engine, n: int, employers: int = 3, first: int = 1) -> None:
    """n users with employer_id = seq % employers, each with the whole catalog."""
    params = {"n": n, "employers": employers, "first": first}
    with engine.begin() as conn:
        conn.exec_driver_sql(SEED_USERS, params)
        conn.exec_driver_sql(SEED_STATUSES, params)


def add_user_like_ingestion(engine, key: str, employer_id: int | None = 1) -> str:
    """A user created the way ingestion creates one: one status row per catalog drill, at its place."""
    profile = {"validated": True, "account_info": {"employer_id": employer_id}}
    with engine.begin() as conn:
        user_id = conn.exec_driver_sql(
            "INSERT INTO users (user_id, seq, profile) VALUES (md5(%(k)s)::uuid, 1, %(p)s::jsonb) RETURNING user_id",
            {"k": key, "p": json.dumps(profile)},
        ).scalar_one()
        conn.exec_driver_sql(
            "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence) "
            "SELECT gen_random_uuid(), %(u)s, drill_slug, place_in_sequence FROM drills",
            {"u": user_id},
        )
    return str(user_id)


def catalog(engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT drill_slug, drill_name, place_in_sequence FROM drills ORDER BY place_in_sequence"
            ).all()
        ]


def statuses(engine) -> list[tuple]:
    """Every status row, as comparable tuples."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT user_id::text, drill_slug, place_in_sequence, id::text, started_time, completed_time "
                "FROM drill_statuses ORDER BY user_id, place_in_sequence"
            ).all()
        ]


def snapshot(engine) -> tuple:
    return catalog(engine), statuses(engine)


def orders(engine) -> dict[str, list[str]]:
    """Each user's drills in place order."""
    out: dict[str, list[str]] = {}
    for user_id, slug, *_ in statuses(engine):
        out.setdefault(user_id, []).append(slug)
    return out


def out_of_step(engine) -> int:
    """Status rows whose place differs from their drill's catalog place (the rollout's invariant)."""
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM drill_statuses ds JOIN drills d USING (drill_slug) "
            "WHERE ds.place_in_sequence <> d.place_in_sequence"
        ).scalar_one()


def users_with(engine, slug: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT user_id::text FROM drill_statuses WHERE drill_slug = %(s)s", {"s": slug}
            ).scalars()
        )


def user_ids_of_employer(engine, employer_id: int) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT user_id::text FROM users WHERE profile #>> '{account_info,employer_id}' = %(e)s",
                {"e": str(employer_id)},
            ).scalars()
        )
