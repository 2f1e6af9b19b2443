SELECT shard_id, sequence_number, shard_closed, behind_ms, records_applied, last_arrival_at
FROM stream_checkpoints
WHERE stream = %(stream)s
