-- Pipeline health: commands enqueued but not yet published, per type.
SELECT command_type, count(*) AS pending, min(created_at) AS oldest_created_at
FROM command_outbox
WHERE published_at IS NULL
GROUP BY command_type
ORDER BY command_type
