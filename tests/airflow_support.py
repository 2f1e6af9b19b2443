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
