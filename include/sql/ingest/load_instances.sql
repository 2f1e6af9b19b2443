-- The drill instances of the given users that an event can change: the valid ones (USER_VALIDATED
-- invalidates them) and any the micro-batch names (an invalid one is still updated by its events).
SELECT user_id::text, drill_instance_id::text, drill_slug, phone_number, current_prompt_slug,
       current_prompt_start_time, current_prompt_last_response_time, completion_time, is_valid
FROM drill_instances
WHERE user_id = ANY (%(user_ids)s::uuid[])
  AND (is_valid OR drill_instance_id = ANY (%(instance_ids)s::uuid[]))
