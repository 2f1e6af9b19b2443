"""Alerts through the amazon provider's SNS notifier, read back from an SQS queue subscribed to a
topic on the moto emulator: the API, the failure callback every DAG gets, the deadline callback."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from airflow_support import run_state
from maintenance_support import alert_topic

from drill_progress import alerting

PHONE = "+15551230001"


def test_notify_publishes_to_the_topic_of_the_variable(airflow_env, moto_server, monkeypatch):
    topic = alert_topic(moto_server)
    monkeypatch.setenv("AIRFLOW_VAR_ALERT_TOPIC_ARN", topic.arn)
    assert alerting.notify("Drill Progress: something broke", "line one\nline two") is True
    received = topic.received()
    assert [(m["Subject"], m["Message"]) for m in received] == [
        ("Drill Progress: something broke", "line one\nline two")
    ]
    assert received[0]["TopicArn"] == topic.arn


def test_without_a_topic_the_alert_is_logged_not_sent(airflow_env, moto_server, monkeypatch, caplog):
    topic = alert_topic(moto_server)
    monkeypatch.delenv("AIRFLOW_VAR_ALERT_TOPIC_ARN", raising=False)
    with caplog.at_level(logging.WARNING, logger="drill_progress.alerting"):
        assert alerting.notify("Drill Progress: x", "y") is False
    assert "ALERT (no alert_topic_arn Variable set, not sent): Drill Progress: x: y" in caplog.text
    assert topic.received() == []


def test_subject_is_one_printable_ascii_line_of_at_most_100_characters():
    assert alerting.subject_line("a\nb\tc  é ✓") == "a b c ? ?"
    assert alerting.subject_line("x" * 150) == "x" * 100


def test_failure_message_names_the_task_and_masks_phone_numbers():
    ti = SimpleNamespace(dag_id="trigger_reminders", task_id="send_reminders", run_id="scheduled__2026-03-02T15:00:00+00:00",
                         try_number=4, log_url="http://airflow/log")  # fmt: skip
    error = RuntimeError(f"23505: duplicate key for {PHONE}\nDETAIL: Key (phone_number)=({PHONE}) already exists")
    subject, message = alerting.failure_message({"ti": ti, "exception": error})
    assert subject == "Drill Progress: trigger_reminders.send_reminders failed"
    assert message.splitlines() == [
        "Task send_reminders of DAG trigger_reminders failed after its last attempt.",
        "Run: scheduled__2026-03-02T15:00:00+00:00 (try 4)",
        "Error: 23505: duplicate key for ***0001",
        "Log: http://airflow/log",
        "What to do: the DAG's Docs in the Airflow UI (trigger_reminders) say how to re-run it.",
    ]
    assert PHONE not in message


def test_failure_callback_never_raises(monkeypatch, caplog):
    def broken(subject, message):
        raise ConnectionError("SNS unreachable")

    monkeypatch.setattr(alerting, "notify", broken)
    with caplog.at_level(logging.ERROR, logger="drill_progress.alerting"):
        alerting.on_task_failure({"ti": None, "exception": None})
    assert "could not send the task failure alert" in caplog.text


def test_a_task_failing_in_any_dag_alerts_the_topic(run_dag, airflow_env, moto_server, monkeypatch):
    """trigger_reminders with floor >= ceil fails without retries; the failure callback every DAG
    gets from DEFAULT_ARGS publishes one alert naming the DAG, the task and the error."""
    topic = alert_topic(moto_server)
    monkeypatch.setenv("AIRFLOW_VAR_ALERT_TOPIC_ARN", topic.arn)
    run = run_dag("trigger_reminders", {"floor_minutes": 1440, "ceil_minutes": 240})
    assert run_state(run) == "failed"
    received = topic.received()
    assert [m["Subject"] for m in received] == ["Drill Progress: trigger_reminders.send_reminders failed"]
    lines = received[0]["Message"].splitlines()
    assert lines[0] == "Task send_reminders of DAG trigger_reminders failed after its last attempt."
    assert lines[2] == (
        "Error: floor_minutes (1440) must be less than ceil_minutes (240): a reminder goes to prompts started "
        "between ceil_minutes and floor_minutes before the run"
    )


def test_deadline_callback_alerts_the_topic(airflow_env, moto_server, monkeypatch):
    topic = alert_topic(moto_server)
    monkeypatch.setenv("AIRFLOW_VAR_ALERT_TOPIC_ARN", topic.arn)
    context = {
        "dag_run": {"dag_id": "drill_progress_maintenance", "dag_run_id": "scheduled__2026-03-02", "state": "running"},
        "deadline": {"id": "d1", "deadline_time": "2026-03-02T04:30:00+00:00"},
    }
    alerting.deadline_missed(context, what="Still pruning after 2 hours.")
    received = topic.received()
    assert [(m["Subject"], m["Message"]) for m in received] == [
        (
            "Drill Progress: drill_progress_maintenance missed its deadline",
            "DAG run scheduled__2026-03-02 of drill_progress_maintenance had not finished by its deadline "
            "(2026-03-02T04:30:00+00:00); it is running.\nStill pruning after 2 hours.",
        )
    ]
