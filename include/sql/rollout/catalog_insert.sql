-- The new drill and its audience (employer ids as text; NULL = everyone).
INSERT INTO drills (drill_slug, drill_name, place_in_sequence, employer_ids)
VALUES (%(slug)s, %(name)s, %(place)s, %(employer_ids)s::text[])
