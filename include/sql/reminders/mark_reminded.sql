-- Record "reminded" for the given (instance, prompt) pairs, in the transaction that enqueues
-- their reminders: the promise "one reminder per (instance, prompt), ever" lives here, with the
-- instance, and survives the pruning of outbox rows.
-- Conditional: only an instance still valid, incomplete, on that prompt and not yet reminded of it
-- is marked. Under a concurrent writer PostgreSQL re-checks these conditions on the row's newest
-- version, so two overlapping runs mark (and then enqueue) a pair once. Returns the pairs marked
-- now: exactly the reminders to enqueue. Changes no indexed column (a HOT update when the page
-- has room).
UPDATE drill_instances AS di
SET reminded_prompts = array_append(di.reminded_prompts, v.prompt_slug)
FROM unnest(%(instance_ids)s::uuid[], %(prompt_slugs)s::text[]) AS v(drill_instance_id, prompt_slug)
WHERE di.drill_instance_id = v.drill_instance_id
  AND di.is_valid
  AND di.completion_time IS NULL
  AND di.current_prompt_slug = v.prompt_slug
  AND NOT coalesce(v.prompt_slug = ANY (di.reminded_prompts), false)
RETURNING di.drill_instance_id::text, v.prompt_slug
