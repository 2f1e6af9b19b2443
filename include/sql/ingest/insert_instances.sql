-- Drill instances started in this micro-batch. An id that belongs to another user is an error
-- (the micro-batch is bisected and that record set aside), never a takeover.
INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug,
                             current_prompt_start_time, current_prompt_last_response_time,
                             completion_time, is_valid)
SELECT *
FROM unnest(%(ids)s::uuid[], %(user_ids)s::uuid[], %(phones)s::text[], %(slugs)s::text[],
            %(prompts)s::text[], %(prompt_starts)s::timestamptz[], %(responses)s::timestamptz[],
            %(completions)s::timestamptz[], %(valid)s::boolean[])
