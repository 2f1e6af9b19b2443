-- The batch's status rows of drills after the rolled-out drill (catalog place > %(place)s) take
-- their drill's catalog place. After a shift in the catalog this moves those drills one place
-- on (each user's order is kept: the catalog's order is the users' order) and frees the new
-- drill's place; when appending, no drill is after it and nothing is read. Rows already in
-- step are not touched, so a re-run moves nothing.
-- Needs drill_statuses_user_place_unique DEFERRED in the same transaction.
UPDATE drill_statuses ds
SET place_in_sequence = d.place_in_sequence
FROM drills d
WHERE d.place_in_sequence > %(place)s
  AND ds.drill_slug = d.drill_slug
  AND ds.user_id BETWEEN %(lo)s::uuid AND %(hi)s::uuid
  AND ds.place_in_sequence <> d.place_in_sequence
