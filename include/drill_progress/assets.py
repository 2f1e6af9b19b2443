"""The project's data as Airflow Assets: the aggregate tables, the drill catalog, the event history,
the report table, the dialog event stream, the command stream and the DynamoDB drill schedule
(docs/lineage.md).

DAG files use them as task `inlets` / `outlets`, so Airflow's Assets view shows which task reads
and writes what, and every successful task that writes one records an asset event.

**Stable URIs.** A DAG file is parsed without any connection or Variable lookup, so an Asset's URI
cannot hold the drill database's real host or the streams' real names. Each URI has the shape of
its OpenLineage name with the contract's *logical* identity in place of the physical one: the
connection id `drill_progress_db` as the database's authority (5432 is only the port Airflow's
postgres URI handler requires), the database `drill_progress`, the connection id `aws_default`
and the contract's default stream and table names. The same DAG files give the same Assets in
every environment (local stack, compose, production), and an asset schedule never breaks when a
database moves.

**Physical names at run time.** The OpenLineage events name the physical datasets, derived while
the task runs (`drill_progress.lineage`): `postgres://<host>:<port>` and `<database>.public.<table>`
from connection `drill_progress_db`, exactly as the providers' SQL lineage names them, and the AWS
resources by their ARN. `PHYSICAL` says, for each Asset, how to find its physical dataset.

Light: DAG files import this module at parse time (airflow.sdk only).
"""

from __future__ import annotations

from airflow.sdk import Asset

from drill_progress import config

DB_LOGICAL_AUTHORITY = f"{config.DB_CONN_ID}:5432"
DB_LOGICAL_NAME = "drill_progress"
DB_SCHEMA = "public"

# Asset name -> (kind, identity): a table name, or the Airflow Variable that names the resource.
PHYSICAL: dict[str, tuple[str, str]] = {}


def _table(table: str) -> Asset:
    name = f"drill_progress.{table}"
    PHYSICAL[name] = ("postgres", table)
    return Asset(
        name=name,
        uri=f"postgres://{DB_LOGICAL_AUTHORITY}/{DB_LOGICAL_NAME}/{DB_SCHEMA}/{table}",
        group="drill_progress_db",
    )


def _aws(kind: str, variable: str, resource: str) -> Asset:
    name = f"drill_progress.{variable}"
    PHYSICAL[name] = (kind, variable)
    return Asset(
        name=name,
        uri=f"{kind}://{config.AWS_CONN_ID}/{resource}/{config.VARIABLE_DEFAULTS[variable]}",
        group=config.AWS_CONN_ID,
    )


# The user aggregate (contract §4)
USERS = _table("users")
PHONE_NUMBERS = _table("phone_numbers")
DRILL_STATUSES = _table("drill_statuses")
DRILL_INSTANCES = _table("drill_instances")
AGGREGATE = [USERS, PHONE_NUMBERS, DRILL_STATUSES, DRILL_INSTANCES]

# The drill catalog (setup seeds it, rollouts add to it; ingestion, scheduling and the report read it)
DRILLS = _table("drills")

# The event history: every record ingestion read, kept for rebuilds (docs/history.md)
EVENT_HISTORY = _table("event_history")

# The daily progress report
DRILL_PROGRESS_DAILY = _table("drill_progress_daily")

# Kinesis: what the Dialog Context publishes, and the commands it consumes (contract §2, §5)
DIALOG_EVENT_STREAM = _aws("kinesis", config.DIALOG_EVENT_STREAM, "stream")
COMMAND_STREAM = _aws("kinesis", config.COMMAND_STREAM, "stream")

# DynamoDB: the day's next-drill schedule (planned by schedule_next_drills, sent by its send tasks)
DRILL_SCHEDULE = _aws("dynamodb", config.DRILL_SCHEDULE_TABLE, "table")

TABLES = [*AGGREGATE, DRILLS, EVENT_HISTORY, DRILL_PROGRESS_DAILY]
ALL = [*TABLES, DIALOG_EVENT_STREAM, COMMAND_STREAM, DRILL_SCHEDULE]
