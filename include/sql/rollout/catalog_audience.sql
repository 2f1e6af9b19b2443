-- A drill already in the catalog rolled out to more employers (or to everyone: NULL): its audience
-- becomes the extended one. A rollout never narrows an audience (add_drill.resolve_audience).
UPDATE drills
SET employer_ids = %(employer_ids)s::text[]
WHERE drill_slug = %(slug)s
