-- The rest of the locked users' trees, one round trip (run after lock_users.sql):
-- 's' rows: every drill status of the users, in catalog order per user;
-- 'i' rows: the drill instances an event can change: the valid ones (USER_VALIDATED invalidates
--           them) and any the micro-batch names (an invalid one is still updated by its events).
SELECT kind, user_id, id, drill_slug, place, text1, text2, time1, time2, time3, flag
FROM (
    SELECT 's' AS kind, user_id::text AS user_id, id::text AS id, drill_slug, place_in_sequence AS place,
           drill_instance_id::text AS text1, NULL::text AS text2,
           started_time AS time1, completed_time AS time2, NULL::timestamptz AS time3, NULL::boolean AS flag
    FROM drill_statuses
    WHERE user_id = ANY (%(user_ids)s::uuid[])
    UNION ALL
    SELECT 'i', user_id::text, drill_instance_id::text, drill_slug, NULL,
           phone_number, current_prompt_slug,
           current_prompt_start_time, current_prompt_last_response_time, completion_time, is_valid
    FROM drill_instances
    WHERE user_id = ANY (%(user_ids)s::uuid[])
      AND (is_valid OR drill_instance_id = ANY (%(instance_ids)s::uuid[]))
) AS t
ORDER BY kind DESC, user_id, place
