-- Changed status rows of existing users.
UPDATE drill_statuses AS s
SET drill_instance_id = v.drill_instance_id, started_time = v.started_time, completed_time = v.completed_time
FROM unnest(%(ids)s::uuid[], %(instance_ids)s::uuid[], %(started)s::timestamptz[], %(completed)s::timestamptz[])
     AS v(id, drill_instance_id, started_time, completed_time)
WHERE s.id = v.id
