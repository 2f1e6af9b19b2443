-- Ingestion lag samples older than %(cutoff)s (drill_progress_monitor writes one per stream every
-- 5 minutes; a day is 288 rows per stream, so one statement is a small batch); with %(dry_run)s
-- they are only counted.
WITH doomed AS (
    SELECT stream, sampled_at, pg_column_size(s.*) AS bytes
    FROM ingestion_lag_samples AS s
    WHERE sampled_at < %(cutoff)s::timestamptz
), deleted AS (
    DELETE FROM ingestion_lag_samples AS s
    USING doomed
    WHERE s.stream = doomed.stream AND s.sampled_at = doomed.sampled_at
      AND NOT %(dry_run)s::boolean
    RETURNING 1
)
SELECT (SELECT count(*) FROM doomed)                 AS matched,
       (SELECT coalesce(sum(bytes), 0) FROM doomed)  AS bytes,
       (SELECT count(*) FROM deleted)                AS deleted
