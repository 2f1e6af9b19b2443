-- Dry run, per employer of the audience: the users it holds and those of them who would get a new
-- row (they lack the drill). An audience of everyone (NULL) counts every employer found, users
-- without an employer under NULL; an employer listed but without users is reported with 0 (a typo
-- shows up before the real run).
WITH counted AS (
    SELECT u.profile #>> '{account_info,employer_id}' AS employer_id,
           count(*) AS users,
           count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM drill_statuses ds
                                              WHERE ds.user_id = u.user_id AND ds.drill_slug = %(slug)s))
               AS would_insert
    FROM users u
    WHERE %(employer_ids)s::text[] IS NULL
       OR u.profile #>> '{account_info,employer_id}' = ANY (%(employer_ids)s::text[])
    GROUP BY 1
)
SELECT coalesce(listed.employer_id, c.employer_id) AS employer_id,
       coalesce(c.users, 0) AS users,
       coalesce(c.would_insert, 0) AS would_insert
FROM counted c
FULL JOIN unnest(%(employer_ids)s::text[]) AS listed(employer_id) ON listed.employer_id = c.employer_id
ORDER BY 1 NULLS LAST
