-- User lookup: the user's drill instances, newest first, with the prompts already reminded
-- (one TRIGGER_REMINDER per instance and prompt, ever).
SELECT drill_instance_id::text AS drill_instance_id, drill_slug, current_prompt_slug, current_prompt_start_time,
       current_prompt_last_response_time, completion_time, is_valid,
       coalesce(reminded_prompts, '{}') AS reminded_prompts, created_at
FROM drill_instances
WHERE user_id = %(user_id)s::uuid
ORDER BY created_at DESC, drill_instance_id
LIMIT %(limit)s
