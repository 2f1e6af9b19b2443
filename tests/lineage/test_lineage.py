"""Lineage: every DAG's tasks declare the Assets they read and write (Airflow's Assets view), and
with OpenLineage configured every DAG run emits events naming the physical datasets, the project's
own tasks included (drill_progress.lineage). The runs go end to end against real PostgreSQL and the
moto server, with OpenLineage's file transport, in a child process (see run_with_lineage.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from lineage_support import JOB_NAMESPACE, read_events, run_with_lineage, task_lineage
from seed import seed_due_users, seed_reminder_instances

from drill_progress import assets

ACCOUNT_REGION = "us-east-1:123456789012"  # the emulator's region and account
KINESIS = f"arn:aws:kinesis:{ACCOUNT_REGION}"
EVENTS, COMMANDS = (KINESIS, "stream/dialog-events"), (KINESIS, "stream/dialog-commands")
SCHEDULE = (f"arn:aws:dynamodb:{ACCOUNT_REGION}", "table/drill-trigger-schedule")
AGGREGATE = ("users", "phone_numbers", "drill_statuses", "drill_instances")
DUE_INPUTS = ("users", "phone_numbers", "drill_statuses", "drills")
REPORT_INPUTS = ("users", "drill_statuses", "drills")
TABLES = (*AGGREGATE, "drills", "event_history", "drill_progress_daily")

# dag_id.task_id -> (inlet asset names, outlet asset names); tasks not listed declare none.
DECLARED = {
    "dialog_event_ingest.plan_shards": (["dialog_event_stream"], []),
    "dialog_event_ingest.ingest_shard": (
        ["dialog_event_stream", "drills"],
        [*AGGREGATE, "event_history", "command_stream"],
    ),
    "dialog_event_ingest.publish_commands": ([], ["command_stream"]),
    "dialog_event_reapply.reapply_rejected": (["drills"], [*AGGREGATE, "command_stream"]),
    "schedule_next_drills.plan": (list(DUE_INPUTS), ["drill_schedule_table"]),
    "schedule_next_drills.send_slot": (["drill_schedule_table", *DUE_INPUTS], ["command_stream"]),
    "trigger_reminders.send_reminders": (["drill_instances"], ["drill_instances", "command_stream"]),
    "drill_rollout.roll_out_drill": (["users", "drills"], ["drills", "drill_statuses"]),
    "drill_progress_report.replace_day": (list(REPORT_INPUTS), ["drill_progress_daily"]),
    "drill_progress_monitor.check_ingestion_lag": (["dialog_event_stream"], []),
    "drill_progress_monitor.refresh_today": (list(REPORT_INPUTS), ["drill_progress_daily"]),
    "drill_progress_setup.apply_migrations": ([], list(TABLES)),
    "drill_progress_rebuild.rebuild_users": (
        ["event_history", "phone_numbers", "drills"],
        ["users", "drill_statuses", "drill_instances"],
    ),
    "drill_progress_maintenance.keep_event_history": ([], ["event_history"]),
    "drill_progress_setup.create_aws_resources": (
        [],
        ["dialog_event_stream", "command_stream", "drill_schedule_table"],
    ),
}


def _short(asset) -> str:
    return asset.name.removeprefix("drill_progress.")


def test_asset_uris_are_stable_and_shaped_like_their_openlineage_names():
    assert {a.name: a.uri for a in assets.ALL} == {
        **{f"drill_progress.{t}": f"postgres://drill_progress_db:5432/drill_progress/public/{t}" for t in TABLES},
        "drill_progress.dialog_event_stream": "kinesis://aws_default/stream/dialog-events",
        "drill_progress.command_stream": "kinesis://aws_default/stream/dialog-commands",
        "drill_progress.drill_schedule_table": "dynamodb://aws_default/table/drill-trigger-schedule",
    }


def test_every_task_declares_what_it_reads_and_writes(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow_support import ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    declared = {
        f"{dag.dag_id}.{task.task_id}": ([_short(a) for a in task.inlets], [_short(a) for a in task.outlets])
        for dag in bag.dags.values()
        for task in dag.tasks
        if task.inlets or task.outlets
    }
    assert declared == DECLARED
    # No DAG waits for an Asset (docs/lineage.md says why): each keeps its time-based schedule.
    assert {dag.dag_id: type(dag.timetable).__name__ for dag in bag.dags.values()} == {
        "dialog_event_ingest": "DeltaTriggerTimetable",
        "dialog_event_reapply": "NullTimetable",
        "drill_progress_maintenance": "CronTriggerTimetable",
        "drill_progress_monitor": "CronTriggerTimetable",
        "drill_progress_rebuild": "NullTimetable",
        "drill_progress_report": "CronDataIntervalTimetable",
        "drill_progress_setup": "NullTimetable",
        "drill_rollout": "NullTimetable",
        "schedule_next_drills": "CronTriggerTimetable",
        "trigger_reminders": "CronTriggerTimetable",
    }


def test_openlineage_stays_off_without_a_transport():
    """The provider is installed for every test; with no transport configured it is disabled:
    no listener, nothing emitted, nothing slowed down."""
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.openlineage import OpenLineageProviderPlugin

    assert conf.is_disabled() is True
    assert OpenLineageProviderPlugin.listeners == []


def test_every_dag_run_emits_its_physical_input_and_output_datasets(airflow_env, tmp_path):
    db = airflow_env["db"]
    url = urlsplit(db.url)
    postgres = f"postgres://{url.hostname}:{url.port}"

    def table(name: str) -> tuple[str, str]:
        return (postgres, f"{db.name}.public.{name}")

    def tables(*names: str) -> set:
        return {table(n) for n in names}

    now = datetime.now(UTC).replace(microsecond=0)
    scheduled = now - timedelta(minutes=10)  # sends due at once, well inside the late guard
    seed_due_users(db.engine, 1, scheduled)
    seed_reminder_instances(db.engine, 1, now)
    runs = [
        ["drill_progress_setup", None, None],  # creates the streams and the schedule table
        ["dialog_event_ingest", None, None],
        ["dialog_event_reapply", None, None],
        ["schedule_next_drills", scheduled.isoformat(), {"spread_minutes": 0}],
        ["trigger_reminders", now.isoformat(), None],
        ["drill_rollout", None, {"drill_slug": "04-lineage-drill", "drill_name": "Lineage drill"}],
        ["drill_progress_monitor", None, None],
        ["drill_progress_report", datetime(2026, 3, 11, tzinfo=UTC).isoformat(), None],
        ["drill_progress_rebuild", None, {"all_users": True}],  # a dry run (the default)
        ["drill_progress_maintenance", None, {"dry_run": True}],
    ]
    events_file = tmp_path / "openlineage.jsonl"
    states = [line for line in run_with_lineage(events_file, runs) if line.split(" ")[0] in {r[0] for r in runs}]
    assert states == [f"{dag_id} success" for dag_id, _, _ in runs]

    events = read_events(events_file)
    assert {e["job"]["namespace"] for e in events} == {JOB_NAMESPACE}
    dag_runs = {e["job"]["name"] for e in events if e["eventType"] == "COMPLETE" and "." not in e["job"]["name"]}
    assert dag_runs == {dag_id for dag_id, _, _ in runs}

    none = (set(), set())
    assert task_lineage(events) == {
        "drill_progress_setup.apply_migrations": (set(), tables(*TABLES)),
        "drill_progress_setup.create_aws_resources": (set(), {EVENTS, COMMANDS, SCHEDULE}),
        "dialog_event_ingest.plan_shards": ({EVENTS}, set()),
        "dialog_event_ingest.ingest_shard": (
            {EVENTS, table("drills")},
            {*tables(*AGGREGATE, "event_history"), COMMANDS},
        ),
        "dialog_event_ingest.publish_commands": (set(), {COMMANDS}),
        "dialog_event_ingest.summary": none,
        "dialog_event_reapply.reapply_rejected": (tables("drills"), {*tables(*AGGREGATE), COMMANDS}),
        "schedule_next_drills.plan": (tables(*DUE_INPUTS), {SCHEDULE}),
        "schedule_next_drills.send_slot": ({SCHEDULE, *tables(*DUE_INPUTS)}, {COMMANDS}),
        "schedule_next_drills.check_sends": none,
        "trigger_reminders.send_reminders": (tables("drill_instances"), {table("drill_instances"), COMMANDS}),
        "drill_rollout.roll_out_drill": (tables("users", "drills"), tables("drills", "drill_statuses")),
        "drill_progress_monitor.check_ingestion_lag": ({EVENTS}, set()),
        "drill_progress_monitor.today_so_far": none,
        "drill_progress_monitor.refresh_today": (tables(*REPORT_INPUTS), tables("drill_progress_daily")),
        "drill_progress_report.report_day": none,
        "drill_progress_report.replace_day": (tables(*REPORT_INPUTS), tables("drill_progress_daily")),
        "drill_progress_maintenance.prune_drill_database": none,
        "drill_progress_maintenance.prune_airflow_metadata": none,
        "drill_progress_maintenance.prune_task_logs": none,
        "drill_progress_rebuild.rebuild_users": (
            tables("event_history", "phone_numbers", "drills"),
            tables("users", "drill_statuses", "drill_instances"),
        ),
        "drill_progress_maintenance.keep_event_history": (set(), tables("event_history")),
        "drill_progress_maintenance.summary": none,
    }


def test_without_execute_in_thread_the_datasets_keep_their_logical_names_and_nothing_is_looked_up(monkeypatch, caplog):
    """The provider's default runs the listener in a forked child, where reading a Connection or a
    Variable can block until the child is killed: the extractor then looks nothing up and names
    the datasets by their Assets' stable URIs (and says how to get the physical names)."""
    from types import SimpleNamespace

    from drill_progress import lineage

    def refuse(*_args, **_kwargs):
        raise AssertionError("looked up")

    monkeypatch.setattr(lineage.Resolver, "postgres", refuse)
    monkeypatch.setattr(lineage.Resolver, "aws", refuse)
    task = SimpleNamespace(
        task_id="send_reminders",
        inlets=[assets.DRILL_INSTANCES],
        outlets=[assets.DRILL_INSTANCES, assets.COMMAND_STREAM, assets.DRILL_SCHEDULE],
    )
    found = lineage.operator_lineage(task)
    as_pairs = lambda datasets: [(d.namespace, d.name) for d in datasets]  # noqa: E731
    assert as_pairs(found.inputs) == [("postgres://drill_progress_db:5432", "drill_progress.public.drill_instances")]
    assert as_pairs(found.outputs) == [
        ("postgres://drill_progress_db:5432", "drill_progress.public.drill_instances"),
        ("kinesis://aws_default", "stream/dialog-commands"),
        ("dynamodb://aws_default", "table/drill-trigger-schedule"),
    ]
    assert "execute_in_thread is off" in caplog.text
