-- Make room at %(place)s: every catalog drill at or after it moves one place later.
UPDATE drills
SET place_in_sequence = place_in_sequence + 1
WHERE place_in_sequence >= %(place)s
