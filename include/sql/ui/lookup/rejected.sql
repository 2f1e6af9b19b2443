-- User lookup: the records set aside for the given phone numbers (their partition key), newest
-- first (rejected_records_partition_key_idx). raw_data is never selected; the caller masks reason.
SELECT id, stream, shard_id, sequence_number, partition_key, reason, attempts, rejected_at, resolved_at, resolution
FROM rejected_records
WHERE partition_key = ANY (%(phone_numbers)s::text[])
ORDER BY rejected_at DESC, id DESC
LIMIT %(limit)s
