"""The contract's connections and Variables (docs/contract.md §7), resolved through Airflow and its
providers' hooks. Called inside running tasks and the UI's requests only, never at DAG parse time.

- The drill database: connection `drill_progress_db` through the postgres provider's `PostgresHook`,
  so every connection extra it knows is honoured (sslmode, IAM tokens, options, ...). Pooled
  SQLAlchemy engines, one per process, connection and job role (the role sets the timeouts, see
  `config.TIMEOUTS`), re-checked against the connection every ENGINE_TTL_SECONDS: a changed
  connection (a rotated password) gets a new engine.
- AWS: connection `aws_default` through the amazon provider's `AwsBaseHook` (`endpoint_url` in its
  extra for the local emulator).
- Variables with the contract's defaults.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from drill_progress import config, db

ENGINE_TTL_SECONDS = 60.0


def variable(name: str) -> str:
    """An Airflow Variable by name, falling back to the contract's default."""
    from airflow.sdk import Variable

    return Variable.get(name, default=config.VARIABLE_DEFAULTS[name])


def resource_names() -> dict[str, str]:
    return {name: variable(name) for name in config.VARIABLE_DEFAULTS}


@dataclass
class _CachedEngine:
    fingerprint: str
    engine: Engine
    checked_at: float


_engines: dict[tuple[str, str], _CachedEngine] = {}
_engines_lock = threading.Lock()


def db_engine(role: str = "task", conn_id: str = config.DB_CONN_ID) -> Engine:
    """The pooled engine of the drill database for `role` (`config.TIMEOUTS`), through PostgresHook."""
    key = (conn_id, role)
    with _engines_lock:
        cached = _engines.get(key)
        now = time.monotonic()
        if cached is not None and now - cached.checked_at < ENGINE_TTL_SECONDS:
            return cached.engine
        hook = _postgres_hook(conn_id)
        fingerprint = hook.get_connection(conn_id).get_uri()
        if cached is not None and cached.fingerprint == fingerprint:
            cached.checked_at = now
            return cached.engine
        if cached is not None:
            cached.engine.dispose()
        engine = db.make_engine(db.HOOK_URL, role, creator=db.creator(hook.get_conn, role), pool_size=4, max_overflow=4)
        _engines[key] = _CachedEngine(fingerprint, engine, now)
        return engine


def dispose_engines() -> None:
    """Forget every cached engine (tests switch connections between runs)."""
    with _engines_lock:
        for cached in _engines.values():
            cached.engine.dispose()
        _engines.clear()


def _postgres_hook(conn_id: str):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id)


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
