"""Migration 0010 carries today's data over: each drill's audience inferred from who got it, the
rows the old rollout leaked to users created later removed (unless started), against a real
PostgreSQL migrated up to 0009 first."""

from __future__ import annotations

import shutil

from drill_progress.next_drill import next_drills
from drill_progress.setup import migrations

EARLY, DRILL_ADDED, LATE = "2026-01-01 10:00+00", "2026-02-01 10:00+00", "2026-03-01 10:00+00"
STARTED = "2026-03-02 10:00+00"


def _apply_up_to_0009(engine, tmp_path) -> None:
    for migration in migrations.discover():
        if migration.version < 10:
            shutil.copy(migration.path, tmp_path / migration.path.name)
    migrations.apply_migrations(engine, tmp_path)


def _user(conn, key: str, created: str, employer) -> str:
    account = "null" if employer is None else f'{{"employer_id": {employer}}}'
    return conn.exec_driver_sql(
        "INSERT INTO users (user_id, seq, profile, created_at) "
        "VALUES (md5(%(k)s)::uuid, 1, ('{\"account_info\": ' || %(a)s || '}')::jsonb, %(c)s) RETURNING user_id::text",
        {"k": key, "a": account, "c": created},
    ).scalar_one()


def _rows(conn, user: str, slugs: list[str], started: tuple[str, ...] = (), completed: tuple[str, ...] = ()) -> None:
    for slug in slugs:
        conn.exec_driver_sql(
            "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time) "
            "SELECT gen_random_uuid(), %(u)s, %(s)s, place_in_sequence, %(st)s, %(c)s FROM drills WHERE drill_slug = %(s)s",
            {
                "u": user,
                "s": slug,
                "st": STARTED if slug in started or slug in completed else None,
                "c": STARTED if slug in completed else None,
            },
        )


def test_audiences_are_inferred_and_leaked_rows_removed(empty_db, tmp_path):
    engine = empty_db.engine
    _apply_up_to_0009(engine, tmp_path)
    sample = ["01-sample-drill", "02-sample-drill", "03-sample-drill"]
    with engine.begin() as conn:
        early = {name: _user(conn, name, EARLY, e) for name, e in (("e1", 1), ("e1-text", '"1"'), ("e2", 2))}
        for user in early.values():
            _rows(conn, user, sample)
        # the old rollout: 'special' for employer 1, then 'general' for everyone, 'ghost' for an employer
        # without users yet
        for slug, place, added in (
            ("special", 3, DRILL_ADDED),
            ("general", 4, "2026-02-02 10:00+00"),
            ("ghost", 5, "2026-02-03 10:00+00"),
        ):
            conn.exec_driver_sql(
                "INSERT INTO drills (drill_slug, drill_name, place_in_sequence, created_at) VALUES (%(s)s, %(s)s, %(p)s, %(c)s)",
                {"s": slug, "p": place, "c": added},
            )
        _rows(conn, early["e1"], ["special", "general"])
        _rows(conn, early["e1-text"], ["special", "general"])
        _rows(conn, early["e2"], ["general"])
        # users created later got every catalog drill, whatever their employer (the leak)
        late = {name: _user(conn, name, LATE, e) for name, e in (("l1", 1), ("l2", 2), ("l3", 2), ("l4", None))}
        everything = [*sample, "special", "general", "ghost"]
        for name, user in late.items():
            if name == "l3":  # started the leaked drill (history); everything else of its own done
                _rows(conn, user, everything, started=("special",), completed=(*sample, "general"))
            else:
                _rows(conn, user, everything)

    migrations.apply_migrations(engine)  # 0010 (and any later one)

    with engine.connect() as conn:
        audiences = dict(conn.exec_driver_sql("SELECT drill_slug, employer_ids FROM drills").all())
        rows = {
            (user, slug)
            for user, slug in conn.exec_driver_sql("SELECT user_id::text, drill_slug FROM drill_statuses").all()
        }
        nexts = next_drills(conn, [*early.values(), *late.values()])
    assert audiences == {
        "01-sample-drill": None,
        "02-sample-drill": None,
        "03-sample-drill": None,
        "special": ["1"],  # the employer of the earlier users who got it (1 and "1" alike)
        "general": None,  # every earlier user got it
        "ghost": [],  # targeted, but none of the earlier users got it: for nobody until re-rolled
    }
    has = {name: {slug for u, slug in rows if u == user} for name, user in {**early, **late}.items()}
    assert has == {
        "e1": {*sample, "special", "general"},
        "e1-text": {*sample, "special", "general"},
        "e2": {*sample, "general"},
        "l1": {*sample, "special", "general"},  # employer 1: keeps it
        "l2": {*sample, "general"},  # leaked, never started: removed
        "l3": {*sample, "special", "general"},  # leaked but started: history, kept
        "l4": {*sample, "general"},
    }
    # ... and never sent again: l3's only unfinished row is outside its audience
    assert str(late["l3"]) not in nexts
    assert nexts[late["l1"]] == "01-sample-drill" and nexts[early["e2"]] == "01-sample-drill"
