-- Every drill status of the given users, in catalog order.
SELECT user_id::text, id::text, drill_slug, place_in_sequence, drill_instance_id::text, started_time, completed_time
FROM drill_statuses
WHERE user_id = ANY (%(user_ids)s::uuid[])
ORDER BY user_id, place_in_sequence
