-- Issue 15: the project runs unattended for a year. Old rows can be pruned without breaking a
-- promise, publishing a command is a HOT update, and ingestion lag is kept for a few days.
-- Design and figures: docs/operations.md.

-- 1. Pending commands live in their own small table, so that stamping published_at touches no
--    index of command_outbox (a column used by any index, in its key or in a partial index's
--    predicate, makes an update non-HOT in PostgreSQL 15). Publishers claim from this table;
--    publishing deletes the row here and stamps published_at there, in one transaction.
CREATE TABLE command_outbox_pending (
    id     bigint PRIMARY KEY,  -- command_outbox.id
    source text   NOT NULL      -- command_outbox.source, so that one producer publishes its own
);

INSERT INTO command_outbox_pending (id, source)
SELECT id, source FROM command_outbox WHERE published_at IS NULL;

-- Every row inserted unpublished is pending, whoever inserts it (outbox.enqueue, ingestion's
-- write statement, scheduling, a test): one set-based INSERT per statement, from the rows the
-- statement really inserted (ON CONFLICT DO NOTHING skips are not in new_commands).
CREATE FUNCTION command_outbox_track_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO command_outbox_pending (id, source)
    SELECT id, source FROM new_commands WHERE published_at IS NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER command_outbox_track_pending
    AFTER INSERT ON command_outbox
    REFERENCING NEW TABLE AS new_commands
    FOR EACH STATEMENT EXECUTE FUNCTION command_outbox_track_pending();

DROP INDEX command_outbox_unpublished_idx;
DROP INDEX command_outbox_published_at_idx;

-- created_at never changes after the insert, so indexing it keeps publishing HOT; it serves the
-- page's "commands per day" (a range of days) without reading the whole table.
CREATE INDEX command_outbox_created_at_idx ON command_outbox (created_at);

-- Room on each page for the new versions of its rows when they are published (HOT needs the new
-- version on the same page; a publish stamps every row of a page in one transaction). Measured
-- while choosing: 100 % of publishes HOT at 50, about half at 70, almost none at 100
-- (bench/bench_maintenance.py reports the share). Applies to pages written from now on.
ALTER TABLE command_outbox SET (fillfactor = 50);

-- 2. "One reminder per (instance, prompt), ever" no longer depends on outbox rows, which are
--    pruned: the prompts of an instance that were reminded are kept with the instance, written in
--    the transaction that enqueues the reminder. NULL = none (costs nothing on the many
--    instances never reminded).
ALTER TABLE drill_instances ADD COLUMN reminded_prompts text[];

UPDATE drill_instances AS di
SET reminded_prompts = r.prompts
FROM (
    SELECT (payload ->> 'drill_instance_id')::uuid AS drill_instance_id,
           array_agg(DISTINCT payload ->> 'prompt_slug' ORDER BY payload ->> 'prompt_slug') AS prompts
    FROM command_outbox
    WHERE command_type = 'TRIGGER_REMINDER'
      AND payload ->> 'drill_instance_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
      AND payload ->> 'prompt_slug' IS NOT NULL
    GROUP BY 1
) AS r
WHERE di.drill_instance_id = r.drill_instance_id;

-- 3. Ingestion lag, sampled by drill_progress_monitor (every 5 minutes) for the page's chart and
--    the lag alert; kept 7 days (drill_progress_maintenance prunes it).
CREATE TABLE ingestion_lag_samples (
    stream      text             NOT NULL,
    sampled_at  timestamptz      NOT NULL,
    lag_seconds double precision NOT NULL,  -- the worst shard: age of its oldest unread record
    shards      jsonb            NOT NULL,  -- {"shardId-...": seconds, ...}
    threshold_seconds double precision NOT NULL,  -- the alert threshold when sampled
    above       boolean          NOT NULL,  -- lag_seconds above that threshold
    alerted     boolean          NOT NULL DEFAULT false,  -- this sample raised the lag alert
    PRIMARY KEY (stream, sampled_at)
);
