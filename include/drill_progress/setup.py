"""The work of the `drill_progress_setup` DAG: migrations, catalog seed, AWS resources."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from drill_progress import aws_resources, migrations
from drill_progress.db import masked_errors

log = logging.getLogger(__name__)


@masked_errors
def migrate(engine: Engine) -> dict:
    applied = migrations.apply_migrations(engine)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT max(version) FROM schema_migrations").scalar()
        drills = conn.exec_driver_sql(
            "SELECT drill_slug FROM drills ORDER BY place_in_sequence").scalars().all()
    summary = {"applied_now": applied, "schema_version": version, "catalog": drills}
    log.info("schema at version %s; applied now %s; catalog %s", version, applied, drills)
    return summary


def create_aws_resources(kinesis, dynamodb, names: dict[str, str], dialog_shards: int) -> dict:
    created = aws_resources.ensure_all(kinesis, dynamodb, names, dialog_shards=dialog_shards)
    return {"created": sorted(k for k, v in created.items() if v),
            "existing": sorted(k for k, v in created.items() if not v)}
