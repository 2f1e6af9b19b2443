INSERT INTO drills (drill_slug, drill_name, place_in_sequence)
VALUES (%(slug)s, %(name)s, %(place)s)
