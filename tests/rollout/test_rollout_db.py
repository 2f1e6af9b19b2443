"""The rollout against real PostgreSQL: placement, shifting, filters, idempotency, dry run, refusals."""

from __future__ import annotations

import threading
import time

import pytest
from rollout_seed import (
    add_user_like_ingestion,
    catalog,
    orders,
    out_of_step,
    seed_users,
    snapshot,
    statuses,
    user_ids_of_employer,
    users_with,
)

from drill_progress import ids
from drill_progress.rollout import add_drill as rollout
from drill_progress.rollout.add_drill import RolloutRefused, roll_out

SAMPLE = ["01-sample-drill", "02-sample-drill", "03-sample-drill"]


def test_default_placement_appends_for_every_user(drill_db):
    seed_users(drill_db.engine, 25)
    started = time.monotonic()
    summary = roll_out(drill_db.engine, drill_slug="04-new", drill_name="New drill", batch_size=10)
    wall = time.monotonic() - started

    assert catalog(drill_db.engine)[-1] == ("04-new", "New drill", 3)
    assert all(order == [*SAMPLE, "04-new"] for order in orders(drill_db.engine).values())
    assert len(orders(drill_db.engine)) == 25
    assert out_of_step(drill_db.engine) == 0
    assert {
        k: summary[k]
        for k in (
            "place_in_sequence",
            "catalog",
            "catalog_drills_shifted",
            "users_scanned",
            "users_matched",
            "rows_inserted",
            "statuses_moved",
            "batches",
            "dry_run",
        )
    } == {
        "place_in_sequence": 3,
        "catalog": "added",
        "catalog_drills_shifted": 0,
        "users_scanned": 25,
        "users_matched": 25,
        "rows_inserted": 25,
        "statuses_moved": 0,
        "batches": 3,
        "dry_run": False,
    }
    assert 0 < summary["seconds"] <= wall + 0.0005  # its own duration (rounded to ms), inside ours


def test_new_rows_are_not_started_and_have_the_deterministic_ids(drill_db):
    seed_users(drill_db.engine, 3)
    roll_out(drill_db.engine, drill_slug="04-new", drill_name="New")
    rows = [r for r in statuses(drill_db.engine) if r[1] == "04-new"]
    assert len(rows) == 3
    for user_id, _, place, row_id, started, completed in rows:
        assert place == 3 and started is None and completed is None
        assert row_id == str(ids.status_id(user_id, "04-new"))


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        (0, ["mid", *SAMPLE]),
        (1, ["01-sample-drill", "mid", "02-sample-drill", "03-sample-drill"]),
        (2, ["01-sample-drill", "02-sample-drill", "mid", "03-sample-drill"]),
    ],
)
def test_explicit_place_shifts_later_drills_and_keeps_each_users_order(drill_db, place, expected):
    seed_users(drill_db.engine, 23)
    before = {(r[0], r[1]): r[3:] for r in statuses(drill_db.engine)}  # (user, slug) -> id, started, completed
    summary = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=place, batch_size=5)

    assert [slug for slug, _, _ in catalog(drill_db.engine)] == expected
    assert [p for _, _, p in catalog(drill_db.engine)] == [0, 1, 2, 3]
    assert all(order == expected for order in orders(drill_db.engine).values())
    assert out_of_step(drill_db.engine) == 0
    after = {(r[0], r[1]): r[3:] for r in statuses(drill_db.engine) if r[1] != "mid"}
    assert after == before  # ids and progress stay with their drill
    assert summary["catalog_drills_shifted"] == 3 - place
    assert summary["statuses_moved"] == 23 * (3 - place)
    assert summary["rows_inserted"] == 23


def test_two_middle_rollouts_in_a_row(drill_db):
    seed_users(drill_db.engine, 8)
    roll_out(drill_db.engine, drill_slug="b", drill_name="B", place_in_sequence=1)
    roll_out(drill_db.engine, drill_slug="a", drill_name="A", place_in_sequence=0)
    expected = ["a", "01-sample-drill", "b", "02-sample-drill", "03-sample-drill"]
    assert [s for s, _, _ in catalog(drill_db.engine)] == expected
    assert all(order == expected for order in orders(drill_db.engine).values())
    assert out_of_step(drill_db.engine) == 0


def test_a_place_past_the_end_appends(drill_db):
    seed_users(drill_db.engine, 4)
    summary = roll_out(drill_db.engine, drill_slug="far", drill_name="Far", place_in_sequence=50)
    assert summary["place_in_sequence"] == 3 and catalog(drill_db.engine)[-1] == ("far", "Far", 3)
    # the same params again: the slug is last, so 50 still resolves to its place -> no-op
    again = roll_out(drill_db.engine, drill_slug="far", drill_name="Far", place_in_sequence=50)
    assert again["rows_inserted"] == 0 and again["catalog"] == "already present"


def test_employer_filter_gives_the_drill_only_to_listed_employers(drill_db):
    seed_users(drill_db.engine, 30, employers=3)  # employer ids 0, 1, 2
    add_user_like_ingestion(drill_db.engine, "string-employer", employer_id=None)
    with drill_db.engine.begin() as conn:  # employer id stored as a JSON string still matches
        conn.exec_driver_sql("""UPDATE users SET profile = '{"account_info": {"employer_id": "2"}}'
                                WHERE user_id = md5('string-employer')::uuid""")
    wanted = user_ids_of_employer(drill_db.engine, 1) | user_ids_of_employer(drill_db.engine, 2)
    assert len(wanted) == 21

    summary = roll_out(
        drill_db.engine,
        drill_slug="mid",
        drill_name="Middle",
        place_in_sequence=1,
        only_employer_ids=[2, 1],
        batch_size=7,
    )
    assert users_with(drill_db.engine, "mid") == wanted
    assert summary["users_matched"] == 21 and summary["rows_inserted"] == 21 and summary["users_scanned"] == 31
    # left-out users keep their order, with a gap at the new drill's place
    for user_id, order in orders(drill_db.engine).items():
        assert order == (
            ["01-sample-drill", "mid", "02-sample-drill", "03-sample-drill"] if user_id in wanted else SAMPLE
        )
    assert out_of_step(drill_db.engine) == 0

    # later: the same drill for employer 0 as well
    more = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1, only_employer_ids=[0])
    assert more["rows_inserted"] == 10 and more["catalog"] == "already present"
    assert len(users_with(drill_db.engine, "mid")) == 31


def test_rerun_inserts_nothing_and_changes_nothing(drill_db):
    seed_users(drill_db.engine, 12)
    roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)
    before = snapshot(drill_db.engine)
    again = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)
    assert snapshot(drill_db.engine) == before
    assert again["rows_inserted"] == 0 and again["statuses_moved"] == 0 and again["users_matched"] == 12
    assert again["catalog"] == "already present" and again["catalog_drills_shifted"] == 0
    without_place = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle")
    assert without_place["rows_inserted"] == 0 and snapshot(drill_db.engine) == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"place_in_sequence": 0}, id="other-place"),
        pytest.param({"place_in_sequence": 3}, id="other-place-at-end"),
        pytest.param({"drill_name": "Renamed"}, id="other-name"),
    ],
)
def test_rerolling_a_catalog_drill_differently_is_refused(drill_db, change):
    seed_users(drill_db.engine, 5)
    roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)
    add_user_like_ingestion(drill_db.engine, "late")  # would get a row if the run went ahead
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM drill_statuses WHERE drill_slug = 'mid'")
    before = snapshot(drill_db.engine)
    with pytest.raises(RolloutRefused, match="already in the catalog"):
        roll_out(drill_db.engine, **{"drill_slug": "mid", "drill_name": "Middle", **change})
    with pytest.raises(RolloutRefused, match="already in the catalog"):
        roll_out(drill_db.engine, **{"drill_slug": "mid", "drill_name": "Middle", "dry_run": True, **change})
    assert snapshot(drill_db.engine) == before


@pytest.mark.parametrize("place", [None, 1])
def test_dry_run_reports_and_changes_nothing(drill_db, place):
    seed_users(drill_db.engine, 30, employers=3)
    before = snapshot(drill_db.engine)
    summary = roll_out(
        drill_db.engine,
        drill_slug="mid",
        drill_name="Middle",
        place_in_sequence=place,
        only_employer_ids=[1],
        dry_run=True,
    )
    assert snapshot(drill_db.engine) == before
    assert summary["dry_run"] is True and summary["users_matched"] == 10 and summary["rows_would_insert"] == 10
    assert summary["rows_inserted"] == 0
    assert summary["place_in_sequence"] == (3 if place is None else 1)
    assert summary["catalog"] == ("would append" if place is None else "would insert")
    assert summary["statuses_would_move"] == (0 if place is None else 60)

    roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=place, only_employer_ids=[1])
    after_rollout = snapshot(drill_db.engine)
    again = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", dry_run=True)  # all employers now
    assert again["catalog"] == "already present" and again["rows_would_insert"] == 20
    assert snapshot(drill_db.engine) == after_rollout


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"drill_slug": "x'; DROP TABLE users; --", "drill_name": "X"}, id="slug-sql-injection"),
        pytest.param({"drill_slug": "<script>", "drill_name": "X"}, id="slug-script"),
        pytest.param({"drill_slug": "UPPER", "drill_name": "X"}, id="slug-upper"),
        pytest.param({"drill_slug": "s" * 65, "drill_name": "X"}, id="slug-too-long"),
        pytest.param({"drill_slug": "", "drill_name": "X"}, id="slug-empty"),
        pytest.param({"drill_slug": "ok", "drill_name": "x'; DROP TABLE users; --"}, id="name-sql-injection"),
        pytest.param({"drill_slug": "ok", "drill_name": "<script>alert(1)</script>"}, id="name-script"),
        pytest.param({"drill_slug": "ok", "drill_name": "n" * 500}, id="name-too-long"),
        pytest.param({"drill_slug": "ok", "drill_name": ""}, id="name-empty"),
        pytest.param({"drill_slug": "ok", "drill_name": "X", "place_in_sequence": -1}, id="place-negative"),
        pytest.param(
            {"drill_slug": "ok", "drill_name": "X", "place_in_sequence": "0; DROP TABLE drills"},
            id="place-sql-injection",
        ),
        pytest.param(
            {"drill_slug": "ok", "drill_name": "X", "only_employer_ids": ["1) OR (1=1"]}, id="employers-sql-injection"
        ),
        pytest.param({"drill_slug": "ok", "drill_name": "X", "dry_run": "no"}, id="dry-run-string"),
    ],
)
def test_invalid_and_hostile_params_change_nothing(drill_db, params):
    seed_users(drill_db.engine, 6)
    before = snapshot(drill_db.engine)
    with pytest.raises(RolloutRefused, match="nothing was changed"):
        roll_out(drill_db.engine, **params)
    assert snapshot(drill_db.engine) == before


def test_users_created_after_the_rollout_get_the_drill(drill_db):
    seed_users(drill_db.engine, 5)
    roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)
    late = add_user_like_ingestion(drill_db.engine, "created-later", employer_id=9)
    assert orders(drill_db.engine)[late] == ["01-sample-drill", "mid", "02-sample-drill", "03-sample-drill"]
    assert out_of_step(drill_db.engine) == 0


def test_users_created_by_the_ingestion_package_after_the_rollout_get_the_drill(drill_db):
    fold = pytest.importorskip("drill_progress.ingest.fold")
    store = pytest.importorskip("drill_progress.ingest.store")
    seed_users(drill_db.engine, 3)
    roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)
    with drill_db.engine.begin() as conn:
        user = fold.new_user("+15550001234", store.load_catalog(conn))
        user.seq, user.profile, user.changed = 1, {"validated": True}, True
        store.write_users(conn, {user.phone_number: user})
    assert orders(drill_db.engine)[user.user_id] == ["01-sample-drill", "mid", "02-sample-drill", "03-sample-drill"]
    again = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)
    assert again["rows_inserted"] == 0  # same deterministic id rule, and nothing missing


def test_sweep_catches_a_user_created_from_the_old_catalog_during_the_run(drill_db, monkeypatch):
    """Ingestion read the catalog before the new drill was committed and created its user after the
    batches had passed it: the user has the old places and lacks the drill. The sweep fixes both."""
    seed_users(drill_db.engine, 6)
    real = rollout._add_to_users

    def batches_then_a_stale_user(engine, *args, **kwargs):
        totals = real(engine, *args, **kwargs)
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO users (user_id, seq) VALUES (md5('stale')::uuid, 1)")
            conn.exec_driver_sql(
                "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence) "
                "SELECT gen_random_uuid(), md5('stale')::uuid, s, p "
                "FROM unnest(%(s)s::text[]) WITH ORDINALITY AS c(s, n), LATERAL (SELECT n - 1 AS p) AS x",
                {"s": SAMPLE},
            )
        return totals

    monkeypatch.setattr(rollout, "_add_to_users", batches_then_a_stale_user)
    summary = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=0)
    assert summary["rows_inserted_by_sweep"] == 1 and summary["rows_inserted"] == 7
    assert all(order == ["mid", *SAMPLE] for order in orders(drill_db.engine).values())
    assert out_of_step(drill_db.engine) == 0


def test_the_sweep_waits_for_transactions_older_than_the_catalog_change(drill_db):
    with drill_db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # a transaction is open from here on
        with drill_db.engine.connect() as other:
            since = other.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        assert rollout._wait_for_older_transactions(drill_db.engine, since, timeout=0.6) is False
        conn.rollback()
    assert rollout._wait_for_older_transactions(drill_db.engine, since, timeout=5) is True


def test_a_failed_run_is_completed_by_a_rerun(drill_db, monkeypatch):
    seed_users(drill_db.engine, 20)
    real = rollout._batch
    calls = []

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("connection lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(rollout, "_batch", fail_on_third)
    with pytest.raises(RuntimeError, match="connection lost"):
        roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1, batch_size=5, workers=1)
    # half-way: the catalog is shifted, some users are done; every user's order is still consistent
    assert len(users_with(drill_db.engine, "mid")) == 10
    assert all(
        order in (SAMPLE, ["01-sample-drill", "mid", "02-sample-drill", "03-sample-drill"])
        for order in orders(drill_db.engine).values()
    )
    monkeypatch.setattr(rollout, "_batch", real)

    summary = roll_out(drill_db.engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1, batch_size=5)
    assert summary["rows_inserted"] == 10 and summary["catalog"] == "already present"
    assert all(
        order == ["01-sample-drill", "mid", "02-sample-drill", "03-sample-drill"]
        for order in orders(drill_db.engine).values()
    )
    assert out_of_step(drill_db.engine) == 0


def test_one_rollout_at_a_time(drill_db):
    seed_users(drill_db.engine, 2)
    with drill_db.engine.connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%(k)s)", {"k": rollout.ADVISORY_LOCK_KEY})
        holder.commit()
        with pytest.raises(RuntimeError, match="another drill rollout is running"):
            roll_out(drill_db.engine, drill_slug="x", drill_name="X")
        holder.exec_driver_sql("SELECT pg_advisory_unlock(%(k)s)", {"k": rollout.ADVISORY_LOCK_KEY})
        holder.commit()
    assert "x" not in [s for s, _, _ in catalog(drill_db.engine)]
    assert roll_out(drill_db.engine, drill_slug="x", drill_name="X")["rows_inserted"] == 2


def test_a_batch_waits_for_a_concurrent_writer_and_then_completes(drill_db):
    """A user row locked by ingestion (FOR UPDATE) only delays its batch; nothing is lost."""
    seed_users(drill_db.engine, 10)
    done = threading.Event()
    with drill_db.engine.connect() as ingest:
        ingest.exec_driver_sql("SELECT user_id FROM users ORDER BY user_id LIMIT 1 FOR UPDATE")
        worker = threading.Thread(
            target=lambda: (roll_out(drill_db.engine, drill_slug="x", drill_name="X", settle_timeout=0.5), done.set())
        )
        worker.start()
        assert not done.wait(1.0)  # blocked behind the locked user
        ingest.rollback()
    worker.join(30)
    assert done.is_set()
    assert len(users_with(drill_db.engine, "x")) == 10
