-- Ingestion lag: the committed position of each shard of one stream (what ingestion has applied).
SELECT shard_id, sequence_number, shard_closed
FROM stream_checkpoints
WHERE stream = %(stream)s
