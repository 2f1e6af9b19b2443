-- The batch's users: whether each is in the drill's audience (employer ids as text; NULL: everyone) and
-- whether it already has the drill (a re-run, or a user created from the new catalog).
SELECT u.user_id,
       (%(employer_ids)s::text[] IS NULL
        OR coalesce(u.profile #>> '{account_info,employer_id}' = ANY (%(employer_ids)s::text[]), false)) AS matches,
       EXISTS (SELECT 1 FROM drill_statuses ds
               WHERE ds.user_id = u.user_id AND ds.drill_slug = %(slug)s) AS has_drill
FROM users u
WHERE u.user_id BETWEEN %(lo)s::uuid AND %(hi)s::uuid
