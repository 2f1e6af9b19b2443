"""The migration benchmark measures what it says, against a real PostgreSQL: migration 0012 as
shipped rewrites nothing, and the same benchmark does see a rewrite when a migration makes one."""

from __future__ import annotations

import shutil

import pytest

from bench import bench_migration
from bench.__main__ import Context
from drill_progress.setup import migrations

USERS = 3000


def _figures(rows: list[dict]) -> dict:
    return {r["metric"]: r for r in rows}


@pytest.fixture
def ctx(pg_server):
    return Context(pg_server, None)


def test_0012_as_shipped_is_catalog_only(ctx):
    figures = _figures(bench_migration.measure(ctx, USERS))
    seconds = figures["migration.0012.seconds_at_1m_users"]
    assert seconds["users"] == USERS and seconds["seq_type"] == "numeric(30,0) -> numeric"
    assert figures["migration.0012.rewrote_table"]["value"] == 0
    assert figures["migration.0012.ingest_blocked_ms"]["updates_during_migration"] >= 1
    assert figures["migration.0012.lock_held_ms"]["value"] > 0


def test_a_rewriting_0012_is_reported_as_a_rewrite(ctx, tmp_path):
    """The same change written with a USING expression makes PostgreSQL rewrite the table: the
    benchmark's filenode comparison reports it."""
    for m in migrations.discover():
        if m.version < bench_migration.VERSION:
            shutil.copy2(m.path, tmp_path / m.path.name)
    (tmp_path / "0012_seq_rewritten.sql").write_text("ALTER TABLE users ALTER COLUMN seq TYPE numeric USING seq + 0;\n")
    figures = _figures(bench_migration.measure(ctx, USERS, directory=tmp_path))
    assert figures["migration.0012.rewrote_table"]["value"] == 1
