-- Unresolved set-aside records of a stream in stream order (shard, then sequence number), one
-- chunk after the position (%(after_shard)s, %(after_seq)s) (keyset pagination), optionally of one
-- shard and rejected within [%(since)s, %(until)s). Served by rejected_records_unresolved_idx.
SELECT id, shard_id, sequence_number, raw_data
FROM rejected_records
WHERE stream = %(stream)s
  AND resolved_at IS NULL
  AND (%(shard_id)s::text IS NULL OR shard_id = %(shard_id)s::text)
  AND (%(since)s::timestamptz IS NULL OR rejected_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR rejected_at < %(until)s::timestamptz)
  AND (shard_id, sequence_number::numeric) > (%(after_shard)s::text, %(after_seq)s::numeric)
ORDER BY shard_id, sequence_number::numeric
LIMIT %(limit)s
