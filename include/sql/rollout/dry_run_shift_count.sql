-- Dry run: status rows that would move one place on if the drill went in at %(place)s
-- (rows of drills at or after that place in the catalog).
SELECT count(*)
FROM drill_statuses ds
JOIN drills d ON d.drill_slug = ds.drill_slug
WHERE d.place_in_sequence >= %(place)s
