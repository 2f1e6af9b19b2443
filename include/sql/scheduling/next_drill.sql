-- Next drill of each given user (contract §3), among the user's own drills (a drill whose audience,
-- drills.employer_ids, is everyone or lists the user's employer; drill_progress.next_drill): the
-- first by place_in_sequence not yet started; if all are started, the first not yet completed; if
-- all are completed, no row.
SELECT DISTINCT ON (ds.user_id) ds.user_id, ds.drill_slug
FROM drill_statuses ds
JOIN users u ON u.user_id = ds.user_id
JOIN drills d ON d.drill_slug = ds.drill_slug
WHERE ds.user_id = ANY (%(user_ids)s::uuid[])
  AND (ds.started_time IS NULL OR ds.completed_time IS NULL)
  AND (d.employer_ids IS NULL OR u.profile #>> '{account_info,employer_id}' = ANY (d.employer_ids))
ORDER BY ds.user_id, (ds.started_time IS NOT NULL), ds.place_in_sequence
