"""Airflow glue of `drill_rollout` (called from the task body only)."""

from __future__ import annotations

from drill_progress import connections
from drill_progress.db import masked_errors
from drill_progress.rollout import add_drill


@masked_errors
def roll_out_drill(params: dict) -> dict:
    """Task `roll_out_drill`: add the drill to the catalog and to every matching user."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return add_drill.roll_out(connections.db_engine(), **add_drill.from_params(params))
    except add_drill.RolloutRefused as refused:
        raise AirflowFailException(str(refused)) from refused  # no retries: nothing would change
