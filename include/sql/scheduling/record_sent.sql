-- The conditional write of the daily scheduling's "never twice": each START_DRILL about to be
-- enqueued is recorded by idempotency key, in the transaction of its outbox row. A key already
-- recorded writes nothing and is not returned, so it is never enqueued again -- even after the
-- outbox row itself was pruned. Returns the keys that are new.
INSERT INTO sent_start_drills (idempotency_key, send_date)
SELECT k, %(send_date)s::date
FROM unnest(%(keys)s::text[]) AS k
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key
