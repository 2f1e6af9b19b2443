-- Issue 14: targeted drills stay targeted; every scheduled START_DRILL recorded apart from the outbox.

-- 1. Each drill's audience (docs/rollout.md): the employer ids whose users get the drill, as text
--    (compared with the profile's account_info.employer_id as text, so 1 and "1" are the same
--    employer); NULL = everyone. drill_rollout's only_employer_ids sets it and a later rollout of the
--    same drill for more employers extends it; ingestion, the next-drill rule, scheduling and the
--    first drill on USER_VALIDATED read it.
ALTER TABLE drills ADD COLUMN employer_ids text[];

-- 2. Today's data carried over. Until now the catalog did not record a rollout's employer filter,
--    but the status rows show it: a rollout gives the drill to every existing user it targets (in
--    batches, then a sweep), so a drill that some user created BEFORE it (users.created_at <
--    drills.created_at) lacks was rolled out to some employers only -- those of the users created
--    before it who have it. Users created after it got it whatever their employer (the leak this
--    migration closes), so they say nothing about its audience. A drill every earlier user has (the
--    initial catalog, a rollout to all) stays for everyone. A targeted drill none of whose earlier
--    users got it is recorded for nobody ('{}'): re-run its rollout with its employers to extend it.
WITH earlier AS (
    SELECT d.drill_slug,
           bool_or(ds.user_id IS NULL) AS someone_lacks_it,
           array_agg(DISTINCT u.profile #>> '{account_info,employer_id}' ORDER BY u.profile #>> '{account_info,employer_id}')
               FILTER (WHERE ds.user_id IS NOT NULL AND u.profile #>> '{account_info,employer_id}' IS NOT NULL)
               AS employers
    FROM drills d
    JOIN users u ON u.created_at < d.created_at
    LEFT JOIN drill_statuses ds ON ds.user_id = u.user_id AND ds.drill_slug = d.drill_slug
    GROUP BY d.drill_slug
)
UPDATE drills d
SET employer_ids = coalesce(e.employers, '{}')
FROM earlier e
WHERE e.drill_slug = d.drill_slug AND e.someone_lacks_it;

--    The rows the leak created and nobody used: a targeted drill's never-started rows of users
--    outside its audience go (those users keep a gap at its place, like the users the rollout left
--    out). A row that was started or completed is history and stays; every rule reading rows ignores
--    a drill outside the user's audience, so it is never sent again.
DELETE FROM drill_statuses ds
USING drills d, users u
WHERE d.drill_slug = ds.drill_slug
  AND u.user_id = ds.user_id
  AND d.employer_ids IS NOT NULL
  AND NOT coalesce(u.profile #>> '{account_info,employer_id}' = ANY (d.employer_ids), false)
  AND ds.started_time IS NULL
  AND ds.completed_time IS NULL
  AND ds.drill_instance_id IS NULL;

-- 3. Every START_DRILL the daily scheduling enqueued, by idempotency key, written in the transaction
--    of its outbox row (INSERT ... ON CONFLICT DO NOTHING: a key already here is never enqueued
--    again). The outbox's rows may be pruned once published; these are pruned only when their day
--    can no longer send (send_date < current_date - 2, docs/scheduling.md says why that is safe).
--    No index on send_date: the daily prune reads three days of rows (about 2 million at a million
--    users) once, cheaper than maintaining an index on every insert.
CREATE TABLE sent_start_drills (
    idempotency_key text PRIMARY KEY,
    send_date       date NOT NULL
);
