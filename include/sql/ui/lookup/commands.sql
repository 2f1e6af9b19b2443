-- User lookup: the commands sent (or waiting to be sent) to the given phone numbers, newest first
-- (command_outbox_partition_key_idx). Published rows older than the outbox retention are pruned.
SELECT o.idempotency_key, o.command_type, o.partition_key, o.payload, o.source, o.created_at AS enqueued_at,
       o.published_at, o.attempts, o.last_error,
       EXISTS (SELECT 1 FROM command_outbox_pending AS p WHERE p.id = o.id) AS pending
FROM command_outbox AS o
WHERE o.partition_key = ANY (%(phone_numbers)s::text[])
ORDER BY o.created_at DESC, o.id DESC
LIMIT %(limit)s
