-- One batch of the prune of set-aside records (DAG drill_progress_maintenance): they hold raw
-- payloads with phone numbers, names and SMS answers. Reads the next %(batch)s rows in
-- primary-key order after %(after)s (ids grow with time) and deletes those set aside before
-- %(cutoff)s, resolved or not; with %(dry_run)s it only counts them. A row locked by a running
-- dialog_event_reapply is skipped (never waited for) and goes on the next run.
WITH scanned AS (
    SELECT id, rejected_at
    FROM rejected_records
    WHERE id > %(after)s::bigint
    ORDER BY id
    LIMIT %(batch)s::int
), doomed AS (
    SELECT r.id, pg_column_size(r.*) AS bytes
    FROM rejected_records AS r
    WHERE r.id IN (SELECT id FROM scanned WHERE rejected_at < %(cutoff)s::timestamptz)
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM rejected_records AS r
    USING doomed
    WHERE r.id = doomed.id
      AND NOT %(dry_run)s::boolean
    RETURNING r.id
)
SELECT (SELECT max(id) FROM scanned)                 AS last_key,
       (SELECT min(rejected_at) FROM scanned)        AS oldest,
       (SELECT count(*) FROM scanned)                AS scanned,
       (SELECT count(*) FROM doomed)                 AS matched,
       (SELECT coalesce(sum(bytes), 0) FROM doomed)  AS bytes,
       (SELECT count(*) FROM deleted)                AS deleted
