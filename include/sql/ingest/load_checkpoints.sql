SELECT shard_id, sequence_number, shard_closed, behind_ms, records_applied
FROM stream_checkpoints
WHERE stream = %(stream)s
