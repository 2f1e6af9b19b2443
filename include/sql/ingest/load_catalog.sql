SELECT drill_slug, place_in_sequence, employer_ids FROM drills ORDER BY place_in_sequence
