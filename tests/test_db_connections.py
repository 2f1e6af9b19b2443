"""Every connection the project opens carries its job's lock and statement timeouts, and no engine
prints bound parameters (phone numbers, names, raw payloads) in an error."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from drill_progress import db


@pytest.mark.parametrize("role", sorted(db.TIMEOUTS))
def test_each_role_sets_its_timeouts_and_name(drill_db, role):
    engine = db.make_engine(drill_db.url, role)
    try:
        with engine.connect() as conn:
            settings = conn.exec_driver_sql(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
                "current_setting('application_name')"
            ).one()
    finally:
        engine.dispose()
    lock_timeout, statement_timeout = db.TIMEOUTS[role]
    normal = {"10s": "10s", "60s": "1min", "30s": "30s", "10min": "10min", "0": "0", "2s": "2s", "15s": "15s"}
    assert settings == (normal[lock_timeout], normal[statement_timeout], f"drill_progress.{role}")


def test_a_statement_over_its_timeout_is_cancelled_as_transient_trouble(drill_db):
    engine = db.make_engine(drill_db.url, "ui", connect_args={"options": "-c statement_timeout=100"})
    try:
        with pytest.raises(DBAPIError) as info, engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(2)")
    finally:
        engine.dispose()
    assert info.value.orig.sqlstate == "57014" and db.trouble(info.value) == db.TRANSIENT


@pytest.mark.parametrize("role", sorted(db.TIMEOUTS))
def test_no_engine_prints_bound_parameters(drill_db, role):
    engine = db.make_engine(drill_db.url, role)
    try:
        with pytest.raises(DBAPIError) as info, engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1 / 0 WHERE %(phone)s::text IS NOT NULL", {"phone": "+15551230001"})
    finally:
        engine.dispose()
    assert "division by zero" in str(info.value)
    assert "5551230001" not in str(info.value) and "parameters hidden" in str(info.value)


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("40P01", db.TRANSIENT),
        ("40001", db.TRANSIENT),
        ("55P03", db.TRANSIENT),
        ("57014", db.TRANSIENT),
        ("23505", db.DATA),
        ("22P05", db.DATA),
        ("54000", db.DATA),
        ("P0001", db.DATA),
        ("42501", db.FATAL),
        ("08006", db.FATAL),
        ("57P01", db.FATAL),
        ("53300", db.FATAL),
    ],
)
def test_what_each_sqlstate_means(sqlstate, expected):
    import psycopg
    from sqlalchemy.exc import DBAPIError as SaError

    error_class = psycopg.errors.lookup(sqlstate)
    assert db.trouble(SaError.instance("SELECT 1", {}, error_class("x"), psycopg.Error)) == expected


def test_client_side_refusals_and_content_errors():
    import psycopg
    from sqlalchemy.exc import DBAPIError as SaError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    def no_sqlstate(error):
        return SaError.instance("SELECT 1", {}, error, psycopg.Error)

    # no SQLSTATE: refused by the driver before reaching the server
    assert db.trouble(no_sqlstate(psycopg.DataError("a value it cannot send"))) == db.DATA
    assert db.trouble(no_sqlstate(psycopg.OperationalError("server closed the connection"))) == db.FATAL
    assert db.trouble(no_sqlstate(psycopg.InterfaceError("the connection is closed"))) == db.FATAL
    assert db.trouble(no_sqlstate(psycopg.Error("anything else"))) == db.TRANSIENT
    assert db.trouble(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates")) == db.DATA
    assert db.trouble(PoolTimeout()) == db.FATAL
    assert db.trouble(RuntimeError("a bug")) == db.FATAL
