"""Run DAGs with OpenLineage's file transport and read back the events they emitted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from airflow_support import ROOT

EXTRACTORS = "drill_progress.lineage.DeclaredAssetsExtractor"
JOB_NAMESPACE = "drill-progress-test"


def run_with_lineage(events_file: Path, runs: list, timeout: int = 600) -> list[str]:
    """Run `runs` ([dag_id, logical date ISO or None, conf]) in a child process whose OpenLineage
    writes every event to `events_file`; returns the child's '<dag_id> <state>' lines."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events_file), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__EXTRACTORS": EXTRACTORS,
            "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
            "AIRFLOW__OPENLINEAGE__NAMESPACE": JOB_NAMESPACE,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT), str(ROOT / "tests")]),
        }
    )
    log = events_file.with_suffix(".log")
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("run_with_lineage.py")), json.dumps(runs)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends all of it
        )
        try:
            child.wait(timeout=timeout)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    output = log.read_text()
    assert child.returncode == 0, output[-5000:]
    return output.splitlines()


def read_events(events_file: Path) -> list[dict]:
    if not events_file.exists():
        return []
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def datasets(items: list[dict]) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in items}


def task_lineage(events: list[dict], event_type: str = "COMPLETE") -> dict[str, tuple[set, set]]:
    """Job name ('<dag_id>.<task_id>') -> (input datasets, output datasets) of its `event_type`
    events; a mapped task's events are united."""
    found: dict[str, tuple[set, set]] = {}
    for event in events:
        if event.get("eventType") != event_type or "." not in event["job"]["name"]:
            continue
        inputs, outputs = found.setdefault(event["job"]["name"], (set(), set()))
        inputs |= datasets(event.get("inputs", []))
        outputs |= datasets(event.get("outputs", []))
    return found
