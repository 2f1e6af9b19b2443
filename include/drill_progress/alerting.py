"""Telling someone when the pipeline breaks: Airflow-native notifications through the amazon
provider's SNS notifier (`SnsNotifier`), to the topic named by the Variable `alert_topic_arn`
(connection `aws_default`). Without that Variable alerting is off: alerts are logged as warnings.

Interface (used by the DAGs and their tasks):
- `notify(subject, message)`: publish one alert; without a topic configured, log it and return False.
- `on_task_failure`: the `on_failure_callback` of every DAG's default_args (dag_defaults.DEFAULT_ARGS):
  one alert per failed task (after its last retry), naming the DAG, the run, the task and the
  error's first line, phone numbers masked.
- `deadline_missed`: a Deadline Alert callback (`SyncCallback`) for a DAG run not finished in time.
  Tested, but no DAG attaches a Deadline Alert yet (apache/airflow#73428: docs/operations.md).

The other alerts are raised where their facts are known: ingestion lag by drill_progress_monitor
(drill_progress.maintenance.lag), a scheduling run that sent far fewer commands than it planned by
schedule_next_drills. Never put a phone number in an alert (mask it with drill_progress.privacy):
SNS delivers to people's mailboxes and phones.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

ALERT_TOPIC_VARIABLE = "alert_topic_arn"
SUBJECT_LIMIT = 100  # SNS: at most 100 printable ASCII characters, no line breaks
SUBJECT_PREFIX = "Drill Progress: "


def topic_arn() -> str | None:
    """The SNS topic alerts go to (Variable `alert_topic_arn`), or None when alerting is off."""
    from airflow.sdk import Variable

    return Variable.get(ALERT_TOPIC_VARIABLE, default=None) or None


def subject_line(text: str) -> str:
    """An SNS-acceptable subject: printable ASCII on one line, at most 100 characters."""
    line = " ".join(text.split())
    line = "".join(ch if " " <= ch <= "~" else "?" for ch in line)
    return line[:SUBJECT_LIMIT]


def notify(subject: str, message: str) -> bool:
    """Publish one alert to the topic; False (and a warning in the log) when no topic is configured."""
    arn = topic_arn()
    if not arn:
        log.warning("ALERT (no %s Variable set, not sent): %s: %s", ALERT_TOPIC_VARIABLE, subject, message)
        return False
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    from drill_progress import config

    subject = subject_line(subject)
    SnsNotifier(aws_conn_id=config.AWS_CONN_ID, target_arn=arn, subject=subject, message=message).notify({})
    log.info("alert sent to %s: %s", arn, subject)
    return True


def _first_line(error: object) -> str:
    lines = str(error or "").strip().splitlines()
    return lines[0][:500] if lines else "?"


def failure_message(context) -> tuple[str, str]:
    """(subject, message) for a failed task, from its callback context."""
    from drill_progress.privacy import mask_phones_in

    ti = context.get("ti") or context.get("task_instance")
    dag_id, task_id = getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?")
    lines = [
        f"Task {task_id} of DAG {dag_id} failed after its last attempt.",
        f"Run: {getattr(ti, 'run_id', '?')} (try {getattr(ti, 'try_number', '?')})",
        f"Error: {mask_phones_in(_first_line(context.get('exception')))}",
    ]
    log_url = getattr(ti, "log_url", None)
    if log_url:
        lines.append(f"Log: {log_url}")
    lines.append(f"What to do: the DAG's Docs in the Airflow UI ({dag_id}) say how to re-run it.")
    return f"{SUBJECT_PREFIX}{dag_id}.{task_id} failed", "\n".join(lines)


def on_task_failure(context) -> None:
    """on_failure_callback: one alert naming the DAG, the run, the task and the error's first line.
    Never raises: a broken alert channel must not hide the task's own failure."""
    try:
        notify(*failure_message(context))
    except Exception:
        log.exception("could not send the task failure alert")


def deadline_missed(context: dict | None = None, what: str = "") -> None:
    """Deadline Alert callback (SyncCallback): the DAG run named in `context` has not finished by
    its deadline. Raises if the alert cannot be sent, so that Airflow records the callback failed."""
    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    dag_id = run.get("dag_id", "?")
    message = "\n".join(
        [
            f"DAG run {run.get('dag_run_id') or run.get('run_id', '?')} of {dag_id} had not finished by its deadline "
            f"({deadline.get('deadline_time', '?')}); it is {run.get('state', '?')}.",
            what or "Check its tasks in the Airflow UI.",
        ]
    )
    notify(f"{SUBJECT_PREFIX}{dag_id} missed its deadline", message)
