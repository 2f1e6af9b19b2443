-- Pipeline health: commands published per UTC day and command type over the last `days` days
-- (today included).
-- Read through command_outbox_created_at_idx (publishing never changes created_at, so the index
-- keeps publishes HOT): a command is published after it is created, so the rows published in the
-- window were created in it, or in the day before for a command that waited across midnight.
-- A command that waited more than a day before it was published is not counted here.
SELECT (published_at AT TIME ZONE 'UTC')::date AS day, command_type, count(*) AS commands
FROM command_outbox
WHERE created_at >= ((now() AT TIME ZONE 'UTC')::date - %(days)s::int)::timestamp AT TIME ZONE 'UTC'
  AND published_at >= ((now() AT TIME ZONE 'UTC')::date - (%(days)s::int - 1))::timestamp AT TIME ZONE 'UTC'
GROUP BY 1, 2
ORDER BY 1, 2
