"""Database access: engines for the drill database and the reviewed SQL templates in include/sql.

Templates use psycopg's named placeholders (`%(name)s`); values are always bound, never
formatted into the SQL text. Run them with `run(conn, "area/name.sql", {...})`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from drill_progress import config

SQL_DIR = config.SQL_DIR


@functools.cache
def load_sql(name: str) -> str:
    """Text of a template under include/sql, e.g. `load_sql("ingest/upsert_users.sql")`."""
    path = (SQL_DIR / name).resolve()
    if SQL_DIR not in path.parents:
        raise ValueError(f"SQL template outside {SQL_DIR}: {name}")
    return path.read_text()


def normalise_url(url: str | URL) -> URL:
    """Any postgres URL (postgres://, postgresql://, postgresql+psycopg2://) -> psycopg 3 driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() not in {"postgres", "postgresql"}:
        raise ValueError(f"the drill database must be PostgreSQL, got {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg")


TIMEOUTS = config.TIMEOUTS


# The URL of an engine whose connections a hook makes (`creator`): only the dialect and driver count.
HOOK_URL = "postgresql+psycopg://"


def make_engine(url: str | URL, role: str = "task", **kwargs: Any) -> Engine:
    """A pooled engine whose connections carry `role`'s timeouts and name (application_name
    drill_progress.<role>), and never print bound parameters in errors (they hold phone numbers).
    With `creator=creator(...)` the connections come from elsewhere (an Airflow hook)."""
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "connect_args": {"options": config.postgres_options(role), "application_name": f"drill_progress.{role}"},
    }
    options.update(kwargs)
    return create_engine(normalise_url(url), **options)


def creator(connect, role: str):
    """A SQLAlchemy `creator` calling `connect()` (e.g. PostgresHook.get_conn, which honours every
    connection extra) and then setting `role`'s timeouts and name on the new connection, whatever
    the extras said."""
    lock_timeout, statement_timeout = config.TIMEOUTS[role]

    def new_connection():
        conn = connect()
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false), "
            "set_config('application_name', %s, false)",
            (lock_timeout, statement_timeout, f"drill_progress.{role}"),
        )
        conn.commit()
        return conn

    return new_connection


def run(conn: Connection, template: str, params: Mapping[str, Any] | None = None):
    """Execute one SQL template with bound parameters and return the driver-level result."""
    return conn.exec_driver_sql(load_sql(template), dict(params or {}))


def run_script(conn: Connection, sql: str) -> None:
    """Execute a multi-statement SQL script (no parameters) on the connection's transaction."""
    conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]


# ---- what a database error means for the caller ----------------------------------------------

TRANSIENT = "transient"  # try the same work again: it may well succeed
DATA = "data"  # caused by the data written: retrying the same rows fails the same way
FATAL = "fatal"  # the connection, the server or the code: stop and let the task retry

# Deadlock, serialization failure, lock_timeout, statement_timeout (or another cancel).
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03", "57014"})
# Data exception (22), integrity violation (23), program limit exceeded (54: e.g. an index row
# too large), raised by a trigger or function (P0).
DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54", "P0"})
# Without SQLSTATE: the connection, or the code (a query or parameter the driver refuses).
CLIENT_FATAL = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.ProgrammingError,
    sa_exc.NotSupportedError,
    sa_exc.InternalError,
)
# Raised by the client library or Python on values it cannot send (a lone surrogate, ...).
CONTENT_ERRORS = (UnicodeError, ValueError, TypeError, LookupError, ArithmeticError, RecursionError)


def trouble(exc: BaseException) -> str:
    """TRANSIENT, DATA or FATAL for an error raised while reading or writing the drill database.

    A psycopg error without SQLSTATE never reached the server. About the connection, or the code
    (a wrong query or parameter, a feature the driver lacks): FATAL, so that a bug fails the task
    rather than setting good records aside. A value the driver cannot send: DATA. Anything else:
    TRANSIENT (retried, then isolated like DATA when it keeps failing)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return _driver_trouble(exc)
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return FATAL  # pool exhausted, closed result, ...
    return DATA if isinstance(exc, CONTENT_ERRORS) else FATAL


def _driver_trouble(exc: sa_exc.DBAPIError) -> str:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if exc.connection_invalidated or (not sqlstate and isinstance(exc, CLIENT_FATAL)):
        return FATAL
    if sqlstate in TRANSIENT_SQLSTATES:
        return TRANSIENT
    if sqlstate:
        return DATA if sqlstate[:2] in DATA_SQLSTATE_CLASSES else FATAL
    return DATA if isinstance(exc, sa_exc.DataError) else TRANSIENT


def is_transient(exc: BaseException) -> bool:
    return trouble(exc) == TRANSIENT


def error_summary(exc: BaseException, limit: int = 500) -> str:
    """'<SQLSTATE or error type>: <first line of the message>', phone numbers masked, storable as text.
    Never the SQL, its parameters or PostgreSQL's DETAIL line (which may quote a row)."""
    from drill_progress.privacy import mask_phones_in, safe_text

    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlstate", None) or type(orig).__name__
    lines = str(orig).strip().splitlines()
    text = mask_phones_in(f"{code}: {lines[0] if lines else type(orig).__name__}")
    return safe_text(text, limit)  # type: ignore[return-value]


class DatabaseError(RuntimeError):
    """A database error, summarised (`error_summary`): no SQL, no bound parameters, no row details."""


def masked_errors(fn):
    """Decorator for task entry points: a database error leaving the task is re-raised as
    DatabaseError with its summary only, its original (whose message may quote a row holding a
    phone number) detached from the traceback Airflow logs."""
    import psycopg

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
            summary = error_summary(exc)
        raise DatabaseError(summary)

    return call
