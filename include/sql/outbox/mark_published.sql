-- Published: no longer pending, and stamped. The UPDATE changes no indexed column of
-- command_outbox, so it is a HOT update (the table keeps room on its pages: fillfactor 50).
WITH sent AS (
    DELETE FROM command_outbox_pending WHERE id = ANY (%(ids)s::bigint[]) RETURNING id
)
UPDATE command_outbox AS o
SET published_at = now(), attempts = o.attempts + 1, last_error = NULL
FROM sent
WHERE o.id = sent.id
