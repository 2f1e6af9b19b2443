-- Users due for their next drill (contract 6), one row each, in user_id order:
--   * a primary phone number (the smallest, should a user have several),
--   * last interaction at or before the cutoff, or never,
--   * at least one started drill and at least one incomplete drill,
--   * profile not opted out (profile->>'opted_out' is not 'true'; missing means not opted out),
-- with the user's next drill among the user's own drills: the first drill by place_in_sequence not
-- yet started, else the first not yet completed -- the rule of scheduling/next_drill.sql (tests
-- cross-check the two), which ignores a drill whose audience (drills.employer_ids) leaves the
-- user's employer out.
--
-- next_key orders a user's candidate statuses the way next_drill.sql does, as one "C"-collated
-- text so a plain min() picks it in a single streaming pass: '0' unstarted / '1' started, the
-- place zero-padded to 10 digits, then the slug (characters 12 onwards).
-- Drills for everyone need no look at the user: open_key is their min(). The candidates of
-- targeted drills (catalog rows with an audience; none at all unless a rollout named employers)
-- are collected per user, and only for users who have some is the employer read from the profile
-- (a lookup by primary key), so the scan of users stays index-only whatever the audiences.
-- Run after scheduling/due_users_plan.sql in the same transaction (see that file).
SELECT u.user_id::text AS user_id, p.phone_number, substr(nk.next_key, 12) AS drill_slug
FROM (
    SELECT ds.user_id,
           min(CASE WHEN ds.started_time IS NULL THEN '0' ELSE '1' END
               || to_char(ds.place_in_sequence, 'FM0000000000') || ds.drill_slug COLLATE "C")
               FILTER (WHERE (ds.started_time IS NULL OR ds.completed_time IS NULL)
                         AND ds.drill_slug <> ALL (ARRAY(SELECT drill_slug FROM drills
                                                         WHERE employer_ids IS NOT NULL))) AS open_key,
           array_agg(CASE WHEN ds.started_time IS NULL THEN '0' ELSE '1' END
                     || to_char(ds.place_in_sequence, 'FM0000000000') || ds.drill_slug)
               FILTER (WHERE (ds.started_time IS NULL OR ds.completed_time IS NULL)
                         AND ds.drill_slug = ANY (ARRAY(SELECT drill_slug FROM drills
                                                        WHERE employer_ids IS NOT NULL))) AS targeted_keys
    FROM drill_statuses ds
    GROUP BY ds.user_id
    HAVING bool_or(ds.started_time IS NOT NULL) AND bool_or(ds.completed_time IS NULL)
) pr
JOIN users u ON u.user_id = pr.user_id
JOIN (
    SELECT pn.user_id, min(pn.phone_number) AS phone_number
    FROM phone_numbers pn
    WHERE pn.is_primary
    GROUP BY pn.user_id
) p ON p.user_id = u.user_id
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN pr.targeted_keys IS NULL THEN pr.open_key
               ELSE (SELECT min(own.k COLLATE "C")
                     FROM (SELECT pr.open_key AS k
                           UNION ALL
                           SELECT t.k
                           FROM unnest(pr.targeted_keys) AS t(k)
                           JOIN drills d ON d.drill_slug = substr(t.k, 12)
                           WHERE (SELECT e.profile #>> '{account_info,employer_id}'
                                  FROM users e WHERE e.user_id = pr.user_id) = ANY (d.employer_ids)) AS own)
           END AS next_key
) nk
WHERE (u.last_interacted_time IS NULL OR u.last_interacted_time <= %(cutoff)s::timestamptz)
  AND u.profile ->> 'opted_out' IS DISTINCT FROM 'true'
  AND nk.next_key IS NOT NULL
ORDER BY u.user_id
