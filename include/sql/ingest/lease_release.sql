-- The holder lets go of its lease, after its last commit: the waiter takes it at its next try.
UPDATE shard_leases
SET owner = NULL, owner_kind = NULL, owner_run_id = NULL, expires_at = NULL
WHERE stream = %(stream)s AND shard_id = %(shard_id)s AND owner = %(owner)s
