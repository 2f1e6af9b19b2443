-- The catalog as the rollout sees it: the drill's row if the slug is already there (its name, place
-- and audience), and the catalog's size and last place.
SELECT d.drill_name,
       d.place_in_sequence,
       d.employer_ids,
       (SELECT count(*) FROM drills)                  AS drills,
       (SELECT max(place_in_sequence) FROM drills)    AS last_place
FROM (SELECT 1) AS one
LEFT JOIN drills d ON d.drill_slug = %(slug)s
