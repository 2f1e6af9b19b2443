-- Lock a chunk of unpublished commands for this publisher; concurrent publishers skip them.
SELECT id, idempotency_key, command_type, partition_key, payload::text
FROM command_outbox
WHERE published_at IS NULL
  AND (%(source)s::text IS NULL OR source = %(source)s)
  AND (%(keys)s::text[] IS NULL OR idempotency_key = ANY (%(keys)s::text[]))
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
