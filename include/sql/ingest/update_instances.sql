-- Changed drill instances of the micro-batch's users.
UPDATE drill_instances AS d
SET drill_slug = v.drill_slug,
    current_prompt_slug = v.current_prompt_slug,
    current_prompt_start_time = v.current_prompt_start_time,
    current_prompt_last_response_time = v.current_prompt_last_response_time,
    completion_time = v.completion_time,
    is_valid = v.is_valid
FROM unnest(%(ids)s::uuid[], %(user_ids)s::uuid[], %(slugs)s::text[], %(prompts)s::text[],
            %(prompt_starts)s::timestamptz[], %(responses)s::timestamptz[], %(completions)s::timestamptz[],
            %(valid)s::boolean[])
     AS v(drill_instance_id, user_id, drill_slug, current_prompt_slug, current_prompt_start_time,
          current_prompt_last_response_time, completion_time, is_valid)
WHERE d.drill_instance_id = v.drill_instance_id AND d.user_id = v.user_id
