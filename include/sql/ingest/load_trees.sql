-- The parts of the locked users' trees the micro-batch's events read, one round trip (run after
-- lock_users.sql; drill_progress.ingest.fold.tree_needs says which):
-- 's' rows: every drill status of status_user_ids (store.py puts them in catalog order);
-- 'i' rows: the valid drill instances of valid_instance_user_ids (USER_VALIDATED invalidates
--           them) and the instances the events name (an invalid one is still updated by its
--           events), whoever they belong to: store.py keeps those of the locked users only, a
--           dictionary lookup. A filter here (user_id = ANY of the user ids array, or an IN) walked the
--           whole array of user ids for every instance: 0.27 ms each, 82 ms a micro-batch of 500
--           re-delivered batches. An instance may come twice.
-- Times as text (drill_progress.ingest.fold.Timestamp): written back as they are when unchanged.
-- Driven by the given ids: index lookups (LATERAL subqueries kept apart from the join by OFFSET 0,
-- so the planner cannot flatten them), whatever the table statistics say. On a young or
-- fast-growing table stale statistics made the planner hash-join whole-table scans, even with
-- parallel workers, to read the trees of a few hundred users.
WITH instances AS (
    SELECT d.*
    FROM unnest(%(valid_instance_user_ids)b::uuid[]) AS k(user_id)
    CROSS JOIN LATERAL (SELECT * FROM drill_instances WHERE user_id = k.user_id AND is_valid OFFSET 0) AS d
    UNION ALL
    SELECT d.*
    FROM unnest(%(instance_ids)b::uuid[]) AS k(drill_instance_id)
    CROSS JOIN LATERAL (SELECT * FROM drill_instances WHERE drill_instance_id = k.drill_instance_id OFFSET 0) AS d
)
SELECT 's' AS kind, s.user_id::text AS user_id, s.id::text AS id, s.drill_slug, s.place_in_sequence AS place,
       s.drill_instance_id::text AS text1, NULL::text AS text2,
       s.started_time::text AS time1, s.completed_time::text AS time2, NULL::text AS time3, NULL::boolean AS flag
FROM unnest(%(status_user_ids)b::uuid[]) AS k(user_id)
CROSS JOIN LATERAL (SELECT * FROM drill_statuses WHERE user_id = k.user_id OFFSET 0) AS s
UNION ALL
SELECT 'i', user_id::text, drill_instance_id::text, drill_slug, NULL,
       phone_number, current_prompt_slug,
       current_prompt_start_time::text, current_prompt_last_response_time::text, completion_time::text, is_valid
FROM instances
