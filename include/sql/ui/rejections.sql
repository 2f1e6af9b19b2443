-- Pipeline health: records set aside in the last `hours` hours, newest first. raw_data is
-- never selected (it holds phone numbers); the caller masks partition_key and reason.
SELECT id, stream, shard_id, sequence_number, partition_key, reason, attempts, rejected_at
FROM rejected_records
WHERE rejected_at >= now() - make_interval(hours => %(hours)s::int)
ORDER BY rejected_at DESC, id DESC
LIMIT %(limit)s
