-- Next drill of each given user (contract §3): the first drill by place_in_sequence not yet
-- started; if all are started, the first not yet completed; if all are completed, no row.
SELECT DISTINCT ON (ds.user_id) ds.user_id, ds.drill_slug
FROM drill_statuses ds
WHERE ds.user_id = ANY (%(user_ids)s::uuid[])
  AND (ds.started_time IS NULL OR ds.completed_time IS NULL)
ORDER BY ds.user_id, (ds.started_time IS NOT NULL), ds.place_in_sequence
