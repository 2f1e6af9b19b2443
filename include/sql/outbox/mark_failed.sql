-- Still pending (its command_outbox_pending row stays): one more attempt, and why it failed.
UPDATE command_outbox
SET attempts = attempts + 1, last_error = %(error)s
WHERE id = ANY (%(ids)s::bigint[])
