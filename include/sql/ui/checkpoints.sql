-- Pipeline health: ingestion checkpoint lag per stream shard (age measured by the database clock).
SELECT stream, shard_id, behind_ms, records_applied, shard_closed, updated_at,
       extract(epoch FROM now() - updated_at) AS age_seconds
FROM stream_checkpoints
ORDER BY stream, shard_id
