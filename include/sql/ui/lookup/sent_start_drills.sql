-- User lookup: which of the given START_DRILL idempotency keys daily scheduling recorded as sent
-- (exact primary-key lookups; the caller derives the keys with scheduling.planning.idempotency_key).
SELECT idempotency_key, send_date
FROM sent_start_drills
WHERE idempotency_key = ANY (%(keys)s::text[])
ORDER BY send_date DESC, idempotency_key
