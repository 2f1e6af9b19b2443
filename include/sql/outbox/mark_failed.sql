UPDATE command_outbox
SET attempts = attempts + 1, last_error = %(error)s
WHERE id = ANY (%(ids)s::bigint[])
