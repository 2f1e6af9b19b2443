"""Helpers shared by tests in several folders (import as `from airflow_support import ...`;
never `from conftest import ...`: several conftest modules exist and the name is ambiguous)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_dag(dag_id: str):
    """The DAG object from its file in dags/, parsed the way the dag-processor parses it."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def run_state(obj) -> str:
    """The state of a DagRun or TaskInstance as a plain string ('success', 'failed', ...)."""
    return str(getattr(obj.state, "value", obj.state))


def return_value(dag_run, task_id: str):
    """What a task of `dag_run` returned (its `return_value` XCom), deserialised."""
    import json

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = (
            session.query(XComModel.value)
            .filter(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
            .scalar()
        )
    return json.loads(value) if isinstance(value, str) else value
