-- The rest of the locked users' trees, one round trip (run after lock_users.sql):
-- 's' rows: every drill status of the users (store.py puts them in catalog order);
-- 'i' rows: the drill instances an event can change: the valid ones (USER_VALIDATED invalidates
--           them) and any the micro-batch names (an invalid one is still updated by its events).
-- Times as text (drill_progress.ingest.fold.Timestamp): written back as they are when unchanged.
-- Driven by the given user ids: one index lookup per user (a LATERAL subquery kept apart from the
-- join by OFFSET 0, so the planner cannot flatten it), whatever the table statistics say. On a
-- young or fast-growing table stale statistics made the planner hash-join whole-table scans, even
-- with parallel workers, to read the trees of a few hundred users.
SELECT kind, user_id, id, drill_slug, place, text1, text2, time1, time2, time3, flag
FROM (
    SELECT 's' AS kind, s.user_id::text AS user_id, s.id::text AS id, s.drill_slug, s.place_in_sequence AS place,
           s.drill_instance_id::text AS text1, NULL::text AS text2,
           s.started_time::text AS time1, s.completed_time::text AS time2, NULL::text AS time3, NULL::boolean AS flag
    FROM unnest(%(user_ids)s::uuid[]) AS k(user_id)
    CROSS JOIN LATERAL (SELECT * FROM drill_statuses WHERE user_id = k.user_id OFFSET 0) AS s
    UNION ALL
    SELECT 'i', d.user_id::text, d.drill_instance_id::text, d.drill_slug, NULL,
           d.phone_number, d.current_prompt_slug,
           d.current_prompt_start_time::text, d.current_prompt_last_response_time::text, d.completion_time::text,
           d.is_valid
    FROM unnest(%(user_ids)s::uuid[]) AS k(user_id)
    CROSS JOIN LATERAL (SELECT * FROM drill_instances WHERE user_id = k.user_id OFFSET 0) AS d
    WHERE d.is_valid OR d.drill_instance_id = ANY (%(instance_ids)s::uuid[])
) AS t
