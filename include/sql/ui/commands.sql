-- Pipeline health: commands published per UTC day and command type over the last `days` days
-- (today included), and what is still waiting in the outbox.
SELECT (published_at AT TIME ZONE 'UTC')::date AS day, command_type, count(*) AS commands
FROM command_outbox
WHERE published_at >= ((now() AT TIME ZONE 'UTC')::date - (%(days)s::int - 1))::timestamp AT TIME ZONE 'UTC'
GROUP BY 1, 2
ORDER BY 1, 2
