-- Issue 22: the event history to rebuild from. Every record ingestion reads (applied, skipped as a
-- duplicate or late, or set aside) is kept, written by the same statement and transaction as the
-- effects it has (include/sql/ingest/write_trees.sql): no batch whose effects are committed can be
-- missing from it, even when a worker is killed between any two steps. A replay writes a record
-- again: a duplicate is harmless (the rebuild's seq guard skips it exactly as ingestion did).
--
-- `id` is the order in which ingestion applied the records: per phone number, stream order (one
-- shard at a time, a parent shard drained before its children). The rebuild folds a user's records
-- in that order, so it reproduces what ingestion did, late batches included.
--
-- Partitioned by month on recorded_at: retention (drill_progress_maintenance,
-- history_retention_days, default 400) drops whole months, no DELETE, no bloat. Partitions are
-- created ahead (event_history_ensure_partitions, run here and by the maintenance DAG daily); the
-- DEFAULT partition only catches rows if that has not run for months, so an insert never fails.
-- Design and cost per year: docs/history.md.
CREATE TABLE event_history (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    phone_number    text        NOT NULL,  -- the batch's phone number; for a record set aside, its partition key
    stream          text        NOT NULL,
    shard_id        text        NOT NULL,
    sequence_number text        NOT NULL,
    arrival         timestamptz,
    raw_data        bytea       NOT NULL
) PARTITION BY RANGE (recorded_at);

-- a user's history in order (each partition gets its own index)
CREATE INDEX event_history_phone_idx ON event_history (phone_number, id);

CREATE TABLE event_history_default PARTITION OF event_history DEFAULT;

-- Since when the history is complete: a user created before `complete_since` has batches that the
-- history never saw (they were applied before this migration, or pruned), and is not rebuilt.
CREATE TABLE event_history_coverage (
    singleton      boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    complete_since timestamptz NOT NULL
);
INSERT INTO event_history_coverage (complete_since) VALUES (now());

-- Monthly partitions (UTC months) from the month of `from_day` for `months` months; existing ones are kept.
-- Identifiers come from dates only (format %I); no value of any row reaches the DDL.
CREATE FUNCTION event_history_ensure_partitions(from_day date, months integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', from_day)::date;
    low date;
    name text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        low := (first + make_interval(months => i))::date;
        name := format('event_history_%s', to_char(low, 'YYYYMM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF event_history FOR VALUES FROM (%L) TO (%L)',
                name, low::timestamp AT TIME ZONE 'UTC', (low + interval '1 month')::timestamp AT TIME ZONE 'UTC'
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

SELECT event_history_ensure_partitions(current_date, 3);

-- Retention (drill_progress_maintenance, history_retention_days): drops each monthly partition
-- whose whole month is older than `cutoff` (and deletes the DEFAULT partition's rows older than
-- it), then records that the history is complete only since then. A dry run reports the same
-- partitions and drops nothing. Dropping a partition locks event_history for a moment: the lock
-- timeout keeps ingestion from queueing behind it (the next day's run tries again).
CREATE FUNCTION event_history_drop_before(cutoff timestamptz, dry_run boolean)
RETURNS TABLE (partition_name text, month_end timestamptz, row_estimate bigint, bytes bigint)
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    deleted bigint;
BEGIN
    SET LOCAL lock_timeout = '2s';
    FOR part IN
        SELECT c.oid, c.relname::text AS name, greatest(c.reltuples, 0)::bigint AS estimate,
               (to_date(substr(c.relname, 15), 'YYYYMM') + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS upper
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'event_history'::regclass AND c.relname ~ '^event_history_[0-9]{6}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN part.upper > cutoff;
        partition_name := part.name;
        month_end := part.upper;
        row_estimate := part.estimate;
        bytes := pg_total_relation_size(part.oid);
        IF NOT dry_run THEN
            EXECUTE format('DROP TABLE %I', part.name);
            UPDATE event_history_coverage SET complete_since = greatest(complete_since, part.upper);
        END IF;
        RETURN NEXT;
    END LOOP;
    IF dry_run THEN
        SELECT count(*) INTO deleted FROM event_history_default WHERE recorded_at < cutoff;
    ELSE
        DELETE FROM event_history_default WHERE recorded_at < cutoff;
        GET DIAGNOSTICS deleted = ROW_COUNT;
        IF deleted > 0 THEN
            UPDATE event_history_coverage SET complete_since = greatest(complete_since, cutoff);
        END IF;
    END IF;
    IF deleted > 0 THEN
        partition_name := 'event_history_default';
        month_end := cutoff;
        row_estimate := deleted;
        bytes := NULL;
        RETURN NEXT;
    END IF;
END
$$;
