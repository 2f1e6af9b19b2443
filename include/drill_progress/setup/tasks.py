"""Airflow glue of `drill_progress_setup`: migrations and catalog seed, AWS resources."""

from __future__ import annotations

import logging

from drill_progress import connections
from drill_progress.db import masked_errors
from drill_progress.setup import aws_resources, migrations

log = logging.getLogger(__name__)


@masked_errors
def apply_migrations() -> dict:
    """Task `apply_migrations`: apply pending migrations; the schema version and the catalog."""
    engine = connections.db_engine(role="migrations")
    applied = migrations.apply_migrations(engine)
    version, drills = migrations.schema_state(engine)
    log.info("schema at version %s; applied now %s; catalog %s", version, applied, drills)
    return {"applied_now": applied, "schema_version": version, "catalog": drills}


def create_aws_resources(params: dict) -> dict:
    """Task `create_aws_resources`: the streams and tables named by the Variables, where missing."""
    if not params["create_aws_resources"]:
        return {"skipped": True}
    created = aws_resources.ensure_all(
        connections.aws_client("kinesis"),
        connections.aws_client("dynamodb"),
        connections.resource_names(),
        dialog_shards=int(params["dialog_stream_shards"]),
    )
    return {
        "created": sorted(k for k, v in created.items() if v),
        "existing": sorted(k for k, v in created.items() if not v),
    }
