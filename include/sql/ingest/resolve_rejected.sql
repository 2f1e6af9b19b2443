-- Set-aside records dealt with by a re-apply: 'reapplied' or 'superseded' (their user had moved past).
UPDATE rejected_records AS r
SET resolved_at = now(), resolution = v.resolution
FROM unnest(%(ids)s::bigint[], %(resolutions)s::text[]) AS v(id, resolution)
WHERE r.id = v.id
