UPDATE command_outbox
SET published_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY (%(ids)s::bigint[])
