-- One batch of the outbox prune (DAG drill_progress_maintenance, drill_progress.maintenance.prune).
-- Reads the next %(batch)s rows in primary-key order after %(after)s (ids grow with time), and
-- deletes those published before %(cutoff)s; with %(dry_run)s it only counts them. A pending
-- (unpublished) command is never deleted, however old. No promise depends on these rows: reminders
-- are recorded on the instance (drill_instances.reminded_prompts), daily START_DRILLs in
-- sent_start_drills, ingestion's commands are guarded by each user's seq.
-- The caller commits after each batch and stops once a batch holds only rows created after the
-- cutoff (plus a margin): a short transaction per batch, row locks only on the rows deleted.
WITH scanned AS (
    SELECT id, created_at, published_at
    FROM command_outbox
    WHERE id > %(after)s::bigint
    ORDER BY id
    LIMIT %(batch)s::int
), doomed AS (
    SELECT o.id, pg_column_size(o.*) AS bytes
    FROM command_outbox AS o
    WHERE o.id IN (SELECT id FROM scanned WHERE published_at < %(cutoff)s::timestamptz)
), deleted AS (
    DELETE FROM command_outbox AS o
    USING doomed
    WHERE o.id = doomed.id
      AND o.published_at < %(cutoff)s::timestamptz
      AND NOT %(dry_run)s::boolean
    RETURNING o.id
)
SELECT (SELECT max(id) FROM scanned)                 AS last_key,
       (SELECT min(created_at) FROM scanned)         AS oldest,
       (SELECT count(*) FROM scanned)                AS scanned,
       (SELECT count(*) FROM doomed)                 AS matched,
       (SELECT coalesce(sum(bytes), 0) FROM doomed)  AS bytes,
       (SELECT count(*) FROM deleted)                AS deleted
