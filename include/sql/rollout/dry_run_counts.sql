-- Dry run: matching users, and those of them who would get a new row (they lack the drill).
SELECT count(*),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM drill_statuses ds
                                          WHERE ds.user_id = u.user_id AND ds.drill_slug = %(slug)s))
FROM users u
WHERE %(employer_ids)s::text[] IS NULL
   OR u.profile #>> '{account_info,employer_id}' = ANY (%(employer_ids)s::text[])
