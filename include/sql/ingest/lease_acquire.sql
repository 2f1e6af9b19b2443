-- Take a shard's lease if it is free, expired or already ours, and no other live consumer waits
-- for it; otherwise register as its waiter when nobody else (alive) does. One statement, so the
-- row lock orders it with the holder's renewal (lease_renew.sql): a lease renewed in a transaction
-- that is still open is taken only after that transaction ends, and is then found held.
-- Returns the row as it now is: `owner` tells whether we hold it.
INSERT INTO shard_leases AS l (stream, shard_id, owner, owner_kind, owner_run_id, acquired_at, expires_at)
VALUES (%(stream)s, %(shard_id)s, %(owner)s, %(kind)s, %(run_id)s, now(),
        now() + %(ttl_seconds)s * interval '1 second')
ON CONFLICT (stream, shard_id) DO UPDATE
SET owner = EXCLUDED.owner,
    owner_kind = EXCLUDED.owner_kind,
    owner_run_id = EXCLUDED.owner_run_id,
    acquired_at = CASE WHEN l.owner IS DISTINCT FROM EXCLUDED.owner THEN now() ELSE l.acquired_at END,
    expires_at = EXCLUDED.expires_at,
    handovers = l.handovers + CASE WHEN l.owner IS DISTINCT FROM EXCLUDED.owner THEN 1 ELSE 0 END,
    waiter = CASE WHEN l.waiter = EXCLUDED.owner THEN NULL ELSE l.waiter END,
    waiter_kind = CASE WHEN l.waiter = EXCLUDED.owner THEN NULL ELSE l.waiter_kind END,
    waiter_seen_at = CASE WHEN l.waiter = EXCLUDED.owner THEN NULL ELSE l.waiter_seen_at END
WHERE (l.owner IS NULL OR l.owner = EXCLUDED.owner OR l.expires_at < now())
  AND (l.waiter IS NULL OR l.waiter = EXCLUDED.owner
       OR l.waiter_seen_at < now() - %(waiter_stale_seconds)s * interval '1 second')
RETURNING owner, owner_kind, waiter, waiter_kind
