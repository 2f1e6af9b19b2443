-- Give the drill to the given users: one not-started status row each, at the drill's catalog
-- place, with the deterministic ids computed by drill_progress.ids.status_id. A user who
-- already has it is skipped (a re-run, or ingestion got there first).
INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence)
SELECT v.id, v.user_id, d.drill_slug, d.place_in_sequence
FROM unnest(%(ids)s::uuid[], %(user_ids)s::uuid[]) AS v(id, user_id)
CROSS JOIN drills d
WHERE d.drill_slug = %(slug)s
ON CONFLICT (user_id, drill_slug) DO NOTHING
