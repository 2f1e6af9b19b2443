-- Pipeline health: ingestion checkpoint lag per stream shard (age measured by the database clock),
-- with the shard's lease: which kind of ingest run holds it (and its Airflow run id), for how long
-- it still holds without a renewal, and how many hand-overs the shard has seen. A lease let go
-- (expires_at NULL) or expired has no holder: no consumer is on the shard.
SELECT c.stream, c.shard_id, c.behind_ms, c.records_applied, c.shard_closed, c.updated_at,
       extract(epoch FROM now() - c.updated_at) AS age_seconds,
       CASE WHEN h.held THEN l.owner_kind END AS lease_holder_kind,
       CASE WHEN h.held THEN l.owner_run_id END AS lease_holder_run_id,
       CASE WHEN h.held THEN extract(epoch FROM l.expires_at - now()) END AS lease_expires_in_seconds,
       coalesce(l.handovers, 0) AS handovers
FROM stream_checkpoints AS c
LEFT JOIN shard_leases AS l ON l.stream = c.stream AND l.shard_id = c.shard_id
CROSS JOIN LATERAL (SELECT coalesce(l.expires_at > now(), false) AS held) AS h
ORDER BY c.stream, c.shard_id
