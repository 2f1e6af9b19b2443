"""Custom operators. Light imports only: DAG files import this module at parse time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

# A slot due within this margin is sent at once rather than deferred for a few seconds.
DEFER_MARGIN = timedelta(seconds=1)


class SendScheduledSlotOperator(BaseOperator):
    """Sends one time slot of the day's next-drill schedule (drill_progress.scheduling).

    Mapped over the slot specs of the planning task: `.partial(task_id=...).expand(slot=...)`.
    Until the slot's `send_at` it is *deferred* on a DateTimeTrigger: it holds no worker slot,
    the triggerer wakes it. Then it sends the slot's requests paced to the second
    (`sending.send_slot`), holding its worker slot until the slot's last planned time (about
    the slot's width). A slot whose time has already come (a late or retried run) does not
    defer. All the resume data is the operator's own `slot` attribute (the mapped argument),
    never the defer kwargs.
    """

    template_fields = ("slot",)
    ui_color = "#e8f4ea"

    def __init__(self, *, slot: dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slot = slot

    def send_at(self) -> datetime:
        return datetime.fromisoformat(self.slot["send_at"]).astimezone(UTC)

    def execute(self, context: Any) -> dict:
        send_at = self.send_at()
        if send_at - datetime.now(UTC) > DEFER_MARGIN:
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.log.info("slot %s deferred until %s", self.slot["slot"], send_at.isoformat())
            self.defer(trigger=DateTimeTrigger(moment=send_at), method_name="execute_complete")
        return self._send(deferred=False)

    def execute_complete(self, context: Any, event: Any = None) -> dict:
        self.log.info(
            "slot %s resumed at %s (trigger event %s)", self.slot["slot"], datetime.now(UTC).isoformat(), event
        )
        return self._send(deferred=True)

    def get_openlineage_facets_on_complete(self, task_instance: Any):
        """OpenLineage: the declared inlets and outlets (the schedule table, the aggregate, the command
        stream) with their physical names (drill_progress.lineage). Called by the OpenLineage
        listener only, after the task ran."""
        from drill_progress import lineage

        return lineage.operator_lineage(self)

    def _send(self, deferred: bool) -> dict:
        from drill_progress.scheduling import tasks

        return tasks.send_slot(self.slot, deferred=deferred)
