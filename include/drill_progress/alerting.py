"""Telling someone when the pipeline breaks: Airflow-native notifications through the amazon
provider's SNS notifier, to the topic named by the Variable `alert_topic_arn`.

Interface (used by the DAGs and their tasks):
- `notify(subject, message)`: publish one alert; without a topic configured, log it and return False.
- `on_task_failure`: the `on_failure_callback` of every DAG's default_args.

Never put phone numbers in an alert (mask them with `drill_progress.privacy`).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

ALERT_TOPIC_VARIABLE = "alert_topic_arn"


def topic_arn() -> str | None:
    """The SNS topic alerts go to (Variable `alert_topic_arn`), or None when alerting is off."""
    from airflow.sdk import Variable

    return Variable.get(ALERT_TOPIC_VARIABLE, default=None) or None


def notify(subject: str, message: str) -> bool:
    """Publish one alert to the topic; False (and a warning in the log) when no topic is configured."""
    arn = topic_arn()
    if not arn:
        log.warning("ALERT (no %s Variable set, not sent): %s: %s", ALERT_TOPIC_VARIABLE, subject, message)
        return False
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    from drill_progress import config

    SnsNotifier(aws_conn_id=config.AWS_CONN_ID, target_arn=arn, subject=subject[:100], message=message).notify({})
    return True


def on_task_failure(context) -> None:
    """on_failure_callback: one alert naming the DAG, the run, the task and the error's first line."""
    ti = context.get("ti") or context.get("task_instance")
    error = str(context.get("exception") or "").strip().splitlines()
    from drill_progress.privacy import mask_phones_in

    what = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"
    notify(
        f"Drill Progress: task {what} failed",
        mask_phones_in(f"Task {what} of run {getattr(ti, 'run_id', '?')} failed: {error[0] if error else '?'}"),
    )
