"""OpenLineage for the project's own tasks (docs/lineage.md).

The tasks read and write through their own engines and boto3 clients, so the providers' automatic
SQL lineage never sees them. Each task declares what it reads and writes as Airflow Assets
(`drill_progress.assets`, task `inlets` / `outlets` in the DAG files); here those declarations
become OpenLineage input and output datasets with their *physical* names, derived while the task
runs:

- a PostgreSQL table: namespace `postgres://<host>:<port>`, name `<database>.public.<table>`, from
  connection `drill_progress_db` through PostgresHook's own OpenLineage naming, so they are
  exactly the names the SQL operators' lineage gives (`drill_progress_report`'s `replace_day`);
- a Kinesis stream or DynamoDB table: its ARN split as OpenLineage splits an AWS Glue table,
  namespace `arn:aws:<service>:<region>:<account>`, name `stream/<name>` or `table/<name>`; the
  name from its Airflow Variable, region and account from connection `aws_default` (STS).

Two entry points use it:
- `DeclaredAssetsExtractor`, the extractor of every `@task` and SQL operator (configured as
  `[openlineage] extractors = drill_progress.lineage.DeclaredAssetsExtractor`);
- `operator_lineage`, called by the project's own operators' `get_openlineage_facets_on_complete`.

Imported only by the OpenLineage listener (when lineage is configured) and inside running tasks:
never at DAG parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from airflow.providers.openlineage.extractors.base import BaseExtractor, DefaultExtractor, OperatorLineage
from airflow.providers.openlineage.extractors.python import PythonExtractor
from openlineage.client.event_v2 import Dataset

from drill_progress import assets, config

log = logging.getLogger(__name__)

TASKFLOW_OPERATORS = ("_PythonDecoratedOperator",)
SQL_OPERATORS = ("SQLExecuteQueryOperator",)


class Resolver:
    """Physical OpenLineage datasets for the project's Assets, looked up once per resolver."""

    def __init__(self) -> None:
        self._postgres: tuple[str, str] | None = None
        self._aws: tuple[str, str] | None = None

    def postgres(self) -> tuple[str, str]:
        """(namespace, database) of connection drill_progress_db, as PostgresHook names them."""
        if self._postgres is None:
            from airflow.providers.postgres.hooks.postgres import PostgresHook

            hook = PostgresHook(postgres_conn_id=config.DB_CONN_ID)
            info = hook.get_openlineage_database_info(hook.get_connection(config.DB_CONN_ID))
            self._postgres = (f"{info.scheme}://{info.authority}", info.database)
        return self._postgres

    def aws(self) -> tuple[str, str]:
        """(region, account id) of connection aws_default."""
        if self._aws is None:
            from drill_progress import connections

            sts = connections.aws_client("sts")
            self._aws = (sts.meta.region_name, sts.get_caller_identity()["Account"])
        return self._aws

    def dataset(self, asset) -> Dataset | None:
        kind, identity = assets.PHYSICAL.get(getattr(asset, "name", None), (None, None))
        if kind == "postgres":
            namespace, database = self.postgres()
            return Dataset(namespace=namespace, name=f"{database}.{assets.DB_SCHEMA}.{identity}")
        if kind in ("kinesis", "dynamodb"):
            from drill_progress import connections

            region, account = self.aws()
            resource = "stream" if kind == "kinesis" else "table"
            return Dataset(
                namespace=f"arn:aws:{kind}:{region}:{account}", name=f"{resource}/{connections.variable(identity)}"
            )
        return None

    def datasets(self, declared: Iterable) -> list[Dataset]:
        found = (self.dataset(asset) for asset in declared or ())
        return [dataset for dataset in found if dataset is not None]


def logical_dataset(asset) -> Dataset | None:
    """An Asset's stable URI split as an OpenLineage dataset (no lookup at all), e.g.
    postgres://drill_progress_db:5432 + drill_progress.public.users."""
    kind, _ = assets.PHYSICAL.get(getattr(asset, "name", None), (None, None))
    if kind is None:
        return None
    scheme, rest = asset.uri.split("://", 1)
    authority, path = rest.split("/", 1)
    name = path.replace("/", ".") if kind == "postgres" else path
    return Dataset(namespace=f"{scheme}://{authority}", name=name)


def lookups_are_safe() -> bool:
    """True when the listener extracts lineage in a thread of the task's process
    (`[openlineage] execute_in_thread`): Connections and Variables are then read as the task reads
    them. In a forked child (the provider's default) a lookup through the task's supervisor
    channel can block until the listener kills the child, and the event is lost."""
    from airflow.providers.openlineage import conf

    return conf.execute_in_thread()


def operator_lineage(task) -> OperatorLineage:
    """The input and output datasets of `task`'s declared inlets and outlets: physical names when
    lookups are safe, else (with a warning) the Assets' stable logical names."""
    if lookups_are_safe():
        resolver = Resolver()
        return OperatorLineage(inputs=resolver.datasets(task.inlets), outputs=resolver.datasets(task.outlets))
    log.warning(
        "OpenLineage: [openlineage] execute_in_thread is off, so %s's datasets carry their logical names "
        "(set it to true for the physical names; docs/lineage.md)",
        task.task_id,
    )
    inputs = [d for d in map(logical_dataset, task.inlets or ()) if d is not None]
    outputs = [d for d in map(logical_dataset, task.outlets or ()) if d is not None]
    return OperatorLineage(inputs=inputs, outputs=outputs)


class DeclaredAssetsExtractor(BaseExtractor):
    """OpenLineage extractor of the operators whose own lineage cannot name the project's data:
    `@task` tasks (the provider has no extractor for them) and `SQLExecuteQueryOperator` (the SQL
    parser cannot read the report's templates: bound `%(name)s` parameters, data-modifying CTEs).

    A task that declares inlets or outlets gets them as physical datasets (`operator_lineage`),
    plus, for a `@task`, its source code as the provider's PythonExtractor gives it. A task that
    declares none gets what the operator's usual extraction gives (PythonExtractor, or the
    operator's own OpenLineage methods), as without this extractor."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return [*TASKFLOW_OPERATORS, *SQL_OPERATORS]

    def _usual(self) -> BaseExtractor:
        usual = PythonExtractor if self.operator.task_type in TASKFLOW_OPERATORS else DefaultExtractor
        extractor = usual(self.operator)
        extractor.source_code_enabled = self.source_code_enabled
        return extractor

    def _declared(self, usual: OperatorLineage | None) -> OperatorLineage | None:
        if not (self.operator.inlets or self.operator.outlets):
            return usual
        found = operator_lineage(self.operator)
        # The datasets are known: the usual run facets ("unknown source") do not apply.
        return OperatorLineage(inputs=found.inputs, outputs=found.outputs, job_facets=usual.job_facets if usual else {})

    def _execute_extraction(self) -> OperatorLineage | None:
        return self._declared(self._usual()._execute_extraction())

    def extract(self) -> OperatorLineage | None:
        return self._declared(self._usual().extract())

    def extract_on_complete(self, task_instance) -> OperatorLineage | None:
        return self._declared(self._usual().extract_on_complete(task_instance))

    def extract_on_failure(self, task_instance) -> OperatorLineage | None:
        return self._declared(self._usual().extract_on_failure(task_instance))
