-- Issue 21: a batch's `seq` is, in production, the Kinesis sequence number of the command that
-- caused it: 56 digits today, up to 129 allowed by Kinesis. numeric(30,0) refused every real batch.
-- An unconstrained numeric holds any integer exactly (up to 131,072 digits) and compares exactly.
--
-- Dropping a numeric's precision is binary-compatible: PostgreSQL changes the catalog only. No
-- table rewrite, no index rebuild (no index holds seq), no scan: the ALTER holds its ACCESS
-- EXCLUSIVE lock on users for a catalog update, a few milliseconds at any table size
-- (docs/database.md has the figure at 1,000,000 users). It waits for ingestion's open transactions
-- on users (a micro-batch's transaction: milliseconds); the 3 s lock timeout keeps a long wait from
-- queueing ingestion behind it (its own lock timeout is 10 s), and the
-- setup DAG's retry tries again.
SET LOCAL lock_timeout = '3s';

ALTER TABLE users ALTER COLUMN seq TYPE numeric;
