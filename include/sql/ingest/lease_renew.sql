-- The holder renews its lease: in each micro-batch's transaction right before its write (the
-- fence: no row, the lease was taken over, and the transaction must not commit), and while idle.
-- Returns the live waiter, if any: the holder lets go for it.
UPDATE shard_leases
SET expires_at = now() + %(ttl_seconds)s * interval '1 second'
WHERE stream = %(stream)s AND shard_id = %(shard_id)s AND owner = %(owner)s
RETURNING CASE WHEN waiter_seen_at >= now() - %(waiter_stale_seconds)s * interval '1 second' THEN waiter END,
          CASE WHEN waiter_seen_at >= now() - %(waiter_stale_seconds)s * interval '1 second' THEN waiter_kind END
