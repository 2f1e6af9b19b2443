SELECT drill_slug, place_in_sequence FROM drills ORDER BY place_in_sequence
