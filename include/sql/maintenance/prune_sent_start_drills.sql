-- One batch of the prune of sent_start_drills (schedule_next_drills' "one START_DRILL per user,
-- drill and day" guard, migration 0010): rows for send dates before %(cutoff)s (today - 2 in
-- UTC: such a day can no longer send) are deleted, whatever the retention params say; with
-- %(dry_run)s they are only counted. Reads the next %(batch)s keys after %(after)s.
WITH scanned AS (
    SELECT idempotency_key, send_date
    FROM sent_start_drills
    WHERE idempotency_key > %(after)s::text
    ORDER BY idempotency_key
    LIMIT %(batch)s::int
), doomed AS (
    SELECT s.idempotency_key, pg_column_size(s.*) AS bytes
    FROM sent_start_drills AS s
    WHERE s.idempotency_key IN (SELECT idempotency_key FROM scanned WHERE send_date < %(cutoff)s::date)
), deleted AS (
    DELETE FROM sent_start_drills AS s
    USING doomed
    WHERE s.idempotency_key = doomed.idempotency_key
      AND s.send_date < %(cutoff)s::date
      AND NOT %(dry_run)s::boolean
    RETURNING 1
)
SELECT (SELECT max(idempotency_key) FROM scanned)    AS last_key,
       NULL::timestamptz                             AS oldest,
       (SELECT count(*) FROM scanned)                AS scanned,
       (SELECT count(*) FROM doomed)                 AS matched,
       (SELECT coalesce(sum(bytes), 0) FROM doomed)  AS bytes,
       (SELECT count(*) FROM deleted)                AS deleted
