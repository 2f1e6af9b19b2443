-- no-transaction
-- Issue 22: the User lookup on the Drill Progress page finds one phone number's commands and
-- set-aside records. Without these indexes each lookup read the whole outbox (tens of millions of
-- rows at a million users, beyond the page's 15 s statement timeout) and every set-aside record.
--
-- command_outbox_partition_key_idx: one more B-tree entry per enqueued command (publishing stays a
-- HOT update: published_at is still in no index). rejected_records_partition_key_idx: partial,
-- records without a partition key (not valid JSON) are never looked up.
--
-- Built CONCURRENTLY, outside a transaction (the first line): a plain CREATE INDEX would hold a
-- SHARE lock on the outbox for the whole build (about a minute at a million users' 30-day
-- outbox), and ingestion's micro-batches would time out behind it. Each statement runs on its own;
-- after a failure part way the migration runs again from the start (an interrupted build leaves
-- an invalid index, dropped first).
DROP INDEX CONCURRENTLY IF EXISTS command_outbox_partition_key_idx;
CREATE INDEX CONCURRENTLY command_outbox_partition_key_idx ON command_outbox (partition_key);
DROP INDEX CONCURRENTLY IF EXISTS rejected_records_partition_key_idx;
CREATE INDEX CONCURRENTLY rejected_records_partition_key_idx ON rejected_records (partition_key)
    WHERE partition_key IS NOT NULL;
