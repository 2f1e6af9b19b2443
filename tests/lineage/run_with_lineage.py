"""Runs DAGs end to end with dag.test() in a process of its own, where OpenLineage is configured.

The OpenLineage provider decides at plugin load whether it is enabled, once per process; the test
session's own process loads the plugins with no transport (quiet, as every other test wants), so
lineage runs here. Usage: run_with_lineage.py '<json list of [dag_id, logical_date or null, conf]>'.
Prints one line per DAG run: '<dag_id> <state>'.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from airflow_support import load_dag, run_state


def main(runs: list) -> None:
    from airflow.sdk import lineage

    for dag_id, logical_date, conf in runs:
        # In production each task runs in a process of its own; dag.test() runs them all in this
        # one, where the hook lineage collector (a process singleton) would carry one DAG's SQL
        # lineage into the next DAG's tasks. Start each DAG run with a fresh one.
        lineage.get_hook_lineage_collector.cache_clear()
        when = datetime.fromisoformat(logical_date) if logical_date else None
        dag_run = load_dag(dag_id).test(run_conf=conf, logical_date=when)
        print(dag_id, run_state(dag_run), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
