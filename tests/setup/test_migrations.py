"""Migrations against a real PostgreSQL server."""

from __future__ import annotations

import pytest

from drill_progress.setup import migrations

AGGREGATE = ("users", "phone_numbers", "drill_statuses", "drill_instances")


def _tables(engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).scalars()
        )


def test_migrations_create_the_contract_tables(empty_db):
    applied = migrations.apply_migrations(empty_db.engine)
    assert applied == [m.version for m in migrations.discover()]
    tables = _tables(empty_db.engine)
    assert set(AGGREGATE) | {"drills", "rejected_records", "stream_checkpoints", "schema_migrations"} <= tables


def test_catalog_is_seeded_in_order(drill_db):
    with drill_db.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT drill_slug, place_in_sequence FROM drills ORDER BY 2").all()
    assert [r[0] for r in rows][:3] == ["01-sample-drill", "02-sample-drill", "03-sample-drill"]


def test_applying_again_is_a_no_op(drill_db):
    assert migrations.apply_migrations(drill_db.engine) == []
    with drill_db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM drills").scalar() >= 3


def test_aggregate_tables_reference_users(drill_db):
    with drill_db.engine.connect() as conn:
        refs = set(
            conn.exec_driver_sql("""
            SELECT tc.table_name FROM information_schema.table_constraints tc
            JOIN information_schema.constraint_column_usage ccu USING (constraint_name)
            WHERE tc.constraint_type = 'FOREIGN KEY' AND ccu.table_name = 'users'""").scalars()
        )
    assert {"phone_numbers", "drill_statuses", "drill_instances"} <= refs


def test_drill_statuses_unique_per_user_slug_and_place(drill_db):
    with drill_db.engine.connect() as conn:
        uniques = (
            conn.exec_driver_sql("""
            SELECT array_agg(a.attname ORDER BY a.attname)::text FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
            WHERE c.conrelid = 'drill_statuses'::regclass AND c.contype = 'u' GROUP BY c.oid""")
            .scalars()
            .all()
        )
    assert "{drill_slug,user_id}" in uniques
    assert "{place_in_sequence,user_id}" in uniques


def test_failed_migration_leaves_nothing_half_applied(empty_db, tmp_path):
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good_one (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half_done (id int); SELECT * FROM no_such_table;")
    with pytest.raises(migrations.MigrationError, match="0002_bad.sql failed"):
        migrations.apply_migrations(empty_db.engine, tmp_path)
    tables = _tables(empty_db.engine)
    assert "good_one" in tables
    assert "half_done" not in tables
    with empty_db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT array_agg(version) FROM schema_migrations").scalar() == [1]
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half_done (id int);")
    assert migrations.apply_migrations(empty_db.engine, tmp_path) == [2]


def test_edited_migration_is_refused(empty_db, tmp_path):
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);")
    migrations.apply_migrations(empty_db.engine, tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id bigint);")
    with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
        migrations.apply_migrations(empty_db.engine, tmp_path)


def test_badly_named_migration_is_refused(tmp_path):
    (tmp_path / "1_a.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="NNNN_name.sql"):
        migrations.discover(tmp_path)


def test_0012_lets_users_seq_hold_any_integer_without_rewriting_the_table(empty_db, tmp_path):
    """users.seq was numeric(30,0): a 56-digit Kinesis sequence number could not be stored. 0012
    drops the precision: the same rows, the same file on disk (catalog-only, no rewrite), and
    every integer up to 129 digits stored and compared exactly."""
    import shutil

    engine = empty_db.engine
    for migration in migrations.discover():
        if migration.version < 12:
            shutil.copy(migration.path, tmp_path / migration.path.name)
    migrations.apply_migrations(engine, tmp_path)
    insert = (
        "INSERT INTO users (user_id, seq, profile) "
        "SELECT md5(n::text)::uuid, %(base)s::numeric + n, '{\"validated\": true}' FROM generate_series(1, 1000) n"
    )
    big = "9" * 56
    with engine.begin() as conn:
        conn.exec_driver_sql(insert, {"base": "9" * 29})
        before = conn.exec_driver_sql("SELECT pg_relation_filenode('users')").scalar_one()
        with pytest.raises(Exception, match="numeric field overflow"), conn.begin_nested():
            conn.exec_driver_sql("UPDATE users SET seq = %(s)s::numeric", {"s": big})
    snapshot = "SELECT user_id, seq::text FROM users ORDER BY user_id"
    with engine.connect() as conn:
        rows_before = conn.exec_driver_sql(snapshot).all()

    assert migrations.apply_migrations(engine) == [v.version for v in migrations.discover() if v.version >= 12]
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT pg_relation_filenode('users')").scalar_one() == before
        assert conn.exec_driver_sql(snapshot).all() == rows_before
        typmod = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'seq'"
        assert conn.exec_driver_sql(typmod).scalar_one() == "numeric"
        top = "9" * 129
        conn.exec_driver_sql(
            "UPDATE users SET seq = %(s)s::numeric WHERE seq = %(b)s::numeric + 1", {"s": top, "b": "9" * 29}
        )
        assert conn.exec_driver_sql(
            "SELECT seq::text, seq > %(below)s::numeric FROM users WHERE seq > 10::numeric ^ 100",
            {"below": "9" * 128 + "8"},
        ).all() == [(top, True)]


def test_a_no_transaction_migration_builds_indexes_concurrently_and_starts_over_after_a_failure(empty_db, tmp_path):
    """`-- no-transaction` migrations (CREATE INDEX CONCURRENTLY cannot run in a transaction) run
    statement by statement; one that failed part way runs again from the start and is recorded
    once it went through."""
    engine = empty_db.engine
    (tmp_path / "0001_table.sql").write_text(
        "CREATE TABLE t (a int, b int); INSERT INTO t SELECT n, n FROM generate_series(1, 100) n;"
    )
    migrations.apply_migrations(engine, tmp_path)
    (tmp_path / "0002_indexes.sql").write_text(
        "-- no-transaction\n-- two indexes, built without locking writers out\n"
        "DROP INDEX CONCURRENTLY IF EXISTS t_a_idx;\nCREATE INDEX CONCURRENTLY t_a_idx ON t (a);\n"
        "DROP INDEX CONCURRENTLY IF EXISTS t_b_idx;\nCREATE UNIQUE INDEX CONCURRENTLY t_b_idx ON t ((b % 2));\n"
    )
    with pytest.raises(migrations.MigrationError, match="failed at a statement"):
        migrations.apply_migrations(engine, tmp_path)  # the unique index cannot be built: left invalid
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT max(version) FROM schema_migrations").scalar() == 1
    (tmp_path / "0002_indexes.sql").write_text(
        (tmp_path / "0002_indexes.sql")
        .read_text()
        .replace("UNIQUE INDEX CONCURRENTLY t_b_idx ON t ((b % 2))", "INDEX CONCURRENTLY t_b_idx ON t (b)")
    )
    assert migrations.apply_migrations(engine, tmp_path) == [2]
    assert migrations.apply_migrations(engine, tmp_path) == []
    with engine.connect() as conn:
        indexes = conn.exec_driver_sql(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 't'::regclass ORDER BY 1"
        ).all()
    assert [tuple(r) for r in indexes] == [("t_a_idx", True), ("t_b_idx", True)]
