-- A shard being consumed but idle: how far behind its tip it is, and that its consumer is alive
-- (updated_at). Never moves the checkpoint's position. Creates the row of a shard never read yet.
INSERT INTO stream_checkpoints AS c (stream, shard_id, parent_shard_ids, behind_ms, updated_at)
VALUES (%(stream)s, %(shard_id)s, %(parents)s::text[], %(behind_ms)s, now())
ON CONFLICT (stream, shard_id) DO UPDATE SET behind_ms = EXCLUDED.behind_ms, updated_at = now()
