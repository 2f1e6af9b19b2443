-- Write commands to the outbox; a key that is already there (a re-delivered cause, a retry,
-- a re-run) writes nothing. Returns the keys that are new.
INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source)
SELECT k, t, p, d::jsonb, %(source)s
FROM unnest(%(keys)s::text[], %(types)s::text[], %(phones)s::text[], %(payloads)s::text[]) AS c(k, t, p, d)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key
