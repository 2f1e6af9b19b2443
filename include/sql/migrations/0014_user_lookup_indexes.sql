-- Issue 22: the User lookup on the Drill Progress page finds one phone number's commands and
-- set-aside records. Without these indexes each lookup read the whole outbox (tens of millions of
-- rows at a million users, beyond the page's 15 s statement timeout) and every set-aside record.
--
-- command_outbox_partition_key_idx: one more B-tree entry per enqueued command (publishing stays a
-- HOT update: published_at is still in no index). rejected_records_partition_key_idx: partial,
-- records without a partition key (not valid JSON) are never looked up.
-- CREATE INDEX holds a SHARE lock on the table while it builds (enqueues wait); migrations run in
-- a transaction, so not CONCURRENTLY: run the setup DAG outside the scheduling window (6.4 s for
-- 2,000,000 outbox rows on 2 cores: docs/database.md).
CREATE INDEX command_outbox_partition_key_idx ON command_outbox (partition_key);
CREATE INDEX rejected_records_partition_key_idx ON rejected_records (partition_key)
    WHERE partition_key IS NOT NULL;
