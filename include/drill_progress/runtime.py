"""Airflow glue, called only inside running tasks (never at DAG parse time).

Resolves the contract's connections and Variables (§7) into an SQLAlchemy engine, boto3
clients and resource names. Everything else in the package takes those as arguments, so it is
testable without Airflow.
"""

from __future__ import annotations

import functools
import os

from sqlalchemy.engine import URL, Engine

from drill_progress import config
from drill_progress.db import make_engine


def variable(name: str) -> str:
    """An Airflow Variable by name, falling back to the contract's default."""
    from airflow.sdk import Variable

    return Variable.get(name, default=config.VARIABLE_DEFAULTS[name])


def resource_names() -> dict[str, str]:
    return {name: variable(name) for name in config.VARIABLE_DEFAULTS}


def db_url(conn_id: str = config.DB_CONN_ID) -> URL:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    query = {k: str(v) for k, v in (conn.extra_dejson or {}).items() if k in {"sslmode", "sslrootcert"}}
    return URL.create(
        "postgresql+psycopg",
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or "127.0.0.1",
        port=conn.port or 5432,
        database=conn.schema or "postgres",
        query=query,
    )


@functools.cache
def _engine_for(url: str, role: str) -> Engine:
    return make_engine(url, role, pool_size=4, max_overflow=4)


def db_engine(conn_id: str = config.DB_CONN_ID, role: str = "task") -> Engine:
    """A pooled engine for the drill database, one per process, connection URL and job role
    (`drill_progress.db.TIMEOUTS`: the role sets the connections' lock and statement timeouts)."""
    return _engine_for(db_url(conn_id).render_as_string(hide_password=False), role)


def aws_client(service: str, conn_id: str = config.AWS_CONN_ID):
    """A boto3 client from the `aws_default` connection (endpoint_url in its extra for the emulator)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    retry = Config(retries={"max_attempts": 10, "mode": "adaptive"}, connect_timeout=5, read_timeout=30)
    hook = AwsBaseHook(aws_conn_id=conn_id, client_type=service, config=retry)
    if not hook.conn_region_name:
        region = os.environ.get("AWS_DEFAULT_REGION", config.DEFAULT_AWS_REGION)
        hook = AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=region, config=retry)
    return hook.get_conn()
