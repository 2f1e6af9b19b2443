-- A closed shard read to its end: its children may be read now.
INSERT INTO stream_checkpoints AS c (stream, shard_id, parent_shard_ids, shard_closed, behind_ms, updated_at)
VALUES (%(stream)s, %(shard_id)s, %(parents)s::text[], true, 0, now())
ON CONFLICT (stream, shard_id) DO UPDATE SET shard_closed = true, behind_ms = 0, updated_at = now()
