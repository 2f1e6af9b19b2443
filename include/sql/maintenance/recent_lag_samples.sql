-- The lag samples of one stream since %(since)s, oldest first (the alert's memory; the page's chart).
SELECT sampled_at, lag_seconds, above, alerted
FROM ingestion_lag_samples
WHERE stream = %(stream)s AND sampled_at >= %(since)s::timestamptz
ORDER BY sampled_at
