-- Lock a chunk of pending commands for this publisher; concurrent publishers skip them.
-- Pending commands are the rows of command_outbox_pending (migration 0011): a small table, read
-- in id order through its primary key; the commands themselves are then fetched by id.
WITH claimed AS (
    SELECT p.id
    FROM command_outbox_pending AS p
    WHERE (%(source)s::text IS NULL OR p.source = %(source)s)
      AND (%(keys)s::text[] IS NULL
           OR p.id IN (SELECT o.id FROM command_outbox AS o WHERE o.idempotency_key = ANY (%(keys)s::text[])))
    ORDER BY p.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
SELECT o.id, o.idempotency_key, o.command_type, o.partition_key, o.payload::text
FROM claimed
JOIN command_outbox AS o ON o.id = claimed.id
ORDER BY o.id
