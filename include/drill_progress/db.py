"""Database access: engines for the drill database and the reviewed SQL templates in include/sql.

Templates use psycopg's named placeholders (`%(name)s`); values are always bound, never
formatted into the SQL text. Run them with `run(conn, "area/name.sql", {...})`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine, make_url

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


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


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    options: dict[str, Any] = {"pool_pre_ping": True, "future": True}
    options.update(kwargs)
    return create_engine(normalise_url(url), **options)


def run(conn: Connection, template: str, params: Mapping[str, Any] | None = None):
    """Execute one SQL template with bound parameters and return the driver-level result."""
    return conn.exec_driver_sql(load_sql(template), dict(params or {}))


def run_script(conn: Connection, sql: str) -> None:
    """Execute a multi-statement SQL script (no parameters) on the connection's transaction."""
    conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
