-- Every drill status ('s') and drill instance ('i') of the given users, as they are stored.
SELECT 's' AS kind, s.user_id::text AS user_id, s.id::text AS id, s.drill_slug, s.place_in_sequence AS place,
       s.drill_instance_id::text AS instance_id, NULL::text AS phone_number, NULL::text AS prompt,
       s.started_time AS time1, s.completed_time AS time2, NULL::timestamptz AS time3, NULL::boolean AS flag
FROM unnest(%(user_ids)s::uuid[]) AS k(user_id)
CROSS JOIN LATERAL (SELECT * FROM drill_statuses WHERE user_id = k.user_id OFFSET 0) AS s
UNION ALL
SELECT 'i', d.user_id::text, d.drill_instance_id::text, d.drill_slug, NULL, NULL, d.phone_number,
       d.current_prompt_slug, d.current_prompt_start_time, d.current_prompt_last_response_time, d.completion_time,
       d.is_valid
FROM unnest(%(user_ids)s::uuid[]) AS k(user_id)
CROSS JOIN LATERAL (SELECT * FROM drill_instances WHERE user_id = k.user_id OFFSET 0) AS d
