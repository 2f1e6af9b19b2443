-- Wait for a shard's lease: be its waiter (the holder lets go for us) unless another live consumer
-- already is. Returns the holder and the waiter as they now are.
UPDATE shard_leases
SET waiter = %(owner)s, waiter_kind = %(kind)s, waiter_seen_at = now()
WHERE stream = %(stream)s AND shard_id = %(shard_id)s
  AND (waiter IS NULL OR waiter = %(owner)s
       OR waiter_seen_at < now() - %(waiter_stale_seconds)s * interval '1 second')
RETURNING owner, owner_kind, waiter, waiter_kind
