-- One ingestion lag sample (drill_progress_monitor); a second sample at the same instant is a no-op.
INSERT INTO ingestion_lag_samples (stream, sampled_at, lag_seconds, shards, threshold_seconds, above, alerted)
VALUES (%(stream)s, %(sampled_at)s, %(lag_seconds)s, %(shards)s::jsonb, %(threshold_seconds)s, %(above)s, %(alerted)s)
ON CONFLICT (stream, sampled_at) DO NOTHING
