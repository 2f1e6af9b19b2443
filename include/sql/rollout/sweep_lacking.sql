-- Final sweep: users of the drill's audience still lacking it (created concurrently with the catalog
-- change, by a transaction that read the catalog before it was committed). Normally none.
SELECT u.user_id
FROM users u
WHERE (%(employer_ids)s::text[] IS NULL
       OR u.profile #>> '{account_info,employer_id}' = ANY (%(employer_ids)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM drill_statuses ds
                  WHERE ds.user_id = u.user_id AND ds.drill_slug = %(slug)s)
ORDER BY u.user_id
