-- The position a micro-batch covers, committed with its state changes. Never moves backwards
-- (a replay from an earlier timestamp re-reads behind the checkpoint without rewinding it).
INSERT INTO stream_checkpoints AS c (stream, shard_id, sequence_number, parent_shard_ids, records_applied,
                                     behind_ms, updated_at)
VALUES (%(stream)s, %(shard_id)s, %(sequence_number)s, %(parents)s::text[], %(records)s, %(behind_ms)s, now())
ON CONFLICT (stream, shard_id) DO UPDATE
SET sequence_number = CASE
        WHEN c.sequence_number IS NULL
          OR EXCLUDED.sequence_number::numeric > c.sequence_number::numeric THEN EXCLUDED.sequence_number
        ELSE c.sequence_number END,
    parent_shard_ids = EXCLUDED.parent_shard_ids,
    records_applied = c.records_applied + EXCLUDED.records_applied,
    behind_ms = EXCLUDED.behind_ms,
    updated_at = now()
