-- Issue 12: replays that cannot skip records, and set-aside records that can be re-applied.

-- When the last record covered by a shard's checkpoint reached the stream (Kinesis
-- ApproximateArrivalTimestamp). A replay (AT_TIMESTAMP) from later than this would move the
-- checkpoint past records that were never read: it is refused.
ALTER TABLE stream_checkpoints ADD COLUMN last_arrival_at timestamptz;

-- A set-aside record re-applied after a fix (DAG dialog_event_reapply): when, and how it ended
-- ('reapplied', or 'superseded' when its user had already moved past its seq).
ALTER TABLE rejected_records ADD COLUMN resolved_at timestamptz;
ALTER TABLE rejected_records ADD COLUMN resolution text;
CREATE INDEX rejected_records_unresolved_idx ON rejected_records (stream, shard_id) WHERE resolved_at IS NULL;
