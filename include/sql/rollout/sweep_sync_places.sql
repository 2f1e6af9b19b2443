-- Final sweep, all users at once: status rows of drills after the rolled-out one that are out
-- of step with the catalog (a user created from the old catalog while it changed) take their
-- drill's catalog place. Normally updates nothing; when appending, reads nothing.
UPDATE drill_statuses ds
SET place_in_sequence = d.place_in_sequence
FROM drills d
WHERE d.place_in_sequence > %(place)s
  AND ds.drill_slug = d.drill_slug
  AND ds.place_in_sequence <> d.place_in_sequence
