-- Pipeline health: ingestion lag samples of the last `hours` hours (drill_progress_monitor, every
-- 5 minutes), per stream, oldest first.
SELECT stream, sampled_at, lag_seconds, threshold_seconds, above, alerted
FROM ingestion_lag_samples
WHERE sampled_at >= now() - make_interval(hours => %(hours)s::int)
ORDER BY stream, sampled_at
