"""Commands to the Dialog Context, through a transactional outbox.

`commands`: the command records of the contract (§5) and publishing them to the command stream.
`queue`: the `command_outbox` table: enqueue with the state change that causes a command, publish
after commit, each idempotency key written once.
"""

from drill_progress.outbox.commands import Command, start_drill, trigger_reminder
from drill_progress.outbox.queue import PublishError, enqueue, publish_pending

__all__ = ["Command", "PublishError", "enqueue", "publish_pending", "start_drill", "trigger_reminder"]
