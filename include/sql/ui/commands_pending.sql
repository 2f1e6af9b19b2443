-- Pipeline health: commands enqueued but not yet published, per type (the pending table is small).
SELECT o.command_type, count(*) AS pending, min(o.created_at) AS oldest_created_at
FROM command_outbox_pending AS p
JOIN command_outbox AS o ON o.id = p.id
GROUP BY o.command_type
ORDER BY o.command_type
