-- Drill instances due a reminder at the reference time (contract §6): valid, not completed,
-- with a current prompt that started between ceil_minutes and floor_minutes before it.
-- Edges: a prompt started EXACTLY floor_minutes before the reference time is due (<=); one
-- started exactly ceil_minutes before is not (>): the window is (ref - ceil, ref - floor].
--
-- Served by the partial index drill_instances_reminder_idx (current_prompt_start_time)
-- WHERE is_valid AND completion_time IS NULL (migration 0001): a range scan over the window only.
--
-- The idempotency key of a reminder is defined here and only here: one per (instance, prompt).
-- already_enqueued: the prompt is in the instance's reminded_prompts (migration 0011), written in
-- the transaction that enqueued its reminder (reminders/mark_reminded.sql). It does not depend on
-- outbox rows, which drill_progress_maintenance prunes; the outbox's unique key stays the guard
-- against concurrent runs while its rows are there.
SELECT di.drill_instance_id::text                                              AS drill_instance_id,
       di.phone_number,
       di.current_prompt_slug                                                  AS prompt_slug,
       di.current_prompt_start_time,
       'reminder:' || di.drill_instance_id::text || ':' || di.current_prompt_slug AS idempotency_key,
       coalesce(di.current_prompt_slug = ANY (di.reminded_prompts), false)     AS already_enqueued
FROM drill_instances di
WHERE di.is_valid
  AND di.completion_time IS NULL
  AND di.current_prompt_slug IS NOT NULL
  AND di.current_prompt_start_time >  %(reference_time)s::timestamptz - make_interval(mins => %(ceil_minutes)s::int)
  AND di.current_prompt_start_time <= %(reference_time)s::timestamptz - make_interval(mins => %(floor_minutes)s::int)
ORDER BY di.current_prompt_start_time, di.drill_instance_id
