-- User lookup: the user's drill statuses in catalog order, and whether each drill is the user's
-- own (its audience, drills.employer_ids, is everyone or lists the user's employer: the rule of
-- scheduling/next_drill.sql).
SELECT ds.drill_slug, d.drill_name, ds.place_in_sequence, ds.started_time, ds.completed_time,
       ds.drill_instance_id::text AS drill_instance_id,
       (d.employer_ids IS NULL OR u.profile #>> '{account_info,employer_id}' = ANY (d.employer_ids)) AS own_drill
FROM drill_statuses AS ds
JOIN users AS u ON u.user_id = ds.user_id
JOIN drills AS d ON d.drill_slug = ds.drill_slug
WHERE ds.user_id = %(user_id)s::uuid
ORDER BY ds.place_in_sequence, ds.drill_slug
