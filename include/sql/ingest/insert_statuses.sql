-- One status row per catalog drill for each new user (ids: drill_progress.ids.status_id).
INSERT INTO drill_statuses (id, user_id, drill_instance_id, drill_slug, place_in_sequence, started_time,
                            completed_time)
SELECT *
FROM unnest(%(ids)s::uuid[], %(user_ids)s::uuid[], %(instance_ids)s::uuid[], %(slugs)s::text[],
            %(places)s::int[], %(started)s::timestamptz[], %(completed)s::timestamptz[])
