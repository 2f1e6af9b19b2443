-- Drill instances of rebuilt users that their history does not produce (a fold bug created them).
DELETE FROM drill_instances
WHERE user_id = ANY (%(user_ids)s::uuid[]) AND NOT (drill_instance_id = ANY (%(keep)s::uuid[]))
