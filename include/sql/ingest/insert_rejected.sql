-- Bad input set aside with its reason; a record already set aside (re-delivery, replay) is
-- never set aside twice.
INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason, attempts)
SELECT %(stream)s, %(shard_id)s, v.sequence_number, v.partition_key, v.raw_data, v.reason, v.attempts
FROM unnest(%(sequence_numbers)s::text[], %(partition_keys)s::text[], %(raw)s::bytea[], %(reasons)s::text[],
            %(attempts)s::int[]) AS v(sequence_number, partition_key, raw_data, reason, attempts)
ON CONFLICT (stream, shard_id, sequence_number) DO NOTHING
